"""Fixtures of the node-process tests: a mesh of real processes, a store with a tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mesh import LocalMesh, NodeProcess


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    """Node processes on 127.0.0.1 at 5× memberlist's speed (probe every 0.2 s)."""
    local = LocalMesh(tmp_path, probe_interval=0.2)
    try:
        yield local
    finally:
        local.close()


@pytest.fixture
def node(mesh: LocalMesh) -> NodeProcess:
    """One node process, named "solo"."""
    return mesh.add("solo")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmnode.agents.models.store import ModelStore
    from llmnode.agents.models.tiny import export_tiny

    root = tmp_path_factory.mktemp("tiny-store")
    export_tiny(ModelStore(root), "tiny-gpt2")
    return root
