"""Opening a stored model for serving: verify, ONNX session, tokenizer (does I/O).

Serving imports onnxruntime and tokenizers only: never torch, transformers or optimum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmnode.agents.models.providers import create_session
from llmnode.agents.models.store import Manifest, ModelStore
from llmnode.agents.models.tokenizer import TextTokenizer
from llmnode.errors import ModelError

GENAI_CONFIG = "genai_config.json"  # written by ONNX Runtime GenAI's model builder


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified model of the store with its inference session and tokenizer."""

    manifest: Manifest
    folder: Path
    session: Any  # onnxruntime.InferenceSession
    provider: str
    tokenizer: TextTokenizer

    @property
    def memory_mb(self) -> int:
        return self.manifest.size_bytes // 1_000_000

    @property
    def shared_buffer(self) -> bool:
        """Whether the graph writes its KV cache in place (past and present share one buffer)."""
        config = self.folder / GENAI_CONFIG
        if not config.is_file():
            return False
        search = json.loads(config.read_text()).get("search", {})
        return bool(search.get("past_present_share_buffer", False))


def load_model(
    store: ModelStore, name: str, task: str, *, prefer_gpu: bool, threads: int | None
) -> LoadedModel:
    """Verify ``name`` in ``store`` (it must be a ``task`` model) and open it for inference.

    Raises ModelError when the model is of another task or its tokenizer cannot be loaded.
    """
    manifest = store.verify(name)
    if manifest.task != task:
        raise ModelError(f"model {name!r} is a {manifest.task} model, not {task}")
    folder = store.path(name)
    tokenizer = TextTokenizer(folder)
    session, provider = create_session(
        folder / manifest.model_file, prefer_gpu=prefer_gpu, threads=threads
    )
    return LoadedModel(manifest, folder, session, provider, tokenizer)
