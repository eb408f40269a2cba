"""The HTTP half of benchmarks/chaos.py: OpenAI-API load on one node, one JSON line per request.

Run by chaos.py as a subprocess where the entry node's loopback is (inside its network namespace
when the run partitions): ``--concurrency`` loops each of streamed chats and embeddings through
the official ``openai`` client, until SIGTERM; then it lets every request in flight finish and
exits. Each request writes ``{"kind", "start", "seconds", "outcome"}`` to ``--out`` (``start`` on
the machine-wide monotonic clock, so the parent can place it in its calm and fault windows):

- ``ok``: a 200 whose stream ended with a ``finish_reason`` (chats) or whose vectors came back;
- ``failed:<type>``: a typed failure, the OpenAI error shape (an HTTP status with
  ``{"error": {...}}``, or an error event inside the stream);
- ``lost``: neither within the deadline plus 5 s, or the connection to the node itself broke
  (the entry node is never faulted, so nothing excuses that).

Usage: ``python benchmarks/chaos_http.py --url http://127.0.0.1:PORT/v1 --out FILE
[--concurrency 2] [--deadline 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any, TextIO

import openai

EMBED = "all-minilm-l6-v2"
CHAT = "smollm2-135m-instruct"


async def chat(api: openai.AsyncOpenAI, deadline: float) -> str:
    stream = await api.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=8,
        stream=True,
        extra_headers={"X-Llmnode-Timeout": str(deadline)},
    )
    finished = None
    async for chunk in stream:
        for choice in chunk.choices:
            finished = choice.finish_reason or finished
    return "ok" if finished else "lost"  # a stream that ends without a finish_reason was cut


async def embed(api: openai.AsyncOpenAI, deadline: float) -> str:
    reply = await api.embeddings.create(
        model=EMBED, input="chaos", extra_headers={"X-Llmnode-Timeout": str(deadline)}
    )
    return "ok" if reply.data and reply.data[0].embedding else "lost"


async def one(kind: str, api: openai.AsyncOpenAI, deadline: float, out: TextIO) -> None:
    start = time.monotonic()
    call = chat if kind == "http-chat" else embed
    message = ""
    try:
        outcome = await asyncio.wait_for(call(api, deadline), deadline + 5)
    except openai.APIStatusError as error:  # the OpenAI error shape, any status
        outcome, message = f"failed:http-{error.status_code}", error.message
    except openai.APIError as error:  # an error event inside a stream, or a broken connection
        body = error.body if isinstance(error.body, dict) else None
        outcome = "failed:stream-error" if body is not None else "lost"
        message = error.message
    except TimeoutError:
        outcome = "lost"
    record = {"kind": kind, "start": start, "seconds": time.monotonic() - start}
    out.write(json.dumps({**record, "outcome": outcome, "message": message[:300]}) + "\n")
    out.flush()


async def loop(
    kind: str, api: openai.AsyncOpenAI, deadline: float, out: TextIO, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await one(kind, api, deadline, out)


async def run(url: str, out_path: Path, concurrency: int, deadline: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    api = openai.AsyncOpenAI(base_url=url, api_key="-", max_retries=0, timeout=deadline + 10)
    with out_path.open("a") as out:
        loops: list[Any] = [
            loop(kind, api, deadline, out, stop)
            for kind in ("http-chat", "http-embed")
            for _ in range(concurrency)
        ]
        await asyncio.gather(*loops)
    await api.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=20.0)
    arguments = parser.parse_args()
    asyncio.run(run(arguments.url, arguments.out, arguments.concurrency, arguments.deadline))


if __name__ == "__main__":
    main()
