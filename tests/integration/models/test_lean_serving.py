"""Serving a model from the store imports onnxruntime and tokenizers, never torch/transformers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmnode.agents.models import ModelStore

SERVE = textwrap.dedent(
    """
    import asyncio, json, sys
    from llmnode.agents.models import GenerationRuntime, ModelStore
    from llmnode.schemas.inference import ChatMessage, GenerateRequest

    async def main() -> None:
        store = ModelStore(sys.argv[1])
        runtime = GenerationRuntime(store, sys.argv[2], max_batch_size=2)
        request = GenerateRequest(
            messages=[ChatMessage(role="user", content="What is the boiling point of water?")],
            max_tokens=20,
        )
        results = await asyncio.gather(runtime.generate(request), runtime.generate(request))
        runtime.close()
        status = open("/proc/self/status").read().split("\\n")
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
        heavy = sorted(m for m in ("torch", "transformers", "optimum") if m in sys.modules)
        print(json.dumps({"text": results[0].text, "heavy": heavy, "peak_rss_mb": peak_kb // 1024}))

    asyncio.run(main())
    """
)


def serve_in_a_fresh_process(store: ModelStore, name: str) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", SERVE, str(store.root), name],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    report: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def test_serving_a_tiny_model_imports_no_torch_or_transformers(
    tiny_store: tuple[ModelStore, dict[str, Path]],
) -> None:
    store, _ = tiny_store
    report = serve_in_a_fresh_process(store, "tiny-llama")
    assert report["heavy"] == []
    assert report["text"]


@pytest.mark.slow
@pytest.mark.models
def test_serving_smollm2_imports_no_torch_and_reports_its_memory(
    default_store: ModelStore,
) -> None:
    report = serve_in_a_fresh_process(default_store, "smollm2-135m-instruct")
    print(f"smollm2 serving peak RSS: {report['peak_rss_mb']} MB")
    assert report["heavy"] == []
    assert "100" in str(report["text"])
