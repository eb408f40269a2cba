"""Benchmark of the OpenAI HTTP API against the SDK on one real node (does I/O: starts a process).

One node serves both default models and its HTTP API on a free loopback port. In one run:

- embed: one sentence through ``POST /v1/embeddings`` (base64, what the ``openai`` client asks
  for) and through the SDK's ``embed``, interleaved one by one so both see the same machine load;
  ``embed_added_p50_ms`` = HTTP p50 - SDK p50 (target <= 1 ms), and the same at p99.
- chat: a greedy 32-token streamed chat through ``POST /v1/chat/completions`` and through the
  SDK's ``chat(stream=True)``, interleaved; time to the first token (p50, p99) and to the last.
- streaming throughput: 32 concurrent streaming clients of 32 tokens each, through HTTP and
  through the SDK, rounds alternating; aggregate tokens/s of each and their ratio
  ``stream_throughput_ratio`` = HTTP / SDK (target >= 0.9).

- CPU per embed, which a shared machine perturbs far less than wall time: blocks of embeds through
  each path, alternating; the node process's CPU ms per embed (``/proc/PID/stat``) and this
  client's, for HTTP and the SDK.

Tokens are counted the same way on both sides: non-empty text deltas. The HTTP client is aiohttp
with keep-alive (what a long-lived client or UI does); the SDK talks to the node's control socket.

Usage: ``python benchmarks/api.py [--quick]``. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.agents import (
    CLI,
    percentile,
    start_node,
    test_store_root,
    wait_ready,
)
from llmnode.client.mesh import Mesh, connect

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
SENTENCE = "The Danube flows through Vienna, the capital of Austria."
STORY = [{"role": "user", "content": "Tell me a long story about a fox and a crow."}]
TOKENS = 32
CLIENTS = 32


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_ms(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, in ms (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


async def cpu_per_call(call: Callable[[], Awaitable[int]], pid: int, count: int) -> list[float]:
    """[node CPU ms, client CPU ms] per call, over ``count`` calls one after another."""
    node, client = cpu_ms(pid), time.process_time()
    for _ in range(count):
        await call()
    return [(cpu_ms(pid) - node) / count, (time.process_time() - client) * 1000.0 / count]


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def p99(values: list[float]) -> float:
    return round(percentile(values, 0.99), 3)


class Http:
    """The OpenAI API of the node, through one keep-alive aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session, self.base = session, f"http://127.0.0.1:{port}/v1"

    async def embed(self) -> int:
        body = {"model": EMBED_MODEL, "input": [SENTENCE], "encoding_format": "base64"}
        async with self.session.post(f"{self.base}/embeddings", json=body) as response:
            answer = await response.json()
        return len(base64.b64decode(answer["data"][0]["embedding"])) // 4

    async def stream(self, on_token: Callable[[], None]) -> int:
        body = {
            "model": CHAT_MODEL, "messages": STORY, "max_tokens": TOKENS, "temperature": 0,
            "stream": True,
        }  # fmt: skip
        tokens = 0
        async with self.session.post(f"{self.base}/chat/completions", json=body) as response:
            async for line in response.content:
                if not line.startswith(b"data: {"):
                    continue
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    tokens += 1
                    on_token()
        return tokens


async def sdk_stream(mesh: Mesh, on_token: Callable[[], None]) -> int:
    tokens = 0
    async for text in mesh.chat(CHAT_MODEL, STORY, stream=True, max_tokens=TOKENS, temperature=0):
        if text:
            tokens += 1
            on_token()
    return tokens


async def timed_stream(
    stream: Callable[[Callable[[], None]], Awaitable[int]],
) -> tuple[float, float, int]:
    """(ms to the first token, ms to the last, tokens) of one stream."""
    started = time.perf_counter()
    first: list[float] = []

    def on_token() -> None:
        if not first:
            first.append(time.perf_counter())

    tokens = await stream(on_token)
    ended = time.perf_counter()
    return (first[0] - started) * 1000, (ended - started) * 1000, tokens


async def concurrent_rate(stream: Callable[[Callable[[], None]], Awaitable[int]]) -> float:
    """Aggregate tokens/s of ``CLIENTS`` streams run at once."""
    started = time.perf_counter()
    counts = await asyncio.gather(*(stream(lambda: None) for _ in range(CLIENTS)))
    return sum(counts) / (time.perf_counter() - started)


async def run(quick: bool, mesh_key: str) -> dict[str, Any]:
    embeds = 100 if quick else 300
    chats = 6 if quick else 12
    rounds = 1 if quick else 2
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llmnode-bench-api-") as folder:
        process, data_dir = start_node(
            Path(folder), "api", mesh_key, None,
            ["--model", CHAT_MODEL, "--model", EMBED_MODEL, "--model-store",
             str(test_store_root()), "--http", f"127.0.0.1:{port}"],
        )  # fmt: skip
        try:
            await wait_ready(data_dir, f"model:{CHAT_MODEL}", within=300)
            await wait_ready(data_dir, f"model:{EMBED_MODEL}", within=300)
            connector = aiohttp.TCPConnector(limit=2 * CLIENTS)
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                connect(data_dir, name="bench") as mesh,
            ):
                http = Http(session, port)
                return await measure(http, mesh, process.pid, embeds, chats, rounds)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


async def measure(
    http: Http, mesh: Mesh, pid: int, embeds: int, chats: int, rounds: int
) -> dict[str, Any]:
    async def sdk_embed() -> int:
        return len((await mesh.embed(EMBED_MODEL, [SENTENCE]))[0])

    async def sdk(on_token: Callable[[], None]) -> int:
        return await sdk_stream(mesh, on_token)

    for _ in range(30):  # warm both paths: sessions, connections, caches
        assert await http.embed() == await sdk_embed()
    await timed_stream(http.stream)
    await timed_stream(sdk)
    http_embed: list[float] = []
    sdk_embed_ms: list[float] = []
    for _ in range(embeds):
        started = time.perf_counter()
        await http.embed()
        http_embed.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await sdk_embed()
        sdk_embed_ms.append((time.perf_counter() - started) * 1000)
    http_cpu: list[list[float]] = []
    sdk_cpu: list[list[float]] = []
    for _ in range(2):
        http_cpu.append(await cpu_per_call(http.embed, pid, embeds // 2))
        sdk_cpu.append(await cpu_per_call(sdk_embed, pid, embeds // 2))
    http_chat: list[tuple[float, float, int]] = []
    sdk_chat: list[tuple[float, float, int]] = []
    for _ in range(chats):
        http_chat.append(await timed_stream(http.stream))
        sdk_chat.append(await timed_stream(sdk))
    http_rates: list[float] = []
    sdk_rates: list[float] = []
    for _ in range(rounds):
        http_rates.append(await concurrent_rate(http.stream))
        sdk_rates.append(await concurrent_rate(sdk))
    http_rate, sdk_rate = statistics.mean(http_rates), statistics.mean(sdk_rates)
    return {
        "embed_added_p50_ms": round(p50(http_embed) - p50(sdk_embed_ms), 3),
        "embed_added_p99_ms": round(p99(http_embed) - p99(sdk_embed_ms), 3),
        "embed_http_p50_ms": p50(http_embed),
        "embed_http_p99_ms": p99(http_embed),
        "embed_sdk_p50_ms": p50(sdk_embed_ms),
        "embed_sdk_p99_ms": p99(sdk_embed_ms),
        "embed_node_cpu_ms_http": round(statistics.mean(row[0] for row in http_cpu), 3),
        "embed_node_cpu_ms_sdk": round(statistics.mean(row[0] for row in sdk_cpu), 3),
        "embed_client_cpu_ms_http": round(statistics.mean(row[1] for row in http_cpu), 3),
        "embed_client_cpu_ms_sdk": round(statistics.mean(row[1] for row in sdk_cpu), 3),
        "chat_ttft_p50_ms": p50([first for first, _, _ in http_chat]),
        "chat_ttft_p99_ms": p99([first for first, _, _ in http_chat]),
        "chat_ttft_sdk_p50_ms": p50([first for first, _, _ in sdk_chat]),
        "chat_ttft_sdk_p99_ms": p99([first for first, _, _ in sdk_chat]),
        "chat_total_p50_ms": p50([total for _, total, _ in http_chat]),
        "chat_total_sdk_p50_ms": p50([total for _, total, _ in sdk_chat]),
        "chat_tokens": http_chat[0][2],
        "stream_tokens_per_s_http": round(http_rate, 1),
        "stream_tokens_per_s_sdk": round(sdk_rate, 1),
        "stream_throughput_ratio": round(http_rate / sdk_rate, 4),
        "stream_clients": CLIENTS,
        "embed_added_target_ms": 1.0,
        "stream_throughput_target": 0.9,
        "samples": {"embeds": embeds, "chats": chats, "stream_rounds": rounds},
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI HTTP API vs SDK benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    arguments = parser.parse_args()
    from llmnode.agents.models import ModelStore, ensure_models

    ensure_models(ModelStore(test_store_root()), [CHAT_MODEL, EMBED_MODEL])
    mesh_key = subprocess.run(
        [*CLI, "init", "--print-mesh-key"], check=True, capture_output=True, text=True
    ).stdout.strip()
    print(json.dumps(asyncio.run(run(arguments.quick, mesh_key))))


if __name__ == "__main__":
    main()
