"""Fixtures of the HTTP tests: real `llmnode start` processes serving the real default models,
each with its OpenAI API on a free loopback port."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmnode.agents.models import ModelStore, ensure_models
from llmnode.agents.models.store import default_root
from tests.support.mesh import LocalMesh, NodeProcess, wait_for

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def store_root() -> Path:
    import os

    configured = os.environ.get("LLMNODE_TEST_STORE")
    return Path(configured) if configured else default_root()


@dataclass
class HttpNode:
    process: NodeProcess
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def get(self, path: str, key: str = "") -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def model_ids(self) -> set[str]:
        return {row["id"] for row in self.get("/v1/models")["data"]}


def start_http_node(
    mesh: LocalMesh, name: str, models: list[str], extra: list[str] | None = None
) -> HttpNode:
    port = free_port()
    args = ["--http", f"127.0.0.1:{port}", "--model-store", str(store_root())]
    for model in models:
        args += ["--model", model]
    process = mesh.add(name, [*args, *(extra or [])])
    node = HttpNode(process, port)
    wait_for(lambda: node.get("/health"), timeout=60, what=f"{name}'s HTTP server")
    return node


@pytest.fixture(scope="module")
def api_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, HttpNode]]:
    """Node "models" serves both default models; node "front" serves none: its requests cross
    the bus. Both speak HTTP."""
    ensure_models(ModelStore(store_root()), [CHAT_MODEL, EMBED_MODEL])
    mesh = LocalMesh(tmp_path_factory.mktemp("api-mesh"), probe_interval=0.2)
    try:
        nodes = {
            "models": start_http_node(mesh, "models", [CHAT_MODEL, EMBED_MODEL]),
            "front": start_http_node(mesh, "front", []),
        }
        for node in nodes.values():
            wait_for(
                lambda node=node: {CHAT_MODEL, EMBED_MODEL} <= node.model_ids(),  # type: ignore[misc]
                timeout=180,
                what="both models listed",
            )
        yield nodes
    finally:
        mesh.close()
