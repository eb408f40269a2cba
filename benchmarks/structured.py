"""Structured-output and prefix-cache benchmark on SmolLM2-135M (does I/O: loads the model).

- ``constrained_slowdown``: an unconstrained greedy stream decodes beside a JSON-Schema
  constrained stream, and (the baseline, interleaved in the same run) beside an unconstrained
  stream of the same length; the figure is the unconstrained stream's tokens/s drop,
  ``1 - with_constrained / with_plain`` (target <= 0.10). ``unconstrained_tokens_identical``
  says its tokens were the same as when it ran alone.
- ``prefix_ttft_ratio``: time to first token of chats sharing a ~400-token system prompt, with
  the prefix cache against without it (two runtimes, requests interleaved; target <= 0.3).
  ``prefix_cache_bound_respected``: a cache of ``--bound-mb`` fed many different long prompts
  never held more than its bound.

Prints one JSON object as its last line (``benchmarks/inference.py`` includes these keys).

    python benchmarks/structured.py [--store PATH] [--tokens 96] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

CHAT = "smollm2-135m-instruct"
SYSTEM = "You are the librarian of a small town. " + " ".join(
    f"Rule {n}: when asked about topic number {n}, cite the shelf, the book and the page, "
    "and answer in one sentence."
    for n in range(1, 16)
)  # about 400 tokens with the template
QUESTIONS = [
    "Where are the books about rivers?", "Who wrote the town history?",
    "Is the library open on Sunday?", "How do I borrow a map?",
    "Where can I read newspapers?", "Do you have books on mountains?",
    "Can children borrow comics?", "Where is the poetry shelf?",
]  # fmt: skip
LIST_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "names": {
                "type": "array",
                "items": {"type": "string", "maxLength": 12},
                "minItems": 200,
            }
        },
        "required": ["names"],
    }
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def timed_stream(runtime: Any, request: Any) -> tuple[list[float], list[int]]:
    """Arrival times of each chunk and the tokens of the stream."""
    times: list[float] = []
    tokens: list[int] = []
    async with runtime.stream(request) as stream:
        async for chunk in stream:
            times.append(time.perf_counter())
            tokens.extend(chunk.token_ids)
    return times, tokens


def rate(times: list[float], tokens: list[int]) -> float:
    return (len(tokens) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


async def constrained_figures(runtime: Any, tokens: int, rounds: int) -> dict[str, Any]:
    from llmnode.schemas.inference import ChatMessage, Constraint, GenerateRequest

    def chat(text: str, constraint: Constraint | None = None) -> GenerateRequest:
        return GenerateRequest(
            messages=[ChatMessage(role="user", content=text)],
            max_tokens=tokens,
            ignore_eos=True,
            constraint=constraint,
        )

    measured = chat("Write a long story about a dragon who learns to fly.")
    plain_mate = chat("Explain how a peer-to-peer network works, in detail.")
    constrained_mate = chat(
        "List as many first names as you can, as JSON.",
        Constraint(kind="json_schema", source=LIST_SCHEMA),
    )
    _, alone = await timed_stream(runtime, measured)  # also warms the grammar tokenizer
    await runtime.generate(constrained_mate)
    beside_plain: list[float] = []
    beside_constrained: list[float] = []
    identical = True
    mate_tokens = []
    for _ in range(rounds):
        for mate, rates in ((plain_mate, beside_plain), (constrained_mate, beside_constrained)):
            (times, got), mate_result = await asyncio.gather(
                timed_stream(runtime, measured), runtime.generate(mate)
            )
            identical = identical and got == alone
            rates.append(rate(times, got))
            if mate is constrained_mate:
                mate_tokens.append(mate_result.completion_tokens)
    with_plain = statistics.median(beside_plain)
    with_constrained = statistics.median(beside_constrained)
    return {
        "constrained_slowdown": round(1 - with_constrained / with_plain, 3),
        "unconstrained_tokens_per_s_beside_plain": round(with_plain, 2),
        "unconstrained_tokens_per_s_beside_constrained": round(with_constrained, 2),
        "unconstrained_tokens_identical": identical,
        "constrained_mate_tokens": min(mate_tokens),
    }


async def ttft_ms(runtime: Any, question: str) -> float:
    from llmnode.schemas.inference import ChatMessage, GenerateRequest

    request = GenerateRequest(
        messages=[
            ChatMessage(role="system", content=SYSTEM),
            ChatMessage(role="user", content=question),
        ],
        max_tokens=1,
    )
    started = time.perf_counter()
    async with runtime.stream(request) as stream:
        async for _ in stream:
            break
    return (time.perf_counter() - started) * 1000


async def prefix_figures(store: Any, threads: int, bound_mb: float) -> dict[str, Any]:
    from llmnode.agents.models import GenerationRuntime
    from llmnode.schemas.inference import GenerateRequest

    cached = GenerationRuntime(store, CHAT, max_batch_size=2, threads=threads)
    plain = GenerationRuntime(store, CHAT, max_batch_size=2, threads=threads, prefix_cache_mb=0)
    try:
        system_tokens = len(cached.tokenizer.encode(SYSTEM))
        await ttft_ms(cached, "warm-up")  # the first request fills the cache
        await ttft_ms(plain, "warm-up")
        with_cache, without = [], []
        for question in QUESTIONS:  # interleaved, so both see the same machine
            with_cache.append(await ttft_ms(cached, question))
            without.append(await ttft_ms(plain, question))
    finally:
        cached.close()
        plain.close()
    small = GenerationRuntime(
        store, CHAT, max_batch_size=2, threads=threads, prefix_cache_mb=bound_mb
    )
    try:
        cache = small.prefix_cache
        assert cache is not None
        largest = 0
        for n in range(12):
            prompt = f"Document {n}. " + "A fox ran over the hill and back again. " * 40
            await small.generate(GenerateRequest(prompt=prompt, max_tokens=1))
            largest = max(largest, cache.bytes)
    finally:
        small.close()
    return {
        "prefix_ttft_ratio": round(statistics.median(with_cache) / statistics.median(without), 3),
        "prefix_ttft_ms_cached": round(statistics.median(with_cache), 2),
        "prefix_ttft_ms_uncached": round(statistics.median(without), 2),
        "prefix_system_prompt_tokens": system_tokens,
        "prefix_cache_bound_bytes": cache.max_bytes,
        "prefix_cache_largest_bytes": largest,
        "prefix_cache_bound_respected": largest <= cache.max_bytes,
    }


async def structured_figures(
    store_root: str | None, tokens: int, rounds: int, threads: int, bound_mb: float = 8.0
) -> dict[str, Any]:
    from llmnode.agents.models import GenerationRuntime, ModelStore

    store = ModelStore(store_root)
    figures: dict[str, Any] = {"threads": threads, "cpu_count": os.cpu_count()}
    say("constrained beside unconstrained")
    runtime = GenerationRuntime(store, CHAT, max_batch_size=2, threads=threads)
    try:
        figures.update(await constrained_figures(runtime, tokens, rounds))
    finally:
        runtime.close()
    say("prefix cache")
    figures.update(await prefix_figures(store, threads, bound_mb))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default=None)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bound-mb", type=float, default=8.0)
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("LLMNODE_ORT_THREADS", "2"))
    )
    arguments = parser.parse_args()
    figures = asyncio.run(
        structured_figures(
            arguments.store, arguments.tokens, arguments.rounds, arguments.threads,
            arguments.bound_mb,
        )
    )  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
