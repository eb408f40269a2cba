"""The data dir is resolved once (llmnode.config): a node started under ``XDG_DATA_HOME`` is
found by ``llmnode status`` and by ``llmnode.connect()`` with the same environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmnode
from llmnode.bus.keyring import MeshKeyRing
from tests.support.mesh import llmnode_command, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def xdg_env(tmp_path: Path) -> dict[str, str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("LLMNODE_DATA_DIR", "LLMNODE_CONFIG")
    }
    environment["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    environment["HOME"] = str(tmp_path / "home")  # the default data dir is not the one used
    environment["LLMNODE_MESH_KEY"] = MeshKeyRing.key_to_text(MeshKeyRing.generate_key())
    return environment


@pytest.fixture
def xdg_node(tmp_path: Path, xdg_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with (tmp_path / "node.log").open("wb") as log:
        process = subprocess.Popen(
            llmnode_command("start", "--listen", "tcp://127.0.0.1:0", "--no-beacon"),
            env=xdg_env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


def _status(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        llmnode_command("status", "--json"),
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_status_and_connect_find_a_node_started_under_xdg_data_home(
    xdg_node: subprocess.Popen[bytes],
    xdg_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = wait_for(
        lambda: (r := _status(xdg_env)).returncode == 0 and r,
        timeout=60,
        what="llmnode status to find the node",
    )
    node_id = json.loads(result.stdout)["node_id"]
    assert (tmp_path / "xdg" / "llmnode" / "control.token").exists()
    for variable in ("XDG_DATA_HOME", "HOME"):
        monkeypatch.setenv(variable, xdg_env[variable])
    monkeypatch.delenv("LLMNODE_DATA_DIR", raising=False)
    with llmnode.connect_sync() as mesh:
        status = mesh.status()
        assert status["node_id"] == node_id
        # what benchmarks/soak.py fits a slope to, from inside the process
        assert status["process"]["tasks"] >= 3  # at least the bus pump, membership, control
        assert status["process"]["python_blocks"] > 10_000
    assert xdg_node.poll() is None
