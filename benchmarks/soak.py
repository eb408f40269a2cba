"""Soak: steady load on three real nodes, sampling what could leak (does I/O: starts processes).

Three `llmnode start` processes on 127.0.0.1 (tests/support/mesh.py): an entry node and two
nodes serving ``all-minilm-l6-v2``. Through the SDK on the entry node, ``concurrency`` loops
embed one sentence each, one request after another, for ``--minutes``. Every ``--interval``
seconds it samples, per node: RSS, open file descriptors and threads (/proc), and from the node's
own status (through the SDK) its asyncio tasks and the blocks Python's allocator holds
(``python_blocks``: RSS growing while these stay flat is native memory, not Python objects); and
the peer table (``llmnode peers`` size on the entry node).

After ``--warmup`` minutes it fits a least-squares line to each series per node and reports the
slope per hour with its bound (2 standard errors): a slope whose magnitude is under its bound is
indistinguishable from zero. The baseline is the same fit over the warm-up samples
(``warmup_rss_slope_kb_per_h``), where growth is expected. Prints one JSON object as its last
line: ``rss_slope_kb_per_h``, ``fd_slope_per_h``, ``task_slope_per_h``,
``python_blocks_slope_per_h`` (each for the node with the largest magnitude), their bounds,
``*_flat`` verdicts, ``rss_slope_late_kb_per_h`` (the same fit over the later half of the steady
window: a leak keeps its slope there, a heap still settling flattens), requests completed and
failed.

Usage: ``python benchmarks/soak.py [--minutes 60] [--interval 10] [--warmup 5] [--rate 0]
[--samples FILE]``; ``--rate`` paces each loop (requests per second) for a low, steady load on a
shared machine, ``--samples`` keeps the series.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))

from llmnode.client.mesh import Mesh, connect
from llmnode.errors import MeshError
from tests.support.mesh import LocalMesh, NodeProcess, wait_for

MODEL = "all-minilm-l6-v2"


def proc_sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status if ":" in line}
    return {
        "rss_kb": float(fields["VmRSS"][0]),
        "threads": float(fields["Threads"][0]),
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
    }


def fit(times_h: list[float], values: list[float]) -> tuple[float, float]:
    """Least-squares slope per hour and its bound (2 standard errors)."""
    n = len(times_h)
    if n < 3:
        return 0.0, math.inf
    mean_t, mean_v = sum(times_h) / n, sum(values) / n
    sxx = sum((t - mean_t) ** 2 for t in times_h)
    if sxx == 0:
        return 0.0, math.inf
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times_h, values, strict=True)) / sxx
    residual = sum(
        (v - mean_v - slope * (t - mean_t)) ** 2 for t, v in zip(times_h, values, strict=True)
    )
    return slope, 2 * math.sqrt(residual / (n - 2) / sxx)


async def load(
    entry: NodeProcess, stop: asyncio.Event, counts: dict[str, int], rate: float
) -> None:
    """One loop of embeds; ``rate`` > 0 paces it to that many requests per second."""
    period = 1.0 / rate if rate > 0 else 0.0
    async with connect(entry.data_dir, name="soak") as mesh:
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                await mesh.embed(MODEL, "the mesh keeps running", timeout=30)
                counts["completed"] += 1
            except MeshError as error:
                counts[f"failed_{type(error).__name__}"] = (
                    counts.get(f"failed_{type(error).__name__}", 0) + 1
                )
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()  # behind: do not burst to catch up


async def soak(
    minutes: float,
    interval: float,
    warmup: float,
    concurrency: int,
    rate: float = 0.0,
    samples_out: Path | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        mesh = LocalMesh(Path(root))
        try:
            entry = mesh.add("entry")
            servers = [mesh.add(f"server{i}", ["--model", MODEL]) for i in range(2)]
            mesh.wait_converged()
            wait_for(
                lambda: sum(MODEL in str(row.get("load", "")) for row in entry.peers()) >= 2,
                timeout=120,
                what="the models to load",
            )
            nodes = [entry, *servers]
            counts: dict[str, int] = {"completed": 0}
            stop = asyncio.Event()
            loaders = [
                asyncio.create_task(load(entry, stop, counts, rate)) for _ in range(concurrency)
            ]
            samples: list[dict[str, Any]] = []
            start = time.monotonic()
            sampling = contextlib.AsyncExitStack()
            opened: list[Mesh] = [
                await sampling.enter_async_context(connect(node.data_dir, name="soak-sampler"))
                for node in nodes
            ]
            while time.monotonic() - start < minutes * 60:
                row: dict[str, Any] = {"t_h": (time.monotonic() - start) / 3600}
                for node, admin in zip(nodes, opened, strict=True):
                    assert node.process is not None
                    inside = (await admin.status())["process"]
                    row[node.name] = {
                        **proc_sample(node.process.pid),
                        "tasks": float(inside["tasks"]),
                        "python_blocks": float(inside["python_blocks"]),
                    }
                row["peers"] = len(await opened[0].peers())
                samples.append(row)
                if samples_out is not None:
                    with samples_out.open("a") as out:
                        out.write(json.dumps(row) + "\n")
                await asyncio.sleep(interval)
            stop.set()
            await asyncio.gather(*loaders)
            await sampling.aclose()
        finally:
            for node in mesh.nodes:
                if node.alive():
                    node.stop()
    return summarize(samples, [n.name for n in nodes], warmup / 60, minutes, counts)


def summarize(
    samples: list[dict[str, Any]],
    names: list[str],
    warmup_h: float,
    minutes: float,
    counts: dict[str, int],
) -> dict[str, Any]:
    steady = [s for s in samples if s["t_h"] >= warmup_h]
    early = [s for s in samples if s["t_h"] < warmup_h]
    elapsed = samples[-1]["t_h"] * 60 if samples else 0.0
    result: dict[str, Any] = {
        "minutes": minutes,
        "minutes_sampled": round(elapsed, 2),
        "samples": len(samples),
        **counts,
    }
    for metric, key in (("rss_kb", "rss_slope_kb_per_h"), ("fds", "fd_slope_per_h"),
                        ("threads", "thread_slope_per_h"), ("tasks", "task_slope_per_h"),
                        ("python_blocks", "python_blocks_slope_per_h")):  # fmt: skip
        fits = {
            name: fit([s["t_h"] for s in steady], [s[name][metric] for s in steady])
            for name in names
        }
        worst = max(names, key=lambda name: abs(fits[name][0]))
        slope, bound = fits[worst]
        result[key] = round(slope, 2)
        result[key.replace("slope", "bound")] = round(bound, 2)
        result[key.replace("_per_h", "_flat").replace("_kb", "")] = abs(slope) <= bound
        result[f"{key}_node"] = worst
    # The later half of the steady window alone: a leak keeps its slope, a heap settling after
    # warm-up flattens (the fit over the whole window mixes the two).
    late = steady[len(steady) // 2 :]
    late_fits = {
        name: fit([s["t_h"] for s in late], [s[name]["rss_kb"] for s in late]) for name in names
    }
    late_worst = max(names, key=lambda name: abs(late_fits[name][0]))
    result["rss_slope_late_kb_per_h"] = round(late_fits[late_worst][0], 2)
    result["rss_bound_late_kb_per_h"] = round(late_fits[late_worst][1], 2)
    result["rss_slope_late_kb_per_h_node"] = late_worst
    warmup: list[float] = [
        fit([s["t_h"] for s in early], [s[n]["rss_kb"] for s in early])[0] for n in names
    ]
    steepest: float = max(warmup, key=abs)
    result["warmup_rss_slope_kb_per_h"] = round(steepest, 2) if early else None
    result["peers_min_max"] = [min(s["peers"] for s in samples), max(s["peers"] for s in samples)]
    result["rss_kb_last"] = {name: samples[-1][name]["rss_kb"] for name in names}
    result["fds_last"] = {name: samples[-1][name]["fds"] for name in names}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the fit")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests/s per loop (0: as fast as served)"
    )
    parser.add_argument("--samples", type=Path, help="append every sample here (JSON lines)")
    arguments = parser.parse_args()
    result = asyncio.run(
        soak(
            arguments.minutes,
            arguments.interval,
            arguments.warmup,
            arguments.concurrency,
            arguments.rate,
            arguments.samples,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
