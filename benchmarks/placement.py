"""Benchmark of model placement and peer-to-peer model transfer (does I/O).

One run measures:

- packing_ratio: replicas ``place`` puts on random small meshes (2-5 nodes, 1-4 models, memory
  tight), over the exhaustive optimum by the same objective (most models served, then most
  replicas), summed over instances; beside it, replicas over the most any assignment can place
  when serving every model does not count (``replicas_vs_most_possible``);
- moves_ratio: replicas loaded anew by ``place`` per membership change (a node dies or joins,
  on meshes of 12 nodes and 8 models; the loaded models each node gossips are the only memory
  of the previous assignment), over the minimum that change needs (to place as many replicas,
  at least placed - surviving replicas must be loaded); placing while ignoring what is loaded
  is shown beside it;
- transfer_ratio: throughput of a model copied by ``ModelTransfer`` between two processes on
  127.0.0.1 (Bus over zmq: every chunk sealed, sha256 per file, written to a store), over raw
  pyzmq moving the same file with the same chunks, window and socket layout (ROUTER inbox +
  DEALER to the peer, zmq.asyncio), reading and writing the same files, no crypto and no
  hashing. Interleaved (raw, mesh, raw, mesh), best of each; pacing is off for both;
- restore_s: MEASURED time to restore a replica after its node dies, on three real node
  processes at default timings: ``kill -9`` of one of smollm2-135m-instruct's two replicas until
  the replica count is back to 2 and the new replica has served a request, with its breakdown
  (detection, settle, transfer, load, serve) from the node's log (``placement_restore.py``);
- restore_simulated_s: the estimate this benchmark gave before, for comparison: the membership
  detection bound at default timings for 3 members (``detection_bound``), plus the transfer of
  smollm2-135m-instruct at the unpaced throughput measured above, plus loading it (an ONNX
  Runtime session measured here when the model is in the store, else estimated at 1 GB/s).

Prints one JSON object as its last line. Usage: ``python benchmarks/placement.py [--quick]
[--probe-interval S]``; the holder side runs as a child process of this script (``--serve
raw|mesh``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from llmnode.agents.models.partial import read_range
from llmnode.agents.models.store import ModelStore
from llmnode.agents.models.transfer import CHUNK_BYTES, WINDOW, ModelTransfer
from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.log import configure
from llmnode.nodes.membership.config import MembershipConfig
from llmnode.nodes.membership.simulation import detection_bound
from llmnode.nodes.placement.assign import Demand, NodeCapacity, moves, place
from llmnode.nodes.placement.optimum import optimum
from llmnode.schemas.base import MAX_FRAME_BYTES

MODEL = "bench-model"
CHUNK = int(os.environ.get("BENCH_CHUNK_BYTES", CHUNK_BYTES))  # the same for both sides
SMOLLM = "smollm2-135m-instruct"
ROUND_TIMEOUT_S = 120.0  # one transfer round; a 128 MB one takes seconds

# -- placement quality ----------------------------------------------------------------------


def random_mesh(
    rng: random.Random, nodes: int, models: int
) -> tuple[list[NodeCapacity], list[Demand]]:
    names = [f"model{i}" for i in range(models)]
    demands = [
        Demand(model=name, replicas=rng.randint(1, 3), footprint_mb=rng.randint(1, 8) * 500)
        for name in names
    ]
    mesh = [
        NodeCapacity(
            node=f"node{i:03d}",
            memory_mb=rng.randint(0, 12) * 500,
            stored=frozenset(n for n in names if rng.random() < 0.3),
        )
        for i in range(nodes)
    ]
    return mesh, demands


def packing(instances: int) -> dict[str, Any]:
    rng = random.Random(17)
    placed = served = best_served = best_placed_ = most_replicas = 0
    for _ in range(instances):
        mesh, demands = random_mesh(rng, rng.randint(2, 5), rng.randint(1, 4))
        result = place(mesh, demands)
        placed += sum(len(nodes) for nodes in result.replicas.values())
        served += len(result.replicas)
        best = optimum(mesh, demands)
        best_served += best[0]
        best_placed_ += best[1]
        most_replicas += optimum(mesh, demands, served_first=False)[1]
    return {
        "packing_ratio": placed / best_placed_ if best_placed_ else 1.0,
        "served_ratio": served / best_served if best_served else 1.0,
        "replicas_vs_most_possible": placed / most_replicas if most_replicas else 1.0,
        "instances": instances,
    }


def churn(events: int) -> dict[str, Any]:
    """Stability as nodes use it: each node's loaded models (gossiped) are the only memory of
    the previous assignment, as in the placement loop."""
    rng = random.Random(29)
    mesh, demands = random_mesh(rng, 12, 8)
    joined = len(mesh)
    current = place(mesh, demands)
    moved = scratch_moved = minimum = 0
    for _ in range(events):
        if rng.random() < 0.5 and len(mesh) > 2:
            dead = rng.choice(mesh)
            mesh = [node for node in mesh if node != dead]
        else:
            memory = rng.randint(0, 12) * 500
            mesh = [*mesh, NodeCapacity(node=f"node{joined:03d}", memory_mb=memory)]
            joined += 1
        alive = {node.node for node in mesh}
        mesh = [replace(node, loaded=current.models_on(node.node)) for node in mesh]
        after = place(mesh, demands)
        scratch = place([replace(node, loaded=frozenset()) for node in mesh], demands)
        kept = {(m, n) for m, n in current.pairs() if n in alive}
        # Whatever the method, reaching as many replicas as `after` loads at least this many.
        minimum += max(0, len(after.pairs()) - len(kept))
        moved += moves(current, after)
        scratch_moved += moves(current, scratch)
        current = after
    return {
        "moves_ratio": moved / minimum if minimum else 1.0 + moved,
        "moves_ratio_without_previous": scratch_moved / minimum if minimum else 1.0,
        "membership_changes": events,
        "moves": moved,
        "minimum_moves": minimum,
    }


# -- transfer: holder side (child process) --------------------------------------------------


async def serve_mesh(store_root: str, mesh_key: str) -> None:
    bus = Bus(Identity.generate(), MeshKeyRing.from_text(mesh_key), ZmqTransport())
    await bus.start()
    transfer = ModelTransfer(
        ModelStore(store_root), bus.send, rate_bytes_per_s=1e12, chunk_bytes=CHUNK
    )
    print(json.dumps({"address": bus.address, "node_id": bus.node_id.hex()}), flush=True)
    serving = asyncio.create_task(transfer.run())
    while True:
        inbound = await bus.receive()
        transfer.handle(inbound.sender, inbound.message)
    serving.cancel()  # pragma: no cover - killed by the parent


def raw_pair(context: zmq.asyncio.Context) -> tuple[Any, str]:
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)
    router.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    return router, f"tcp://127.0.0.1:{port}"


def raw_dealer(context: zmq.asyncio.Context, address: str) -> Any:
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.SNDHWM, 1000)
    dealer.connect(address)
    return dealer


async def serve_raw(store_root: str) -> None:
    """Answer (reply address, file, offset, length) with the bytes, like a holder, bare."""
    context = zmq.asyncio.Context()
    router, address = raw_pair(context)
    print(json.dumps({"address": address}), flush=True)
    dealers: dict[str, Any] = {}
    folder = Path(store_root) / MODEL
    while True:
        _, body = await router.recv_multipart()
        reply_to, path, offset, length = msgspec.msgpack.decode(body)
        data = await asyncio.to_thread(read_range, folder / path, offset, length)
        dealer = dealers.get(reply_to) or dealers.setdefault(
            reply_to, raw_dealer(context, reply_to)
        )
        await dealer.send(msgspec.msgpack.encode([path, offset, data]))


def spawn(
    kind: str, store_root: str, mesh_key: str = ""
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    command = [sys.executable, __file__, "--serve", kind, "--store", store_root]
    if mesh_key:
        command.append(f"--mesh-key={mesh_key}")
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    info: dict[str, Any] = json.loads(process.stdout.readline())
    return process, info


def stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


# -- transfer: fetcher side -----------------------------------------------------------------


async def fetch_mesh(source: str, mesh_key: str, size: int) -> float:
    process, info = spawn("mesh", source, mesh_key)
    try:
        with tempfile.TemporaryDirectory(dir=Path(source).parent) as target:
            bus = Bus(Identity.generate(), MeshKeyRing.from_text(mesh_key), ZmqTransport())
            await bus.start()
            transfer = ModelTransfer(
                ModelStore(target), bus.send, rate_bytes_per_s=1e12, chunk_bytes=CHUNK
            )
            tasks = [asyncio.create_task(transfer.run())]

            async def pump() -> None:
                while True:
                    inbound = await bus.receive()
                    transfer.handle(inbound.sender, inbound.message)

            tasks.append(asyncio.create_task(pump()))
            holder = await bus.connect(info["address"], timeout=10)
            started = time.perf_counter()
            await transfer.pull(MODEL, [holder])
            elapsed = time.perf_counter() - started
            for task in tasks:
                task.cancel()
            await bus.close()
    finally:
        stop(process)
    return size / elapsed


async def fetch_raw(source: str, files: list[tuple[str, int]], size: int) -> float:
    process, info = spawn("raw", source)
    context = zmq.asyncio.Context()
    try:
        inbox, address = raw_pair(context)
        dealer = raw_dealer(context, info["address"])
        with tempfile.TemporaryDirectory(dir=Path(source).parent) as target:
            started = time.perf_counter()
            for path, file_size in files:
                destination = Path(target) / path
                destination.parent.mkdir(parents=True, exist_ok=True)
                with destination.open("wb") as handle:
                    asked = written = 0
                    arrived: dict[int, bytes] = {}
                    in_flight = 0
                    while written < file_size:
                        while in_flight < WINDOW and asked < file_size:
                            length = min(CHUNK, file_size - asked)
                            await dealer.send(
                                msgspec.msgpack.encode([address, path, asked, length])
                            )
                            asked += length
                            in_flight += 1
                        _, body = await inbox.recv_multipart()
                        _, offset, data = msgspec.msgpack.decode(body)
                        in_flight -= 1
                        arrived[offset] = data
                        while written in arrived:
                            chunk = arrived.pop(written)
                            await asyncio.to_thread(handle.write, chunk)
                            written += len(chunk)
            elapsed = time.perf_counter() - started
        inbox.close()
        dealer.close()
    finally:
        context.destroy(linger=0)
        stop(process)
    return size / elapsed


def make_store(root: Path, size: int) -> tuple[ModelStore, list[tuple[str, int]]]:
    store = ModelStore(root)
    with store.writing(MODEL) as temp:
        (temp / "model.onnx").write_bytes(os.urandom(size))
        (temp / "config.json").write_text("{}")
        manifest = store.commit(
            temp, name=MODEL, source="bench", task="text-generation", precision="fp32", versions={}
        )
    return store, [(entry.path, entry.size) for entry in manifest.files]


def load_seconds() -> tuple[float, str]:
    store = ModelStore()
    if not store.exists(SMOLLM):
        return 0.0, "estimated"
    from llmnode.agents.models.providers import create_session

    manifest = store.get(SMOLLM)
    started = time.perf_counter()
    session, _ = create_session(store.path(SMOLLM) / manifest.model_file, prefer_gpu=True)
    elapsed = time.perf_counter() - started
    del session
    return elapsed, "measured"


async def transfer_figures(size: int, rounds: int) -> dict[str, Any]:
    mesh_key = MeshKeyRing.generate().to_text()
    with tempfile.TemporaryDirectory() as scratch:
        store, files = make_store(Path(scratch) / "source", size)
        total = sum(file_size for _, file_size in files)
        raw: list[float] = []
        mesh: list[float] = []
        timed_out = 0
        for _ in range(rounds):
            # A round that stalls (seen once on the shared machine: the raw baseline's second
            # round, not reproduced alone) is given up after ROUND_TIMEOUT_S, not waited on.
            for side, work in (
                (raw, fetch_raw(str(store.root), files, total)),
                (mesh, fetch_mesh(str(store.root), mesh_key, total)),
            ):
                try:
                    side.append(await asyncio.wait_for(work, ROUND_TIMEOUT_S))
                except TimeoutError:
                    timed_out += 1
            print(f"raw {raw[-1] / 1e6:.0f} MB/s, mesh {mesh[-1] / 1e6:.0f} MB/s", flush=True)
    if not raw or not mesh:
        raise SystemExit(f"transfer: every round of one side timed out ({timed_out})")
    return {
        "transfer_rounds_timed_out": timed_out,
        "transfer_ratio": max(mesh) / max(raw),
        "mesh_mb_per_s": round(max(mesh) / 1e6, 1),
        "raw_mb_per_s": round(max(raw) / 1e6, 1),
        "transfer_bytes": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", choices=["raw", "mesh"])
    parser.add_argument("--store", default="")
    parser.add_argument("--mesh-key", default="")
    parser.add_argument("--probe-interval", type=float, default=1.0, help="for restore_s")
    args = parser.parse_args()
    configure(level="warning")
    if args.serve == "raw":
        asyncio.run(serve_raw(args.store))
        return
    if args.serve == "mesh":
        asyncio.run(serve_mesh(args.store, args.mesh_key))
        return
    size = (32 if args.quick else 128) * 1024 * 1024
    result: dict[str, Any] = {}
    result.update(packing(100 if args.quick else 400))
    result.update(churn(50 if args.quick else 200))
    result.update(asyncio.run(transfer_figures(size, 2)))
    store = ModelStore()
    model_bytes = store.get(SMOLLM).size_bytes if store.exists(SMOLLM) else 543_000_000
    load_s, load_source = load_seconds()
    if load_source == "estimated":
        load_s = model_bytes / 1e9
    detection_s = detection_bound(MembershipConfig(), 3)
    transfer_s = model_bytes / (result["mesh_mb_per_s"] * 1e6)
    simulated_s = detection_s + transfer_s + load_s
    result.update(
        {
            "restore_simulated_s": round(simulated_s, 2),
            "restore_simulated_detection_s": round(detection_s, 2),
            "restore_simulated_transfer_s": round(transfer_s, 2),
            "restore_simulated_load_s": round(load_s, 2),
            "restore_simulated_load_source": load_source,
        }
    )
    from placement_restore import measure_restore  # beside this script (sys.path[0])

    measured = measure_restore(args.probe_interval)
    result.update(measured)
    if measured.get("restore_s"):
        result["restore_vs_simulated"] = measured["restore_s"] / simulated_s
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
