"""The CLI's one-line errors and the control socket's authentication, against a real node."""

from __future__ import annotations

import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

from llmnode.nodes.control.wire import frame
from tests.support.mesh import NodeProcess, wait_for


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmnode", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_status_without_a_node_is_one_readable_line(tmp_path: Path) -> None:
    result = _cli("status", "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: no llmnode node is running")
    assert len(result.stderr.strip().splitlines()) == 1


def test_start_without_a_mesh_key_is_one_readable_line(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "LLMNODE_MESH_KEY"}
    result = _cli("start", "--data-dir", str(tmp_path), "--no-beacon", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no mesh key" in result.stderr


def test_bad_mesh_key_and_bad_listen_address_are_one_line(tmp_path: Path) -> None:
    bad_key = _cli("init", "--data-dir", str(tmp_path / "a"), "--mesh-key", "not-a-key")
    assert bad_key.returncode != 0 and "Traceback" not in bad_key.stderr
    good = _cli("init", "--data-dir", str(tmp_path / "b"))
    assert good.returncode == 0, good.stderr
    bad_listen = _cli(
        "start", "--data-dir", str(tmp_path / "b"), "--listen", "nonsense", "--no-beacon"
    )
    assert bad_listen.returncode != 0
    assert "Traceback" not in bad_listen.stderr
    assert bad_listen.stderr.strip().startswith("error:")


def test_init_writes_secret_files_0600(tmp_path: Path) -> None:
    assert _cli("init", "--data-dir", str(tmp_path)).returncode == 0
    for name in ("identity.key", "mesh.keys"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))


def _exchange(path: Path, data: bytes) -> bytes:
    """Connect to the control socket, send raw ``data``, return what comes back before it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(data)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        return received


def test_control_socket_is_0600_and_refuses_a_wrong_token(node: NodeProcess) -> None:
    socket_path = node.data_dir / "control.sock"
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((node.data_dir / "control.token").stat().st_mode) == 0o600
    status_request = frame(b"\x82\xa4type\xa9CtlStatus\xa2id\x01")

    # A wrong token: the connection is closed unanswered, even with a valid request after it.
    assert _exchange(socket_path, frame(b"wrong-token") + status_request) == b""
    # Garbage framing (an empty frame, then an oversized one): closed unanswered.
    assert _exchange(socket_path, struct.pack("!I", 0)) == b""
    assert _exchange(socket_path, struct.pack("!I", 1 << 30) + b"x") == b""
    # The right token and then garbage: the garbage is counted and skipped, the request answered.
    token = (node.data_dir / "control.token").read_text().strip().encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(socket_path))
        client.sendall(frame(token) + frame(b"\xc1 not msgpack") + status_request)
        header = client.recv(4, socket.MSG_WAITALL)
        (length,) = struct.unpack("!I", header)
        answer = client.recv(length, socket.MSG_WAITALL)
    assert b"CtlOk" in answer

    status = wait_for(node.status, timeout=10, what="status")
    rejections = status["counters"]["rejections"]
    assert rejections.get("bad_token") == 1
    assert rejections.get("bad_framing") == 1
    assert rejections.get("too_large") == 1
    assert sum(rejections.values()) == 4  # and the undecodable message
    assert node.alive()
