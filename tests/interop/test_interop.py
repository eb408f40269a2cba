"""The spec-only client (spec_client.py) against a real `llmnode start` process.

Nothing here imports llmnode: the node runs as `python -m llmnode start`, and the client knows
only docs/PROTOCOL.md. It handshakes, asks the node's embedding model for vectors, and checks
them; then a client holding another mesh key is refused.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from tests.interop.spec_client import SpecClient

MODEL = "all-minilm-l6-v2"
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    mesh_key = os.urandom(32)
    while base64.urlsafe_b64encode(mesh_key).startswith(b"-"):
        mesh_key = os.urandom(32)
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "LLMNODE_MESH_KEY": base64.urlsafe_b64encode(mesh_key).decode().rstrip("="),
        "LLMNODE_ORT_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "llmnode", "start", "--data-dir", str(tmp_path / "node"),
        "--listen", address, "--no-beacon", "--model", MODEL, "--log-json",
    ]  # fmt: skip
    log = (tmp_path / "node.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield address, mesh_key
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        assert process.returncode is not None


def test_a_client_from_the_spec_alone_gets_embeddings_from_a_live_node(
    node: tuple[str, bytes],
) -> None:
    address, mesh_key = node
    client = SpecClient(mesh_key)
    try:
        node_id = client.handshake(address, timeout=60)
        assert len(node_id) == 32
        payload = msgpack.packb({"texts": ["hello world", "a mesh of nodes"]})
        replies = []
        for _ in range(60):  # the model may still be loading: Refuse unknown_agent until then
            replies = client.request(f"model:{MODEL}", "embed", payload, timeout=60)
            if replies[-1]["type"] != "Refuse" or replies[-1]["code"] != "unknown_agent":
                break
        final = replies[-1]
        assert final["type"] == "Result", replies
        assert any(reply["type"] == "Accept" for reply in replies)
        result = msgpack.unpackb(final["data"])
        dim = result["dim"]
        assert dim == 384
        vectors = struct.unpack(f"<{2 * dim}f", result["data"])
        first, second = vectors[:dim], vectors[dim:]
        assert abs(sum(v * v for v in first) - 1.0) < 1e-3  # the model normalises
        assert first != second
    finally:
        client.close()


def test_a_client_with_another_mesh_key_gets_no_answer(node: tuple[str, bytes]) -> None:
    address, _ = node
    outsider = SpecClient(os.urandom(32))
    try:
        with pytest.raises(TimeoutError):
            outsider.handshake(address, timeout=3)
    finally:
        outsider.close()


def test_the_client_uses_nothing_of_llmnode() -> None:
    source = Path(__file__).with_name("spec_client.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports, "no imports found"
    assert not [line for line in imports if "llmnode" in line], imports
