"""Time to restore a replica after its node dies, measured on real node processes (does I/O).

Part of ``benchmarks/placement.py`` (its ``restore_s``); run alone for that figure only:
``python benchmarks/placement_restore.py [--probe-interval 1.0]``, which prints one JSON object
as its last line.

Three ``llmnode start`` processes on 127.0.0.1 (tests/support/mesh.py), laid out as the
real-process placement test does: ``a`` holds smollm2-135m-instruct in its store, ``b`` has the
most memory for models, ``c`` the next most and is the entry node (the SDK talks to it, and it is
never killed). One slot per replica. ``models deploy smollm2-135m-instruct --replicas 2`` puts
replicas on a and b (b fetches the model from a over the mesh). Then, with two chat loops
running through c (so a replica that appears is used at once), ``kill -9`` a: the mesh
detects the death, places the lost replica on c, c fetches the model from b, loads and warms it,
advertises it, and serves requests.

``restore_s`` is from the kill until both hold: c's view shows the model served by two nodes
(b and c), and c has served a chat request itself (c's own ``served`` counter rose). The
breakdown comes from c's JSON log, whose timestamps share the clock of the kill:
``detection`` (kill to the first ``member_suspected`` or ``member_dead`` of a: placement counts
only alive nodes), ``settle`` (to ``placement_fetching``: the loop's
wait before a costly copy, plus the next placement round), ``transfer`` (to ``model_pulled``,
paced at the node's default 100 MB/s), ``load`` (to ``model_loaded``: session, warm-up), and
``serve`` (to the end: advertised by gossip, then chosen for a request). Membership runs at
its default timings unless ``--probe-interval`` scales them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))

from llmnode.agents.models.store import ModelStore
from llmnode.client.mesh import Mesh, connect
from llmnode.errors import MeshError
from llmnode.schemas.config import NodeConfig
from tests.support.mesh import LocalMesh, NodeProcess, wait_for

SMOLLM = "smollm2-135m-instruct"
RAM_MB = {"a": 3000, "b": 9000, "c": 5000}  # memory for models: a 1976, b 7976, c 3976 MiB
MEMBER_EVENTS = ("member_suspected", "member_dead")
PHASES = ("placement_fetching", "model_pulled", "model_loaded")
RESTORE_TIMEOUT_S = 300.0


class RestoreFailed(AssertionError):
    """The replica was not restored in time (the message says how far it got)."""


def _linked_copy(source: Path, target: Path) -> None:
    """``target`` as a copy of the store folder ``source``: hard links where the file system
    allows (no 500 MB copy on a shared disk), else a real copy."""
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def _start(mesh: LocalMesh, name: str, store: Path) -> NodeProcess:
    config = mesh.root / f"{name}.toml"
    config.write_text(f"model_slots = 1\n[capacity]\nram_mb = {RAM_MB[name]}\n")
    store.mkdir(parents=True, exist_ok=True)
    return mesh.add(name, ["--model-store", str(store), "--config", str(config), "--http", "off"])


def _log_times(node: NodeProcess, model: str, peer: str, after: float) -> dict[str, float]:
    """Unix times of the first event of each phase in ``node``'s JSON log after ``after``."""
    found: dict[str, float] = {}
    for line in node.log_text().splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
            at = datetime.fromisoformat(event["timestamp"]).timestamp()
        except (ValueError, KeyError):
            continue
        name = event.get("event", "")
        if at < after or name not in (*MEMBER_EVENTS, *PHASES) or name in found:
            continue
        if name in MEMBER_EVENTS and not peer.startswith(event.get("peer", "?")):
            continue
        if name in PHASES and event.get("model") != model:
            continue
        found[name] = at
        if name == "model_pulled":
            stats = event.get("stats", {})
            found["bytes_fetched"] = float(stats.get("bytes_fetched", 0))
            found["bytes_resumed"] = float(stats.get("bytes_resumed", 0))
    return found


def _serving(peers: list[dict[str, Any]], model: str) -> set[str]:
    return {
        str(row["name"])
        for row in peers
        if row["state"] == "alive" and f"model:{model}" in json.dumps(row.get("services", []))
    }


async def _chats(
    mesh: Mesh, model: str, stop: asyncio.Event, warm: asyncio.Event, outcomes: list[bool]
) -> None:
    """Short chats back to back until ``stop``; ``warm`` is set after a few were served."""
    while not stop.is_set():
        try:
            await mesh.chat(model, "Say hi.", max_tokens=2, timeout=60)
            outcomes.append(True)
        except MeshError:
            outcomes.append(False)
        if sum(outcomes) >= 4:
            warm.set()
        await asyncio.sleep(0.05)


async def _watch(entry: NodeProcess, victim: NodeProcess, model: str) -> dict[str, Any]:
    """Kill ``victim`` with traffic flowing through ``entry``; wait for the repair."""
    async with connect(entry.data_dir) as mesh:
        stop, warm, outcomes = asyncio.Event(), asyncio.Event(), list[bool]()
        traffic = [asyncio.create_task(_chats(mesh, model, stop, warm, outcomes)) for _ in range(2)]
        try:
            await asyncio.wait_for(warm.wait(), 300)  # the mesh serves before anything goes wrong
            served_before = (await mesh.status())["counters"]["requests"]["served"]
            failed_before = outcomes.count(False)
            killed_at = time.time()
            victim.kill()
            replicas_at = served_at = 0.0
            while not (replicas_at and served_at):
                if time.time() - killed_at > RESTORE_TIMEOUT_S:
                    rows = await mesh.deployments()
                    raise RestoreFailed(
                        f"not restored within {RESTORE_TIMEOUT_S:.0f} s: replicas "
                        f"{'back' if replicas_at else 'not back'}, new replica "
                        f"{'served' if served_at else 'served nothing'}; {rows}"
                    )
                with contextlib.suppress(MeshError):
                    now = time.time()
                    if not replicas_at and _serving(await mesh.peers(), model) == {"b", "c"}:
                        replicas_at = now
                    status = await mesh.status()
                    if not served_at and status["counters"]["requests"]["served"] > served_before:
                        served_at = now
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            for task in traffic:
                await task
    return {
        "killed_at": killed_at,
        "replicas_at": replicas_at,
        "served_at": served_at,
        "failed": outcomes.count(False) - failed_before,
        "served": sum(outcomes),
    }


@contextlib.contextmanager
def _local_mesh(probe_interval: float) -> Iterator[LocalMesh]:
    with tempfile.TemporaryDirectory(prefix="restore-") as scratch:
        mesh = LocalMesh(Path(scratch), probe_interval=probe_interval)
        try:
            yield mesh
        finally:
            mesh.close()


def measure_restore(probe_interval: float = 1.0, model: str = SMOLLM) -> dict[str, Any]:
    """The measured restore (see the module docstring): the figures, rounded."""
    source = ModelStore()
    if not source.exists(model):
        return {"restore_s": None, "restore_skipped": f"{model} is not in {source.root}"}
    with _local_mesh(probe_interval) as mesh:
        root = mesh.root
        (root / "store-a").mkdir()
        _linked_copy(source.path(model), root / "store-a" / model)
        a = _start(mesh, "a", root / "store-a")
        _start(mesh, "b", root / "store-b")
        c = _start(mesh, "c", root / "store-c")
        mesh.wait_converged(timeout=120)
        deployed_at = time.time()
        result = c.run_cli("models", "deploy", model, "--replicas", "2", timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"deploy failed: {result.stderr.strip()}")
        wait_for(
            lambda: _serving(c.peers(), model) == {"a", "b"},
            timeout=600,
            what="replicas on a and b",
            interval=0.5,
        )
        deploy_s = time.time() - deployed_at
        try:
            watched = asyncio.run(_watch(c, a, model))
        except RestoreFailed:
            for node in mesh.nodes:  # what the nodes said, before their folder goes
                events = [line for line in node.log_text().splitlines() if '"error"' in line]
                print(f"--- {node.name}: {len(events)} lines with an error", *events[-5:], sep="\n")
            raise
        phases = _log_times(c, model, a.node_id, watched["killed_at"])
    killed_at = watched["killed_at"]
    end = max(watched["replicas_at"], watched["served_at"])
    # Placement stops counting a node once it is suspected (it must be alive to hold a replica).
    detected = min((phases[name] for name in MEMBER_EVENTS if name in phases), default=None)
    marks = [killed_at, detected, *(phases.get(name) for name in PHASES), end]
    steps: dict[str, float | None] = {}
    for name, start, stop in zip(
        ("detection", "settle", "transfer", "load", "serve"), marks[:-1], marks[1:], strict=True
    ):
        steps[f"restore_{name}_s"] = (
            round(stop - start, 2) if start is not None and stop is not None else None
        )
    return {
        "restore_s": round(end - killed_at, 2),
        "restore_replicas_back_s": round(watched["replicas_at"] - killed_at, 2),
        "restore_first_served_s": round(watched["served_at"] - killed_at, 2),
        **steps,
        **{
            f"restore_{name}_s": round(phases[name] - killed_at, 2)
            for name in MEMBER_EVENTS
            if name in phases
        },
        "restore_bytes_fetched": int(phases.get("bytes_fetched", 0)),
        # from a partial copy the node had begun before (e.g. while records spread at deploy)
        "restore_bytes_resumed": int(phases.get("bytes_resumed", 0)),
        "restore_transfer_pace_mb_s": NodeConfig().model_transfer_mb_s,
        "restore_probe_interval_s": probe_interval,
        "restore_failed_requests": watched["failed"],
        "restore_first_deploy_s": round(deploy_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe-interval", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(measure_restore(args.probe_interval)))


if __name__ == "__main__":
    main()
