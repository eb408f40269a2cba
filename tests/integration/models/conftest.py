"""Fixtures for the model runtime: tiny random models (per session) and the real defaults.

The real defaults are pulled once into a persistent store (``$LLMNODE_TEST_STORE`` or the
default store ``~/.cache/llmnode/models``, where scripts/install pulls them) so reruns are fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmnode.agents.models import (
    GenerationRuntime,
    ModelStore,
    build_tiny_causal_lm,
    ensure_models,
)
from llmnode.agents.models.export import export
from llmnode.agents.models.store import default_root


def test_store_root() -> Path:
    configured = os.environ.get("LLMNODE_TEST_STORE")
    # The default store: scripts/install has already pulled the default models into it.
    return Path(configured) if configured else default_root()


FAST_PRECISIONS = ("fused", "int8", "int4")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelStore, dict[str, Path]]:
    """A store holding tiny-gpt2 and tiny-llama (optimum's export), tiny-llama-fused,
    tiny-llama-int8 and tiny-llama-int4 (GenAI's builder), and the transformers folders they
    came from."""
    root = tmp_path_factory.mktemp("tiny-models")
    store = ModelStore(root / "store")
    sources: dict[str, Path] = {}
    for arch in ("gpt2", "llama"):
        sources[arch] = build_tiny_causal_lm(root / "sources" / arch, arch=arch, seed=0)
        export(
            str(sources[arch]), store, task="text-generation", name=f"tiny-{arch}", progress=False
        )
    # The fast path: ONNX Runtime GenAI's fused graph of the same llama, in fp32, int8 and int4.
    for precision in FAST_PRECISIONS:
        export(
            str(sources["llama"]),
            store,
            task="text-generation",
            name=f"tiny-llama-{precision}",
            quantize=precision,
            progress=False,
        )
    return store, sources


@pytest.fixture(scope="session")
def tiny_runtimes(
    tiny_store: tuple[ModelStore, dict[str, Path]],
) -> Iterator[dict[str, GenerationRuntime]]:
    store, _ = tiny_store
    runtimes = {
        arch: GenerationRuntime(store, f"tiny-{arch}", max_batch_size=4)
        for arch in ("gpt2", "llama", *(f"llama-{p}" for p in FAST_PRECISIONS))
    }
    yield runtimes
    for runtime in runtimes.values():
        runtime.close()


@pytest.fixture(scope="session")
def default_store() -> ModelStore:
    """The real default models, pulled once (about a minute the first time)."""
    store = ModelStore(test_store_root())
    ensure_models(store, ["smollm2-135m-instruct", "all-minilm-l6-v2"])
    return store
