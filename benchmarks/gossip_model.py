"""The membership protocol's rules on per-item state, for meshes too large to simulate whole.

A full simulation holds N membership machines of N members each: N² entries, about 200 bytes
each (see ``memory_per_member`` in benchmarks/gossip.py), so 20 GB at N = 10,000. This model
keeps, per node, only what one item needs (when it arrived, how often it was sent on), and runs
the same rules on a virtual clock: gossip to ``gossip_nodes`` random members every gossip
interval, one probe per probe interval whose Ping and Ack carry the item, each node sending an
item at most ``retransmit_limit`` times, records announced and pulled (one round trip), failed
probes turning into Suspect items whose confirmations shrink the suspicion timeout (Lifeguard),
and the first node whose suspicion ends spreading Dead. Bandwidth is counted from the rates
these rules imply and message sizes from the real codec. benchmarks/gossip.py runs it beside
the full simulation at N = 100 and 1,000, so where both run their figures can be compared.
No I/O.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from llmnode.nodes.membership import MembershipConfig
from llmnode.nodes.membership.config import (
    push_pull_scale,
    remaining_suspicion,
    retransmit_limit,
    suspicion_timeout,
)
from llmnode.nodes.membership.digests import MEMBERS_PER_BUCKET, bucket_count
from llmnode.nodes.membership.simulation import node_address, node_id
from llmnode.schemas.membership import (
    Ack,
    Gossip,
    MemberSnapshot,
    Ping,
    PushPull,
    RecordPull,
    RecordVersion,
    SignedRecord,
)
from llmnode.schemas.messages import encode

DELAY = (0.0005, 0.002)  # one-way delay, as in the full simulation


def spread(
    config: MembershipConfig,
    members: int,
    origin: int,
    start: float,
    rng: random.Random,
    *,
    lazy: bool,
) -> list[float]:
    """When each node first holds one item that ``origin`` starts sending at ``start``
    (``lazy``: an announced record, held one pull round trip after the announcement)."""
    limit = retransmit_limit(config.retransmit_multiplier, members)
    held = [math.inf] * members
    sent = [0] * members
    held[origin] = start
    events: list[tuple[float, int, int]] = []  # (time, kind, node): 0 gossip, 1 probe, 2 arrive
    gossip_phase = [rng.uniform(0, config.gossip_interval) for _ in range(members)]
    probe_phase = [rng.uniform(0, config.probe_interval) for _ in range(members)]

    def next_tick(phase: float, interval: float, after: float) -> float:
        return phase + math.ceil(max(0.0, after - phase) / interval) * interval

    pending = 0  # arrivals not yet handled
    active = 1  # holders that may still send it

    def arrive(node: int, at: float) -> None:
        nonlocal pending
        if at < held[node]:
            pending += 1
            heapq.heappush(events, (at, 2, node))

    def count_send(node: int) -> None:
        nonlocal active
        sent[node] += 1
        if sent[node] == limit:
            active -= 1

    probe, gossip = config.probe_interval, config.gossip_interval
    for node in range(members):  # every node probes; an Ack can carry the item back
        heapq.heappush(events, (next_tick(probe_phase[node], probe, start), 1, node))
    heapq.heappush(events, (next_tick(gossip_phase[origin], gossip, start), 0, origin))
    reached = 1
    while events and reached < members and (active or pending):
        at, kind, node = heapq.heappop(events)
        if kind == 2:
            pending -= 1
            if held[node] != math.inf:
                continue
            held[node] = at + (2 * rng.uniform(*DELAY) if lazy else 0.0)
            reached += 1
            active += 1
            heapq.heappush(events, (next_tick(gossip_phase[node], gossip, held[node]), 0, node))
            continue
        if kind == 0:
            if held[node] > at or sent[node] >= limit:
                continue
            for drawn in rng.sample(range(members - 1), config.gossip_nodes):
                count_send(node)
                arrive(drawn + (drawn >= node), at + rng.uniform(*DELAY))
                if sent[node] >= limit:
                    break
            heapq.heappush(events, (at + gossip, 0, node))
            continue
        target = rng.randrange(members - 1)
        target += target >= node
        heapq.heappush(events, (at + probe, 1, node))
        if held[node] <= at and sent[node] < limit:
            count_send(node)
            arrive(target, at + rng.uniform(*DELAY))
        ack_at = at + rng.uniform(*DELAY)
        if held[target] <= ack_at and sent[target] < limit:
            count_send(target)
            arrive(node, ack_at + rng.uniform(*DELAY))
    return held


def rounds_to(held: list[float], start: float, interval: float, fraction: float) -> float:
    times = sorted(held)
    needed = math.ceil(fraction * len(times))
    return (times[needed - 1] - start) / interval


def detection(config: MembershipConfig, members: int, rng: random.Random) -> float:
    """Seconds until every live member holds a crashed node dead (the node is the last one)."""
    crashed = members - 1
    live = members - 1
    # Each live node probes round-robin over a shuffled list: the crashed node comes up at a
    # uniform place in it, after a uniform phase.
    first_probe = sorted(
        (rng.uniform(0, config.probe_interval) + rng.randrange(live) * config.probe_interval, n)
        for n in range(live)
    )
    expected = config.suspicion_confirmations if live - 2 >= config.suspicion_confirmations else 0
    minimum = suspicion_timeout(config.suspicion_multiplier, members, config.probe_interval)
    maximum = config.suspicion_max_timeout_multiplier * minimum
    accusations: list[list[float]] = []
    for probed_at, accuser in first_probe[: expected + 1]:
        suspected_at = probed_at + config.probe_interval  # the probe and its indirect checks fail
        held = spread(config, live, accuser, suspected_at, rng, lazy=False)
        accusations.append(held)
    own_deadline = []
    for node in range(live):
        heard = sorted(held[node] for held in accusations)
        started = heard[0]
        dead_at = math.inf
        for confirmations in range(len(heard)):
            timeout = remaining_suspicion(confirmations, expected, minimum, maximum)
            deadline = started + timeout
            following = heard[confirmations + 1] if confirmations + 1 < len(heard) else math.inf
            if deadline <= following:
                dead_at = max(deadline, heard[confirmations])
                break
        own_deadline.append(dead_at)
    first = min(range(live), key=lambda n: own_deadline[n])
    dead_spread = spread(config, live, first, own_deadline[first], rng, lazy=False)
    del crashed
    return max(min(own, heard) for own, heard in zip(own_deadline, dead_spread, strict=True))


@dataclass(frozen=True)
class Traffic:
    bytes_per_node_s: float
    frames_per_node_s: float


def _size(message: object) -> int:
    return len(encode(message))  # type: ignore[arg-type]


def bandwidth(
    config: MembershipConfig,
    members: int,
    *,
    change_period: float,
    record_bytes: int,
    frame_overhead: int,
    lazy: bool,
    dissemination_s: float,
) -> Traffic:
    """Steady-state bytes per node per second when every node changes its record once per
    ``change_period`` (``lazy``: announced and pulled; else pushed whole, within the
    piggyback budget of each message)."""
    limit = retransmit_limit(config.retransmit_multiplier, members)
    record = SignedRecord(node_id(1), 2**40, bytes(record_bytes), bytes(64))
    announcement = RecordVersion(node_id(1), 2**40)
    item = _size(Gossip(gossip=[], announce=[announcement])) - _size(Gossip())
    if not lazy:
        item = _size(Gossip(gossip=[record])) - _size(Gossip())
    ping = _size(Ping(seq=2**20, target=node_id(1), source_address=node_address(members)))
    ack = _size(Ack(seq=2**20))
    gossip = _size(Gossip())
    sends_per_s = config.gossip_nodes / config.gossip_interval + 2.0  # gossip, Ping, Ack
    per_message = max(1, config.max_gossip_bytes // item)
    arrivals = members / change_period  # new records per second, everywhere
    demand = arrivals * limit  # item sends per node per second to spread every record
    capacity = sends_per_s * per_message
    item_sends = min(demand, capacity)  # beyond the capacity, the queue drops records
    lifetime = limit / sends_per_s
    busy = 1.0 - math.exp(-arrivals * lifetime)  # chance the queue holds something (M/G/inf)
    if demand > capacity:
        busy = 1.0
    gossip_frames = config.gossip_nodes / config.gossip_interval * busy
    frames = 2.0 + gossip_frames
    total = ping + ack + gossip * gossip_frames + item * item_sends
    if lazy:  # each node pulls each new record once: a RecordPull and a Gossip holding it
        pull = _size(RecordPull(origins=[node_id(1)]))
        answer = _size(Gossip(gossip=[record]))
        total += arrivals * (pull + answer)
        frames += 2 * arrivals
    interval = push_pull_scale(config.push_pull_interval, members)
    snapshot = _size(MemberSnapshot(node_id(1), node_address(members), 5, "alive"))
    if config.digest_push_pull:  # a digest; the buckets an item in flight makes differ
        count = bucket_count(members)
        digest = _size(PushPull(members=[], digest=[2**63] * count))
        in_flight = arrivals * dissemination_s
        differing = min(count, in_flight)
        version = item if lazy else _size(RecordVersion(node_id(1), 2**40)) + 1
        per_bucket = min(members, MEMBERS_PER_BUCKET) * (2 * snapshot + version)
        exchange = digest + differing * per_bucket
        frames_pp = 1.0 + (3.0 if differing >= 1 else 0.0)
    else:  # whole views, both ways
        exchange = 2 * members * (snapshot + _size(Gossip(gossip=[record])) - _size(Gossip()))
        frames_pp = 2.0
    total += 2 * exchange / interval  # each node starts one exchange and answers about one
    frames += 2 * frames_pp / interval
    return Traffic((total + frame_overhead * frames), frames)
