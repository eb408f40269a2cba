"""Guards of a node process: one node per data dir, a clear line when a seed refuses our key.

Real `llmnode start` processes on 127.0.0.1 (tests/support/mesh.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmnode.bus.keyring import MeshKeyRing
from tests.support.mesh import LocalMesh, NodeProcess, llmnode_command, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    local = LocalMesh(tmp_path)
    yield local
    for node in local.nodes:
        if node.alive():
            node.stop()


def test_a_second_start_on_the_same_data_dir_fails_naming_the_running_pid(
    mesh: LocalMesh,
) -> None:
    first = mesh.add("first")
    assert first.process is not None
    second = subprocess.run(
        llmnode_command("start", *first.args),
        env=first.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"pid {first.process.pid}" in lines[0]
    # the running node keeps its control socket: the CLI still reaches it
    status = first.status()
    assert status is not None and status["address"] == first.address


def test_a_joiner_with_another_mesh_key_says_the_seed_refused_it(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    seed = mesh.add("seed")
    joiner = NodeProcess(
        "joiner",
        tmp_path / "joiner",
        [
            "--data-dir",
            str(tmp_path / "joiner"),
            "--listen",
            "tcp://127.0.0.1:0",
            "--no-beacon",
            "--log-json",
            "--join",
            seed.address.removeprefix("tcp://"),
        ],
        {**mesh.env, "LLMNODE_MESH_KEY": MeshKeyRing.key_to_text(MeshKeyRing.generate_key())},
        tmp_path / "joiner.log",
    )
    mesh.nodes.append(joiner)
    joiner.start()
    wait_for(
        lambda: "seed_refused_mesh_key" in joiner.log_text(),
        timeout=30,
        what="the joiner to report the refusal",
    )
    assert "refused our mesh key" in joiner.log_text()
    refused = (seed.status() or {}).get("counters", {}).get("rejections", {})
    assert refused.get("conn_refused_key", 0) >= 1, refused
