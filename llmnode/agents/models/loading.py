"""Opening a stored model for serving: verify, ONNX session, tokenizer (does I/O)."""

# Heavy libraries (onnxruntime, optimum, transformers, torch, tqdm) are imported inside the
# functions that need them, so `import llmnode` stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmnode.agents.models.providers import create_session
from llmnode.agents.models.store import Manifest, ModelStore
from llmnode.errors import ModelError


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified model of the store with its inference session and tokenizer."""

    manifest: Manifest
    folder: Path
    session: Any  # onnxruntime.InferenceSession
    provider: str
    tokenizer: Any  # transformers tokenizer

    @property
    def memory_mb(self) -> int:
        return self.manifest.size_bytes // 1_000_000


def load_model(
    store: ModelStore, name: str, task: str, *, prefer_gpu: bool, threads: int | None
) -> LoadedModel:
    """Verify ``name`` in ``store`` (it must be a ``task`` model) and open it for inference.

    Raises ModelError when the model is of another task or its tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    manifest = store.verify(name)
    if manifest.task != task:
        raise ModelError(f"model {name!r} is a {manifest.task} model, not {task}")
    folder = store.path(name)
    session, provider = create_session(
        folder / manifest.model_file, prefer_gpu=prefer_gpu, threads=threads
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load the tokenizer of {name!r}: {error}") from error
    return LoadedModel(manifest, folder, session, provider, tokenizer)
