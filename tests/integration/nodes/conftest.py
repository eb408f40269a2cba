"""Fixtures: a model store holding a tiny exported model, shared by the node-process tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmnode.agents.models.store import ModelStore
    from llmnode.agents.models.tiny import export_tiny

    root = tmp_path_factory.mktemp("tiny-store")
    export_tiny(ModelStore(root), "tiny-gpt2")
    return root
