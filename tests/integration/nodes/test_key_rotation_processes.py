"""Rotating the mesh key across running node processes with `llmnode keys`, under traffic."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from llmnode.bus.keyring import MeshKeyRing
from llmnode.client.connection import ControlClient
from llmnode.schemas.control import CtlRequest
from llmnode.schemas.inference import GenerateRequest
from tests.support.mesh import LocalMesh, NodeProcess, wait_for

pytestmark = pytest.mark.slow
MODEL = "model:tiny-gpt2"


def _keys(node: NodeProcess, *args: str) -> str:
    result = node.run_cli("keys", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_rotating_the_mesh_key_on_running_nodes_loses_no_request(
    mesh: LocalMesh, tiny_store: Path
) -> None:
    entry = mesh.add("entry")
    server = mesh.add("server", ["--model", "tiny-gpt2", "--model-store", str(tiny_store)])
    mesh.wait_converged()
    wait_for(lambda: any(MODEL in r["load"] for r in entry.peers()), timeout=30, what="model")
    old, new = mesh.key, MeshKeyRing.key_to_text(MeshKeyRing.generate_key())
    outcomes: list[object] = []
    stop = threading.Event()

    async def traffic() -> None:
        async with ControlClient.from_data_dir(entry.data_dir) as client:
            while not stop.is_set():
                request = CtlRequest(
                    id=client.next_id(),
                    service=MODEL,
                    method="generate",
                    timeout=10,
                    payload=msgspec.msgpack.encode(GenerateRequest(prompt="hi", max_tokens=4)),
                )
                try:
                    await client.call(request)
                    outcomes.append("ok")
                except Exception as error:
                    outcomes.append(error)
                await asyncio.sleep(0.02)

    runner = threading.Thread(target=lambda: asyncio.run(traffic()))
    runner.start()
    try:
        for step in (("add", new), ("use", new), ("remove", old)):
            for node in (server, entry):
                assert "the running node uses it now" in _keys(node, *step)
            wait_for(lambda: len(outcomes) > 10, timeout=10, what="traffic")
            outcomes_before = len(outcomes)
            wait_for(lambda n=outcomes_before: len(outcomes) > n + 10, timeout=10, what="traffic")
    finally:
        stop.set()
        runner.join(30)
    errors = [o for o in outcomes if o != "ok"]
    assert errors == []
    assert len(outcomes) > 50
    assert old.split(",")[0] not in _keys(entry, "list")  # ids only; and the old key is gone:
    assert len(_keys(entry, "list").strip().splitlines()) == 1
    # Both nodes still see each other alive under the new key alone.
    assert entry.states() == {"entry": "alive", "server": "alive"}
    # A node still holding only the retired key is not admitted: its connections are refused
    # (bus admission, "conn_refused_key") and counted.
    outsider = mesh.add("outsider")  # LocalMesh starts it with the old key

    def refused(node: Any) -> int:
        return int(
            (node.status() or {})
            .get("counters", {})
            .get("rejections", {})
            .get("conn_refused_key", 0)
        )

    wait_for(
        lambda: refused(entry) + refused(server) > 0,
        timeout=15,
        what="the old key's connections to be refused",
    )
    assert "outsider" not in {n for n, s in entry.states().items() if s == "alive"}
    assert (outsider.status() or {}).get("members_alive") == 1
