"""Gossip benchmark: SWIM membership on the simulated network against its models.

Measures, on the virtual clock of llmnode.nodes.membership.simulation (so the numbers do not
depend on the machine's speed; only the wall time does):
- rounds (gossip intervals) for a join and for a new state record to reach 99.9% of members at
  N = 10, 100, 1000, against the push epidemic model r = 2/fanout · ln((N+1)/(1/0.999 − 1));
- time for every live member to declare a crashed node dead (N = 100), against the bound
  computed from the configuration (first probe + failed probe + max suspicion + spread);
- live nodes declared dead with 10% packet loss and 1% of nodes slowed by up to one probe
  interval per message, over 1,000 probe periods at N = 100 (Lifeguard);
- bytes per node per second, every message encoded with the real msgspec codec, plus
  FRAME_OVERHEAD bytes per frame for the bus (header ≈ 100 B: version, sender and recipient
  keys, epoch, sequence, timestamp, type; 24 B nonce; 16 B tag; 64 B signature), at N = 100
  with every node publishing a new 512-byte record every 10 s, and idle.

Prints progress lines, then ONE JSON object as the last line.
"""

from __future__ import annotations

import json
import math
import statistics
import time

from llmnode.nodes.membership import MembershipConfig
from llmnode.nodes.membership.simulation import (
    Simulation,
    detection_bound,
    dissemination_rounds,
    epidemic_rounds,
    node_address,
    node_id,
)
from llmnode.schemas.membership import SignedRecord

CONFIG = MembershipConfig()
FRAME_OVERHEAD = 200


def dissemination(members: int, seed: int) -> tuple[float, float]:
    record = SignedRecord(node_id(1), 1, b"x" * 512, b"s" * 64)
    joined, updated = dissemination_rounds(CONFIG, members, seed, record=record)
    if joined is None or updated is None:
        raise SystemExit(f"dissemination did not reach 99.9% at N={members}")
    return joined, updated


def detection(members: int, seed: int) -> float:
    simulation = Simulation.create(CONFIG, seed=seed)
    simulation.bootstrap(members)
    simulation.run_for(5.0)
    simulation.crash(members - 1)
    crashed_at = simulation.now
    bound = detection_bound(CONFIG, members)
    simulation.run_for(2 * bound)
    everyone = simulation.time_to_reach("dead", node_id(members - 1), members - 1)
    if everyone is None:
        return math.inf
    return (everyone - crashed_at) / bound


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


def bandwidth(members: int, seconds: float, seed: int, records: bool) -> float:
    simulation = Simulation.create(CONFIG, seed=seed, codec=True)
    simulation.record_events = False
    simulation.bootstrap(members)
    simulation.run_for(10.0)
    bytes_before, frames_before = simulation.bytes_sent, simulation.frames_sent
    start = simulation.now
    version = 0
    while simulation.now < start + seconds:
        version += 1
        if records:
            for index in range(members):
                record = SignedRecord(node_id(index), version, bytes(512), bytes(64))
                simulation.set_record(index, record)
        simulation.run_for(10.0)
    elapsed = simulation.now - start
    payload = simulation.bytes_sent - bytes_before
    frames = simulation.frames_sent - frames_before
    return (payload + FRAME_OVERHEAD * frames) / members / elapsed


def main() -> None:
    started = time.perf_counter()
    rows = []
    for members, seeds in ((10, 5), (100, 3), (1000, 1)):
        joins, records = [], []
        for seed in range(seeds):
            join_rounds, record_rounds = dissemination(members, seed=seed + members)
            joins.append(join_rounds)
            records.append(record_rounds)
        rounds = max(statistics.median(joins), statistics.median(records))
        model = epidemic_rounds(members, CONFIG.gossip_nodes)
        rows.append(
            {
                "n": members,
                "rounds": round(rounds, 2),
                "join_rounds": round(statistics.median(joins), 2),
                "record_rounds": round(statistics.median(records), 2),
                "model_rounds": round(model, 2),
                "ratio": round(rounds / model, 3),
            }
        )
        print(f"dissemination {rows[-1]}", flush=True)
    detection_ratios = [detection(100, seed=seed) for seed in range(3)]
    detection_ratio = statistics.median(detection_ratios)
    print(f"detection ratio (measured / bound) at N=100: {detection_ratios}", flush=True)
    dead, suspected = false_positives(100, 1000, seed=42)
    print(
        f"false positives: {dead} live nodes declared dead ({suspected} suspected events)",
        flush=True,
    )
    busy = bandwidth(100, 60.0, seed=7, records=True)
    idle = bandwidth(100, 60.0, seed=7, records=False)
    print(f"bytes per node per second: {busy:.0f} with records, {idle:.0f} idle", flush=True)
    result = {
        "dissemination": rows,
        "detection_ratio": round(detection_ratio, 3),
        "false_positives": dead,
        "suspected_events": suspected,  # (observer, suspicion) pairs
        "bytes_per_node_s": round(busy, 1),
        "bytes_per_node_s_idle": round(idle, 1),
        "frame_overhead_bytes": FRAME_OVERHEAD,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
