"""Gossip benchmark: SWIM membership and record dissemination at N = 100, 1,000 and 10,000.

Every node changes its load every second and its capabilities every 10 minutes. The design
measured (records carry capabilities only, are announced and pulled, push-pull compares
digests; load is not gossiped) runs beside the earlier design as the baseline (load inside a
record re-signed every second, records pushed whole, whole-view push-pull), in the same run.

Two instruments, both on a virtual clock in this one process (so the figures do not depend on
the machine's speed; only the wall time does):
- the full simulation (llmnode.nodes.membership.simulation): every node a real membership
  machine, every message encoded with the real codec and counted, plus FRAME_OVERHEAD bytes per
  frame for the bus (header ≈ 100 B, 24 B nonce, 16 B tag, 64 B signature). Run up to
  ``--full-max`` nodes (default 1,000: N machines of N members is N² table entries);
- the protocol model (benchmarks/gossip_model.py): the same rules on per-item state, for every
  N, and the only instrument at N = 10,000. Where both run, both are reported.

Per N: bytes per node per second; rounds (gossip intervals) for a capability change to reach
99.9 % of members against the push epidemic model r = 2/fanout · ln((N+1)/(1/0.999 − 1));
rounds for a join; time for every live member to declare a crashed node dead against the bound
from the configuration; memory each node holds per member (tracemalloc, one real machine
holding N members and their records). Also false deaths with 10 % loss and 1 % of nodes slowed.

Prints progress lines, then ONE JSON object as the last line (``scale``: one row per N).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import random
import statistics
import time
import tracemalloc
from collections import Counter

import gossip_model as model

from llmnode.nodes.membership import Membership, MembershipConfig
from llmnode.nodes.membership.simulation import (
    Simulation,
    detection_bound,
    dissemination_rounds,
    epidemic_rounds,
    node_address,
    node_id,
)
from llmnode.schemas.membership import MemberSnapshot, PushPull, SignedRecord

CONFIG = MembershipConfig()
BASELINE = dataclasses.replace(CONFIG, lazy_records=False, digest_push_pull=False)
FRAME_OVERHEAD = 200
RECORD_BYTES = 512
CAPABILITY_PERIOD = 600.0  # the design: a new record when capabilities change
LOAD_PERIOD = 1.0  # the baseline: load inside the record, re-signed every second
TARGETS = {1000: 20_000, 10_000: 50_000}  # bytes per node per second
DISSEMINATION_TARGET = 1.5  # × the epidemic model


def record(index: int, version: int) -> SignedRecord:
    return SignedRecord(node_id(index), version, bytes(RECORD_BYTES), bytes(64))


def simulated_bandwidth(
    config: MembershipConfig, members: int, period: float, window: float, seed: int
) -> tuple[float, Counter[str]]:
    """Bytes per node per second over ``window`` virtual seconds, every node changing its
    record once per ``period`` (staggered), after a warm-up."""
    simulation = Simulation.create(config, seed=seed, codec=True)
    simulation.record_events = False
    simulation.bootstrap(members, lambda index: record(index, 1))
    simulation.run_for(5.0)
    bytes_before, frames_before = simulation.bytes_sent, simulation.frames_sent
    start = simulation.now
    changes = sorted(
        (start + (index / members) * period + k * period, index)
        for index in range(members)
        for k in range(math.ceil(window / period) + 1)
        if (index / members) * period + k * period < window
    )
    versions = dict.fromkeys(range(members), 1)
    for at, index in changes:
        simulation.run_until(at)
        versions[index] += 1
        simulation.set_record(index, record(index, versions[index]))
    simulation.run_until(start + window)
    payload = simulation.bytes_sent - bytes_before
    frames = simulation.frames_sent - frames_before
    stats: Counter[str] = Counter()
    for machine in simulation.nodes.values():
        stats.update(machine.stats)
    return (payload + FRAME_OVERHEAD * frames) / members / window, stats


def simulated_detection(members: int, seed: int) -> float:
    simulation = Simulation.create(CONFIG, seed=seed)
    simulation.bootstrap(members)
    simulation.run_for(5.0)
    simulation.crash(members - 1)
    crashed_at = simulation.now
    simulation.run_for(2 * detection_bound(CONFIG, members))
    everyone = simulation.time_to_reach("dead", node_id(members - 1), members - 1)
    return math.inf if everyone is None else everyone - crashed_at


def false_positives(members: int, periods: int, seed: int) -> tuple[int, int]:
    simulation = Simulation.create(CONFIG, seed=seed, loss=0.10)
    simulation.bootstrap(members)
    interval = CONFIG.probe_interval
    for index in range(max(1, members // 100)):
        simulation.network.slow(node_address(7 + index), lambda rng: rng.uniform(0.0, interval))
    simulation.run_for(periods * interval)
    dead = {e.event.node for e in simulation.events if e.event.kind == "dead"}
    suspected = sum(1 for e in simulation.events if e.event.kind == "suspected")
    return len(dead), suspected


def memory_per_member(members: int) -> float:
    """Bytes one real membership machine holds per member, its record included."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    machine = Membership(
        node_id(0),
        node_address(0),
        CONFIG,
        rng=random.Random(0),
        verify_record=lambda _: True,
    )
    snapshot = [MemberSnapshot(node_id(i), node_address(i), 0, "alive") for i in range(members)]
    message = PushPull(members=snapshot, records=[record(i, 1) for i in range(1, members)])
    machine.receive(node_id(1), message, 0.0)
    machine.drain_events()
    del message, snapshot
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del machine
    return held / members


def measure(members: int, args: argparse.Namespace) -> dict[str, object]:
    started = time.perf_counter()
    rng = random.Random(members)
    interval = CONFIG.gossip_interval
    epidemic = epidemic_rounds(members, CONFIG.gossip_nodes)
    record_rounds = model.rounds_to(
        model.spread(CONFIG, members, 1, 0.0, rng, lazy=True), 0.0, interval, 0.999
    )
    join_rounds = model.rounds_to(
        model.spread(CONFIG, members, 1, 0.0, rng, lazy=False), 0.0, interval, 0.999
    )
    detection = model.detection(CONFIG, members, rng)
    common = {
        "change_period": CAPABILITY_PERIOD,
        "record_bytes": RECORD_BYTES,
        "frame_overhead": FRAME_OVERHEAD,
        "dissemination_s": record_rounds * interval,
    }
    new = model.bandwidth(CONFIG, members, lazy=True, **common)  # type: ignore[arg-type]
    common["change_period"] = LOAD_PERIOD
    old = model.bandwidth(BASELINE, members, lazy=False, **common)  # type: ignore[arg-type]
    row: dict[str, object] = {
        "n": members,
        "source": "model",
        "bytes_per_node_s": round(new.bytes_per_node_s, 1),
        "baseline_bytes_per_node_s": round(old.bytes_per_node_s, 1),
        "baseline_source": "model",
        "model_bytes_per_node_s": round(new.bytes_per_node_s, 1),
        "rounds": round(record_rounds, 2),
        "join_rounds": round(join_rounds, 2),
        "model_rounds": round(epidemic, 2),
        "ratio": round(record_rounds / epidemic, 3),
        "detection_s": round(detection, 2),
        "detection_bound_s": round(detection_bound(CONFIG, members), 2),
        "detection_ratio": round(detection / detection_bound(CONFIG, members), 3),
        "detection_source": "model",
    }
    if members <= args.full_max:
        window = 30.0 if members <= 100 else args.window
        busy, stats = simulated_bandwidth(CONFIG, members, CAPABILITY_PERIOD, window, seed=7)
        row.update(source="simulation", bytes_per_node_s=round(busy, 1))
        row["push_pull"] = {k: v for k, v in stats.items() if k.startswith("push_pull")}
        if members <= args.baseline_full_max:
            old_busy, _ = simulated_bandwidth(BASELINE, members, LOAD_PERIOD, 10.0, seed=7)
            row.update(baseline_source="simulation", baseline_bytes_per_node_s=round(old_busy, 1))
        seeds = 3 if members <= 100 else 1
        joins, records = [], []
        for seed in range(seeds):
            sample = record(1, 2**40)
            joined, updated = dissemination_rounds(CONFIG, members, seed + members, record=sample)
            joins.append(math.inf if joined is None else joined)
            records.append(math.inf if updated is None else updated)
        row.update(
            model_record_rounds=row["rounds"],
            rounds=round(statistics.median(records), 2),
            join_rounds=round(statistics.median(joins), 2),
            ratio=round(statistics.median(records) / epidemic, 3),
        )
        if members <= 100:
            detected = statistics.median(simulated_detection(members, s) for s in range(3))
            row.update(
                model_detection_s=row["detection_s"],
                detection_source="simulation",
                detection_s=round(detected, 2),
                detection_ratio=round(detected / detection_bound(CONFIG, members), 3),
            )
    per_member = memory_per_member(members)
    row["memory_per_member_bytes"] = round(per_member)
    row["memory_per_node_mb"] = round(per_member * members / 2**20, 2)
    row["wall_s"] = round(time.perf_counter() - started, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--full-max", type=int, default=1000, help="largest full simulation")
    parser.add_argument(
        "--baseline-full-max", type=int, default=100, help="largest full baseline simulation"
    )
    parser.add_argument("--window", type=float, default=10.0, help="virtual s measured, N>100")
    parser.add_argument("--fp-periods", type=int, default=300, help="0: skip false deaths")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for members in args.sizes:
        rows.append(measure(members, args))
        print(f"scale {json.dumps(rows[-1])}", flush=True)
    result: dict[str, object] = {"scale": rows}
    if args.fp_periods:
        dead, suspected = false_positives(100, args.fp_periods, seed=42)
        print(f"false deaths over {args.fp_periods} probe periods: {dead}", flush=True)
        result.update(false_positives=dead, suspected_events=suspected, fp_periods=args.fp_periods)
    meets = {
        f"bytes_n{n}": row["bytes_per_node_s"] <= TARGETS[n]  # type: ignore[operator]
        for row in rows
        if (n := int(row["n"])) in TARGETS  # type: ignore[call-overload]
    }
    meets["dissemination"] = all(
        float(row["ratio"]) <= DISSEMINATION_TARGET  # type: ignore[arg-type]
        for row in rows
    )
    meets["detection"] = all(float(row["detection_ratio"]) <= 1.0 for row in rows)  # type: ignore[arg-type]
    result.update(
        meets=meets,
        frame_overhead_bytes=FRAME_OVERHEAD,
        record_bytes=RECORD_BYTES,
        wall_s=round(time.perf_counter() - started, 1),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
