"""A real large mesh on one machine: 32 `llmnode start` processes on 127.0.0.1, one seed.

Starts the seed, then the other nodes at once, all joining through the seed over real
sockets (ZeroMQ, CurveZMQ, sealed frames), and measures:
- time from the last start until every node sees all of them alive (target: 10 s), until
  every process answers on its control socket, and until each logged ``node_started`` (Python
  start-up, on a shared machine); frames the bus failed to send until then (ZeroMQ drops them
  while a new peer's connection comes up);
- bytes per node per second the bus sends (all, and of membership frames), over a window of
  steady state, against the full simulation (benchmarks/gossip.py's instrument) at the same N
  and timings, same run;
- each node's resident memory (VmRSS);
- after `kill -9` of 3 nodes, the time until every other node holds all 3 dead (not merely
  suspect), against the detection bound from the configuration.

llmnode is compiled to bytecode first, as an installed package is.

Nodes are asked through the client SDK (one control connection each, kept open), not the CLI,
so polling does not start 32 Python processes a round. Prints progress lines, then ONE JSON
object as the last line. ``--nodes`` and ``--probe-interval`` are configurable.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from gossip import FRAME_OVERHEAD, simulated_bandwidth

from llmnode.bus.keyring import MeshKeyRing
from llmnode.client.mesh import connect
from llmnode.nodes.membership import MembershipConfig
from llmnode.nodes.membership.simulation import detection_bound


def start(root: Path, index: int, env: dict[str, str], probe: float, seed: str) -> Any:
    data_dir = root / f"n{index}"
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable, "-m", "llmnode", "start", "--data-dir", str(data_dir),
        "--name", f"n{index}", "--listen", "tcp://127.0.0.1:0", "--no-beacon",
        "--probe-interval", str(probe), "--log-json", "--http", "off",
    ]  # fmt: skip
    if seed:
        args += ["--join", seed]
    log = (root / f"n{index}.log").open("ab")
    return subprocess.Popen(args, env=env, stdout=log, stderr=log, start_new_session=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def open_all(root: Path, count: int, timeout: float) -> list[Any]:
    meshes: list[Any] = []
    deadline = time.monotonic() + timeout
    for index in range(count):
        while True:
            try:
                mesh = await connect(root / f"n{index}")
                await mesh.status()
                meshes.append(mesh)
                break
            except Exception:  # not up yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    return meshes


async def alive_counts(meshes: list[Any]) -> list[int]:
    rows = await asyncio.gather(*(mesh.peers() for mesh in meshes))
    return [sum(1 for row in peers if row["state"] == "alive") for peers in rows]


async def all_dead(meshes: list[Any], names: set[str]) -> bool:
    rows = await asyncio.gather(*(mesh.peers() for mesh in meshes))
    return all({row["name"] for row in peers if row["state"] == "dead"} >= names for peers in rows)


async def bus_counts(meshes: list[Any], name: str) -> list[int]:
    statuses = await asyncio.gather(*(mesh.status() for mesh in meshes))
    return [int(s["counters"]["bus"].get(name, 0)) for s in statuses]


async def bytes_sent(meshes: list[Any]) -> list[tuple[int, int]]:
    """Per node: (all bytes the bus sent, of which membership frames)."""
    statuses = await asyncio.gather(*(mesh.status() for mesh in meshes))
    return [
        (
            int(s["counters"]["bus"].get("bytes_sent", 0)),
            int(s["counters"].get("gossip_bytes", {}).get("sent", 0)),
        )
        for s in statuses
    ]


def started_after(root: Path, count: int, since: float) -> list[float]:
    """Seconds from ``since`` (wall clock) to each node's ``node_started`` log line: when its
    process had imported everything, loaded its keys and bound its sockets."""
    seconds = []
    for index in range(count):
        for line in (root / f"n{index}.log").read_text().splitlines():
            if '"node_started"' in line:
                stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
                seconds.append(datetime.fromisoformat(stamp).timestamp() - since)
                break
    return sorted(seconds)


async def run(args: argparse.Namespace) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="llmnode-mesh32-"))
    env = {
        **os.environ,
        "LLMNODE_MESH_KEY": MeshKeyRing.key_to_text(MeshKeyRing.generate_key()),
        "PYTHONUNBUFFERED": "1",
    }
    count, probe = args.nodes, args.probe_interval
    processes = [start(root, 0, env, probe, "")]
    meshes: list[Any] = []
    try:
        (seed_mesh,) = await open_all(root, 1, 60)
        seed = str((await seed_mesh.status())["address"]).removeprefix("tcp://")
        await seed_mesh.close()
        began = time.monotonic()
        processes += [start(root, i, env, probe, seed) for i in range(1, count)]
        last_start, last_start_wall = time.monotonic(), time.time()
        print(f"started {count} nodes in {last_start - began:.1f} s", flush=True)
        meshes = await open_all(root, count, 120)
        all_up = time.monotonic() - last_start  # every process answers its control socket
        print(f"all {count} answering {all_up:.1f} s after the last start", flush=True)
        full: float | None = None
        while time.monotonic() - last_start < args.join_timeout:
            if min(await alive_counts(meshes)) >= count:
                full = time.monotonic() - last_start
                break
            await asyncio.sleep(0.25)
        print(f"full membership {full} s after the last start", flush=True)
        failed_sends = sum(await bus_counts(meshes, "send_failed"))
        ready = started_after(root, count, last_start_wall)[1:]  # the seed started long before
        print(f"node_started {ready[0]:.1f}..{ready[-1]:.1f} s after the last start", flush=True)
        await asyncio.sleep(args.settle)
        before, at = await bytes_sent(meshes), time.monotonic()
        await asyncio.sleep(args.window)
        after, window = await bytes_sent(meshes), time.monotonic() - at
        real = sum(b[0] - a[0] for a, b in zip(before, after, strict=True)) / count / window
        gossip = sum(b[1] - a[1] for a, b in zip(before, after, strict=True)) / count / window
        rss = [rss_mb(p.pid) for p in processes]
        config = MembershipConfig().scaled(1.0 / probe)
        simulated, _ = simulated_bandwidth(config, count, 600.0, 30.0, seed=3)
        print(
            f"bytes/node/s real {real:.0f} (membership {gossip:.0f}), simulated {simulated:.0f}",
            flush=True,
        )
        victims = list(range(count - 3, count))
        for index in victims:
            processes[index].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        survivors = meshes[: count - 3]
        bound = detection_bound(config, count)
        detected: float | None = None
        while time.monotonic() - killed < 2 * bound:
            if await all_dead(survivors, {f"n{index}" for index in victims}):
                detected = time.monotonic() - killed
                break
            await asyncio.sleep(0.25)
        print(f"3 kill -9 seen by all in {detected} s (bound {bound:.1f} s)", flush=True)
    finally:
        for mesh in meshes:
            await mesh.close()
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)
    return {
        "nodes": count,
        "probe_interval_s": probe,
        "all_up_s": round(all_up, 2),
        "full_membership_s": None if full is None else round(full, 2),
        "full_after_all_up_s": None if full is None else round(full - all_up, 2),
        "node_started_s": [
            round(ready[0], 2),
            round(ready[len(ready) // 2], 2),
            round(ready[-1], 2),
        ],
        "sends_failed_until_full": failed_sends,
        "bytes_per_node_s": round(real, 1),
        "simulated_bytes_per_node_s": round(simulated, 1),
        "real_vs_simulated": round(real / simulated, 3),
        "membership_bytes_per_node_s": round(gossip, 1),
        "membership_vs_simulated": round(gossip / simulated, 3),
        "frame_overhead_bytes_in_simulation": FRAME_OVERHEAD,
        "rss_mb_median": round(sorted(rss)[len(rss) // 2], 1),
        "rss_mb_max": round(max(rss), 1),
        "detection_s": None if detected is None else round(detected, 2),
        "detection_bound_s": round(bound, 2),
        "logs": str(root),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument("--join-timeout", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    started = time.perf_counter()
    # Bytecode for llmnode, as an installed package has (pip compiles on install): otherwise,
    # where PYTHONDONTWRITEBYTECODE is set, all 32 processes compile it from source at start.
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "llmnode", quiet=1)
    result = asyncio.run(run(args))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
