"""Model runtime: ONNX export, the model store, and batched, streaming inference (no I/O here).

Names are loaded on first use, and heavy libraries (onnxruntime, optimum, transformers, torch)
only inside functions, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmnode.agents.models.embedding import EmbeddingRuntime
    from llmnode.agents.models.export import export
    from llmnode.agents.models.generation import GenerationRuntime
    from llmnode.agents.models.providers import create_session
    from llmnode.agents.models.sources import DEFAULTS, ensure_models, pull
    from llmnode.agents.models.store import FileEntry, Manifest, ModelStore
    from llmnode.agents.models.tiny import build_tiny_causal_lm, export_tiny

_WHERE = {
    "EmbeddingRuntime": "embedding",
    "export": "export",
    "GenerationRuntime": "generation",
    "create_session": "providers",
    "DEFAULTS": "sources",
    "ensure_models": "sources",
    "pull": "sources",
    "FileEntry": "store",
    "Manifest": "store",
    "ModelStore": "store",
    "build_tiny_causal_lm": "tiny",
    "export_tiny": "tiny",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DEFAULTS",
    "EmbeddingRuntime",
    "FileEntry",
    "GenerationRuntime",
    "Manifest",
    "ModelStore",
    "build_tiny_causal_lm",
    "create_session",
    "ensure_models",
    "export",
    "export_tiny",
    "pull",
]
