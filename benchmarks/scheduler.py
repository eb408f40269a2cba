"""Scheduler benchmark: two simulated 16-node meshes (no I/O), then three real node processes (I/O).

SIMULATION. Sixteen nodes whose throughputs span 8× serve Poisson arrivals at 50 %, 80 % and
95 % of the mesh's total capacity, in two scenarios:

- ``speed`` (the top-level figures): the span comes mostly from per-request service time (40 to
  80 ms means, slots 1/2/4; half the nodes have exponential service times, half log-normal).
- ``parallelism`` (under ``scenarios``): the span comes from slots alone (1 to 8), with the same
  log-normal service time (mean 80 ms) on every node, so a slow node is not slower per request.

Each request enters at a random node, which routes it:

- ``llmnode``: :func:`llmnode.nodes.requests.scheduler.choose` with that entry node's own
  :class:`~llmnode.nodes.requests.scheduler.InFlightLedger` and its own
  view of each peer, kept the way
  :class:`llmnode.nodes.mesh.view.MeshView` keeps it: the newest received of (a) the peer's gossiped
  record (published every 200 ms; it reaches each observer after a uniform 0..interval relay
  wait plus the one-way latency, older versions dropped; timed by its arrival) and (b) the load
  piggybacked on the peer's replies to this entry node: on the ``Accept`` (the load at admission,
  RTT/2 later; repeated every second while the request runs) and on the ``Result`` (the load as
  the request left). Its own load is exact. The serving node's EWMA of service times uses 0.2,
  as the model runtime does.
- ``random`` and ``round_robin`` (per entry node): the baselines a naive mesh would use.
- ``oracle``: a central join-shortest-expected-delay with perfect instantaneous knowledge of
  every queue and every node's true mean service time.

A node whose waiting queue is at ``queue_limit`` refuses (Busy); the entry node re-routes with
the refusing nodes excluded, as the real request path does. Every policy sees the same arrivals
and the same per-request service-time draws (common random numbers), so the differences are
the policies'. Latency is measured at the entry node, from arrival to answer, RTTs included.
Targets at 80 %: llmnode p99 ≤ 1.3 × oracle, ≤ 0.5 × random, efficiency ≥ 0.9 (definition in the
JSON, ``efficiency_definition``; the oracle's own efficiency is printed beside it).

REAL PROCESSES (``--real``, on by default; ``--no-real`` skips it): three ``llmnode start``
processes on 127.0.0.1 serve the same tiny model with 1, 2 and 4 slots and ``--fault-slow-ms 5``;
streams are kept 3 × 7 deep at the first node for 25 s through its control socket, and each
node's share of the requests served is compared with its share of the slots:
``real_share_error`` = the largest absolute difference.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import heapq
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy

from llmnode.errors import NoCapacity
from llmnode.nodes.mesh.view import MeshView
from llmnode.nodes.requests.candidates import ServiceIndex, pick, refreshed, shortlist
from llmnode.nodes.requests.loads import PROBES, stale_sample
from llmnode.nodes.requests.scheduler import Candidate, InFlightLedger
from llmnode.schemas.config import NodeConfig
from llmnode.schemas.state import NodeState, Resources, ServiceInfo, ServiceLoad

SERVICE = "model:bench"
_RESOURCES = Resources(cpu_cores=1, ram_total_mb=1, ram_free_mb=1)


def _record(index: int, load: ServiceLoad) -> NodeState:
    """A node state record advertising the benchmark's one service with ``load``."""
    return NodeState(
        node_id=str(index),
        name=f"n{index}",
        endpoints=[],
        version="bench",
        started_at=0.0,
        resources=_RESOURCES,
        services=[ServiceInfo(name=SERVICE, kind="model", load=load)],
    )


POLICIES = ("llmnode", "random", "round_robin", "oracle")
LOADS = (0.5, 0.8, 0.95)
GOSSIP_INTERVAL = 0.200  # seconds
RTT = 0.0005  # seconds, between any two distinct nodes
QUEUE_LIMIT = 32
LOGNORMAL_SIGMA = 0.6
NODE_EWMA_SMOOTHING = 0.2  # the serving node's own EWMA of service times, as generation.py
HEARTBEAT_INTERVAL = 1.0  # seconds between the Accept repeats of a running request
PARALLELISM_MEAN_SERVICE = 0.080  # seconds, every node of the parallelism scenario


@dataclass(frozen=True)
class NodeSpec:
    slots: int
    mean_service: float  # seconds
    lognormal: bool

    @property
    def throughput(self) -> float:
        return self.slots / self.mean_service


def mesh() -> list[NodeSpec]:
    """16 nodes, 12.5 to 100 requests/s each (8×), 583 requests/s in all."""
    shapes = (
        [(4, 0.040)] * 2  # large GPU: 100/s
        + [(4, 0.080)] * 2  # small GPU: 50/s
        + [(2, 0.060)] * 4  # 33/s
        + [(1, 0.040)] * 4  # 25/s
        + [(1, 0.080)] * 4  # 12.5/s
    )
    return [
        NodeSpec(slots, mean, lognormal=index % 2 == 1)
        for index, (slots, mean) in enumerate(shapes)
    ]


def parallelism_mesh() -> list[NodeSpec]:
    """16 nodes, slots 1 to 8, the same log-normal 80 ms service: 12.5 to 100 requests/s (8×)."""
    slots = (1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8, 8)
    return [NodeSpec(count, PARALLELISM_MEAN_SERVICE, lognormal=True) for count in slots]


SCENARIOS: dict[str, Callable[[], list[NodeSpec]]] = {
    "speed": mesh,
    "parallelism": parallelism_mesh,
}
SCENARIO_NOTE = (
    "speed: 16 nodes, 12.5-100 req/s from per-request service time (40-80 ms means, slots "
    "1/2/4; top-level figures); parallelism: 16 nodes, 12.5-100 req/s from slots 1-8 alone, "
    "the same log-normal 80 ms service on every node"
)


@dataclass
class Job:
    arrival: float
    entry: int
    exponential_draw: float  # Exp(1), scales exponential service times
    normal_draw: float  # N(0, 1), drives log-normal service times
    request_id: bytes
    measured: bool
    excluded: set[int] = field(default_factory=set)
    target: int = -1
    started: float = 0.0
    refusals: int = 0
    done: bool = False
    queried: bool = False  # load on demand: stale candidates already asked for this job
    listed: list[Candidate] = field(default_factory=list)  # the shortlist they were asked from


@dataclass
class NodeRuntime:
    spec: NodeSpec
    busy: int = 0
    waiting: list[Job] = field(default_factory=list)  # FIFO, popped from the front by index
    waiting_head: int = 0
    ewma_service_ms: float = 0.0
    busy_time: float = 0.0  # slot-seconds inside the measurement window
    served: int = 0  # measured requests this node completed

    @property
    def queue_depth(self) -> int:
        return len(self.waiting) - self.waiting_head

    @property
    def total(self) -> int:
        return self.busy + self.queue_depth


class Simulation:
    """One run: one policy at one load. Events are (time, sequence, kind, payload)."""

    def __init__(
        self,
        policy: str,
        load: float,
        requests: int,
        seed: int,
        *,
        specs: list[NodeSpec] | None = None,
        piggyback: bool = True,
        accept_counts_admitted: bool = True,
        load_on_demand: bool = True,
        warmup_fraction: float = 0.1,
    ) -> None:
        self.warmup_fraction = warmup_fraction
        self.policy = policy
        # Load on demand (the node as built since issue 18): records carry capabilities only,
        # published once; a stale sample of candidates is asked (one RTT) before choosing.
        self.load_on_demand = load_on_demand
        self.specs = mesh() if specs is None else specs
        self.nodes = [NodeRuntime(spec) for spec in self.specs]
        self.published_ms = [0.0] * len(self.specs)  # service time in the last record
        self.published_at = [0.0] * len(self.specs)
        self.records_published = 0
        self.node_ids = [index.to_bytes(2, "big") * 16 for index in range(len(self.specs))]
        self.rate = load * sum(spec.throughput for spec in self.specs)
        self.requests = requests
        self.arrivals = random.Random(seed)  # same stream for every policy: common numbers
        self.policy_rng = random.Random(seed + 1)
        self.gossip_rng = random.Random(seed + 2)
        self.events: list[tuple[float, int, int, Any]] = []
        self.sequence = 0
        self.ledgers = [InFlightLedger() for _ in self.specs]
        # What each entry node knows of each peer, as MeshView keeps it: the newest gossiped
        # record (queue, in flight, EWMA service ms, received at, version = publish time) and
        # the load piggybacked on the last Accept or Result from that peer (queue, in flight,
        # received at). The newest received wins.
        self.gossip: list[dict[int, tuple[int, int, float, float, float]]] = [
            {} for _ in self.specs
        ]
        self.fresh: list[dict[int, tuple[int, int, float]]] = [{} for _ in self.specs]
        # ... and each entry's real MeshView, fed the same, read by the node's candidate filter.
        self.views = [MeshView(node, str(index)) for index, node in enumerate(self.node_ids)]
        self.indexes = [ServiceIndex(view) for view in self.views]
        self.oracle_slots = numpy.array([max(spec.slots, 1) for spec in self.specs], float)
        self.oracle_service_ms = numpy.array([spec.mean_service * 1000 for spec in self.specs])
        self.oracle_rtt_ms = RTT * 1000
        started = [  # each node's record as published at start: no load in it
            _record(index, ServiceLoad(slots=spec.slots, queue_limit=QUEUE_LIMIT))
            for index, spec in enumerate(self.specs)
        ]
        for index, view in enumerate(self.views):
            view.set_record(self.node_ids[index], str(index), started[index], 0, 0.0)
            for other in range(len(self.specs)):
                if other != index:
                    view.observe_rtt(self.node_ids[other], RTT * 1000)
                    if load_on_demand:
                        view.set_record(self.node_ids[other], str(other), started[other], 1, 0.0)
        self.piggyback = piggyback
        self.accept_counts_admitted = accept_counts_admitted
        self.round_robin = [index for index in range(len(self.specs))]
        self.latencies: list[float] = []
        self.refusals = 0
        self.warmup_end = 0.0
        self.window_end = math.inf
        self.arrived = 0
        self.unanswered = 0  # arrived, not answered yet

    # -- event plumbing -------------------------------------------------------------------------

    def push(self, at: float, kind: int, payload: Any) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (at, self.sequence, kind, payload))

    def run(self) -> None:
        handlers: list[Callable[[float, Any], None]] = [
            self.on_arrival,
            self.on_deliver,
            self.on_done,
            self.on_answer,
            self.on_refused,
            self.on_publish,
            self.on_gossip,
            self.on_accept,
            self.on_heartbeat,
            self.on_load_answers,
        ]
        self.push(self.arrivals.expovariate(self.rate), ARRIVAL, None)
        for index in range(len(self.nodes)):
            self.push(self.gossip_rng.uniform(0.0, GOSSIP_INTERVAL), PUBLISH, index)
        # Warm-up: the first 10 % of requests (time for records and EWMAs to settle); half in
        # the large mesh, where a thousand nodes start loaded at once (a cold start that takes
        # about 8 s to drain, see BENCHMARKS.md).
        warmup_requests = int(self.requests * self.warmup_fraction)
        self.warmup_end = warmup_requests / self.rate
        self.window_end = self.requests / self.rate
        events = self.events
        while events:
            at, _, kind, payload = heapq.heappop(events)
            if kind >= PUBLISH and at > self.window_end and not self.pending():
                continue
            handlers[kind](at, payload)

    def pending(self) -> bool:
        return self.unanswered > 0 or self.arrived < self.requests

    # -- arrivals and routing ------------------------------------------------------------------

    def on_arrival(self, now: float, _: Any) -> None:
        self.arrived += 1
        self.unanswered += 1
        job = Job(
            arrival=now,
            entry=self.arrivals.randrange(len(self.nodes)),
            exponential_draw=self.arrivals.expovariate(1.0),
            normal_draw=self.arrivals.gauss(0.0, 1.0),
            request_id=self.arrived.to_bytes(8, "big"),
            measured=now >= self.warmup_end,
        )
        if self.arrived < self.requests:
            self.push(now + self.arrivals.expovariate(self.rate), ARRIVAL, None)
        self.route(now, job)

    def route(self, now: float, job: Job) -> None:
        if self.policy == "llmnode" and not job.queried:
            job.queried = True
            excluded = frozenset(self.node_ids[index] for index in job.excluded)
            job.listed = shortlist(
                self.indexes[job.entry], SERVICE, now, self.ledgers[job.entry], self.policy_rng,
                exclude=excluded, local_load=self.local_load(job.entry),
            )  # fmt: skip
            sample = (
                stale_sample(job.listed, now, STALE_S, PROBES, self.policy_rng)
                if self.load_on_demand
                else []
            )
            if sample:  # a LoadQuery to each, answered one RTT later with the load now
                answers = []
                for candidate in sample:
                    index = int.from_bytes(candidate.node[:2], "big")
                    node = self.nodes[index]
                    answers.append((index, node.queue_depth, node.busy, node.ewma_service_ms))
                self.push(now + RTT, LOAD_ANSWERS, (job, answers))
                return
        target = self.pick(now, job)
        if target < 0:  # every node refused: forget the refusals, try again a little later
            job.excluded.clear()
            self.push(now + 0.010, REFUSED, (job, -1))
            return
        job.target = target
        if self.policy == "llmnode":
            self.ledgers[job.entry].sent(self.node_ids[target], SERVICE, job.request_id, now)
        delay = 0.0 if target == job.entry else RTT / 2
        self.push(now + delay, DELIVER, job)

    def pick(self, now: float, job: Job) -> int:
        count = len(self.nodes)
        if self.policy == "random":
            allowed = [index for index in range(count) if index not in job.excluded]
            return self.policy_rng.choice(allowed) if allowed else -1
        if self.policy == "round_robin":
            for _ in range(count):
                index = self.round_robin[job.entry] % count
                self.round_robin[job.entry] += 1
                if index not in job.excluded:
                    return index
            return -1
        if self.policy == "oracle":
            return self.pick_oracle(job)
        return self.pick_llmnode(now, job)

    def pick_oracle(self, job: Job) -> int:
        """The node with the lowest ``scheduler.estimate_completion_ms`` on true queues and means.

        Vectorised (the same formula, term for term, so the same float results and the same
        first minimum as a loop over the nodes): a loop costs 1 ms a request at 1,000 nodes.
        """
        slots, service_ms = self.oracle_slots, self.oracle_service_ms
        ahead = numpy.fromiter((node.total for node in self.nodes), float, len(self.nodes))
        waiting = numpy.maximum(0.0, ahead - slots + 1.0) / slots
        base = (1.0 + waiting) * service_ms
        estimate = base + self.oracle_rtt_ms
        estimate[job.entry] = base[job.entry]  # no round trip to itself
        if job.excluded:
            estimate[list(job.excluded)] = math.inf
        best = int(numpy.argmin(estimate))
        return -1 if math.isinf(estimate[best]) else best

    def local_load(self, entry: int) -> Callable[[str], ServiceLoad]:
        local = self.nodes[entry]

        def load(service: str) -> ServiceLoad:
            return ServiceLoad(
                slots=local.spec.slots,
                queue_limit=QUEUE_LIMIT,
                queue_depth=local.queue_depth,
                in_flight=local.busy,
                ewma_service_ms=local.ewma_service_ms,
            )

        return load

    def pick_llmnode(self, now: float, job: Job) -> int:
        """The node's own path, as the router takes it: its MeshView fed with the records and
        the load this entry received, a :func:`shortlist` (made in :meth:`route`, before the
        load queries), refreshed with their answers, then :func:`pick`."""
        entry = job.entry
        view, local_load = self.views[entry], self.local_load(entry)
        listed = refreshed(view, job.listed, now, local_load)
        job.queried = False  # a re-route (refused) draws a new shortlist
        excluded = frozenset(self.node_ids[index] for index in job.excluded)
        try:
            choice = pick(
                self.indexes[entry], SERVICE, listed, now, self.ledgers[entry], self.policy_rng,
                exclude=excluded, local_load=local_load,
            )  # fmt: skip
        except NoCapacity:
            return -1
        return int.from_bytes(choice.node[:2], "big")

    # -- serving nodes --------------------------------------------------------------------------

    def on_deliver(self, now: float, job: Job) -> None:
        node = self.nodes[job.target]
        if node.busy < node.spec.slots or node.queue_depth < QUEUE_LIMIT:
            # Admitted. The Accept carries the load at admission; as server.py builds it today
            # the snapshot is taken before the service has queued the request.
            before = (node.queue_depth, node.busy)
            if node.busy < node.spec.slots:
                self.start(now, job.target, job)
            else:
                node.waiting.append(job)
            queue_depth, busy = (
                (node.queue_depth, node.busy) if self.accept_counts_admitted else before
            )
            self.reply_load(now, job, (queue_depth, busy, node.ewma_service_ms))
            if self.piggyback and job.target != job.entry:
                self.push(now + HEARTBEAT_INTERVAL, HEARTBEAT, job)
        else:
            self.refusals += 1
            delay = 0.0 if job.target == job.entry else RTT / 2
            self.push(now + delay, REFUSED, (job, job.target))

    def reply_load(self, now: float, job: Job, snapshot: tuple[int, int, float]) -> None:
        """An Accept (or heartbeat) leaves the serving node for the entry node."""
        if self.policy == "llmnode" and self.piggyback and job.target != job.entry:
            self.push(now + RTT / 2, ACCEPT, (job, snapshot))

    def on_accept(self, now: float, payload: tuple[Job, tuple[int, int, float]]) -> None:
        job, (queue_depth, in_flight, service_ms) = payload
        self.fresh[job.entry][job.target] = (queue_depth, in_flight, now)
        self.views[job.entry].observe_load(
            self.node_ids[job.target], SERVICE, queue_depth, in_flight, now, service_ms
        )

    def on_heartbeat(self, now: float, job: Job) -> None:
        if job.done:
            return
        node = self.nodes[job.target]
        self.reply_load(now, job, (node.queue_depth, node.busy, node.ewma_service_ms))
        self.push(now + HEARTBEAT_INTERVAL, HEARTBEAT, job)

    def service_time(self, spec: NodeSpec, job: Job) -> float:
        if spec.lognormal:
            sigma = LOGNORMAL_SIGMA
            return spec.mean_service * math.exp(sigma * job.normal_draw - sigma * sigma / 2)
        return spec.mean_service * job.exponential_draw

    def start(self, now: float, index: int, job: Job) -> None:
        node = self.nodes[index]
        node.busy += 1
        job.started = now
        self.push(now + self.service_time(node.spec, job), DONE, job)

    def on_done(self, now: float, job: Job) -> None:
        node = self.nodes[job.target]
        node.busy -= 1
        node.served += job.measured
        service = now - job.started
        node.busy_time += max(0.0, min(now, self.window_end) - max(job.started, self.warmup_end))
        service_ms = service * 1000
        node.ewma_service_ms = (
            service_ms
            if node.ewma_service_ms == 0.0
            else node.ewma_service_ms + NODE_EWMA_SMOOTHING * (service_ms - node.ewma_service_ms)
        )
        if node.queue_depth:
            following = node.waiting[node.waiting_head]
            node.waiting_head += 1
            if node.waiting_head > 1024:
                del node.waiting[: node.waiting_head]
                node.waiting_head = 0
            self.start(now, job.target, following)
        job.done = True
        delay = 0.0 if job.target == job.entry else RTT / 2
        # The Result carries the load as the request left (the next one, if any, started).
        load = (node.queue_depth, node.busy, node.ewma_service_ms)
        self.push(now + delay, ANSWER, (job, service_ms, load))

    def on_answer(self, now: float, payload: tuple[Job, float, tuple[int, int, float]]) -> None:
        job, service_ms, (queue_depth, in_flight, node_service_ms) = payload
        self.unanswered -= 1
        if self.policy == "llmnode":
            if self.piggyback and job.target != job.entry:
                self.fresh[job.entry][job.target] = (queue_depth, in_flight, now)
                self.views[job.entry].observe_load(
                    self.node_ids[job.target], SERVICE, queue_depth, in_flight, now,
                    node_service_ms,
                )  # fmt: skip
            self.ledgers[job.entry].finished(
                self.node_ids[job.target], SERVICE, job.request_id, now, service_ms
            )
        if job.measured:
            self.latencies.append(now - job.arrival)

    def on_refused(self, now: float, payload: tuple[Job, int]) -> None:
        job, refused_by = payload
        if refused_by >= 0:
            job.refusals += 1
            job.excluded.add(refused_by)
            if self.policy == "llmnode":
                self.ledgers[job.entry].refused(self.node_ids[refused_by], SERVICE, job.request_id)
        self.route(now, job)

    def on_load_answers(
        self, now: float, payload: tuple[Job, list[tuple[int, int, int, float]]]
    ) -> None:
        job, answers = payload
        for index, queue_depth, in_flight, service_ms in answers:
            self.views[job.entry].observe_load(
                self.node_ids[index], SERVICE, queue_depth, in_flight, now, service_ms
            )
        self.route(now, job)

    # -- gossip ---------------------------------------------------------------------------------

    def on_publish(self, now: float, index: int) -> None:
        if self.policy == "llmnode" and self.load_on_demand:
            # A new record when the service time is first measured, or the record is
            # RECORD_REFRESH_S old (records.needs_signing); it travels with the load otherwise.
            ewma_ms = self.nodes[index].ewma_service_ms
            first = self.published_ms[index] == 0.0 and ewma_ms > 0.0
            if not first and now - self.published_at[index] < RECORD_REFRESH_S:
                self.push(now + GOSSIP_INTERVAL, PUBLISH, index)
                return
            self.published_ms[index], self.published_at[index] = ewma_ms, now
            self.records_published += 1
        if self.policy == "llmnode":
            node = self.nodes[index]
            load = ServiceLoad(
                slots=self.specs[index].slots,
                queue_limit=QUEUE_LIMIT,
                queue_depth=node.queue_depth,
                in_flight=node.busy,
                ewma_service_ms=node.ewma_service_ms,
            )
            snapshot = (
                node.queue_depth,
                node.busy,
                node.ewma_service_ms,
                now,
                _record(index, load),
            )
            for observer in range(len(self.nodes)):
                if observer != index:
                    delay = self.gossip_rng.uniform(0.0, GOSSIP_INTERVAL) + RTT / 2
                    self.push(now + delay, GOSSIP, (observer, index, snapshot))
        self.push(now + GOSSIP_INTERVAL, PUBLISH, index)

    def on_gossip(
        self, now: float, payload: tuple[int, int, tuple[int, int, float, float, NodeState]]
    ) -> None:
        observer, origin, (queue_depth, in_flight, ewma_service_ms, version, record) = payload
        view = self.gossip[observer]
        previous = view.get(origin)
        # Records arrive out of order through different relays; an older version is dropped.
        # The one kept is timed by its arrival, as MeshView times it (record_time).
        if previous is not None and previous[4] > version:
            return
        view[origin] = (queue_depth, in_flight, ewma_service_ms, now, version)
        self.views[observer].set_record(
            self.node_ids[origin], str(origin), record, int(version * 1e6), now
        )

    # -- results --------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        window = self.window_end - self.warmup_end
        utilisation = [node.busy_time / (node.spec.slots * window) for node in self.nodes]
        mean_utilisation = sum(utilisation) / len(utilisation)
        served = sum(node.served for node in self.nodes) or 1
        capacity = sum(spec.throughput for spec in self.specs)
        work_ratio = [
            (node.served / served) / (node.spec.throughput / capacity) for node in self.nodes
        ]
        return {
            "policy": self.policy,
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "efficiency": round(min(utilisation) / mean_utilisation, 3),
            "share_efficiency": round(min(work_ratio) / (sum(work_ratio) / len(work_ratio)), 3),
            "refusals": self.refusals,
            "measured": len(latencies),
        }


ARRIVAL, DELIVER, DONE, ANSWER, REFUSED, PUBLISH, GOSSIP, ACCEPT, HEARTBEAT, LOAD_ANSWERS = range(
    10
)
STALE_S = 2.0  # the node's: two probe intervals (llmnode/nodes/node.py)
LARGE_WARMUP_FRACTION = 0.5
RECORD_REFRESH_S = NodeConfig().record_refresh_s


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    index = min(len(values) - 1, max(0, math.ceil(fraction * len(values)) - 1))
    return values[index]


def simulate(
    policy: str,
    load: float,
    requests: int,
    seed: int,
    specs: list[NodeSpec] | None = None,
    *,
    warmup_fraction: float = 0.1,
    **options: bool,
) -> dict[str, Any]:
    simulation = Simulation(
        policy, load, requests, seed, specs=specs, warmup_fraction=warmup_fraction, **options
    )
    simulation.run()
    return {"load": load, **simulation.result()}


# -- real node processes --------------------------------------------------------------------------

REAL_MODEL = "tiny-gpt2"
REAL_SLOTS = (1, 2, 4)
REAL_SLOW_MS = 5  # per streamed chunk, on every node: service time ≈ tokens × this
REAL_TOKENS = 16
REAL_SECONDS = 25.0  # how long the saturating load runs


def _llmnode(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmnode", *args]


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError, subprocess.SubprocessError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def _cli_json(env: dict[str, str], data_dir: Path, *args: str) -> Any:
    done = subprocess.run(
        _llmnode(*args, "--json", "--data-dir", str(data_dir)),
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def real_process_run(seconds: float = REAL_SECONDS) -> dict[str, Any]:
    """Three `llmnode start` processes (slots 1, 2, 4) under saturating load entered at one.

    Every node serves the same tiny model with the same per-chunk slowdown, so each node's
    capacity is proportional to its slots. Streams of ``REAL_TOKENS`` tokens are kept
    ``3 × total slots`` deep at the entry node for ``seconds``; each node's share of the requests
    served is compared with its share of the capacity.
    """
    from llmnode.agents.models.store import ModelStore
    from llmnode.agents.models.tiny import export_tiny
    from llmnode.bus.keyring import MeshKeyRing

    with tempfile.TemporaryDirectory(prefix="llmnode-bench-scheduler-") as scratch:
        root = Path(scratch)
        export_tiny(ModelStore(root / "store"), REAL_MODEL)
        env = {
            **os.environ,
            "LLMNODE_MESH_KEY": MeshKeyRing.key_to_text(MeshKeyRing.generate_key()),
            "PYTHONUNBUFFERED": "1",
            "LLMNODE_ORT_THREADS": "1",
        }
        processes: list[subprocess.Popen[bytes]] = []
        data_dirs: list[Path] = []
        try:
            seed = ""
            for index, slots in enumerate(REAL_SLOTS):
                name = f"s{index}"
                data_dir = root / name
                data_dir.mkdir()
                args = [
                    "start", "--data-dir", str(data_dir), "--name", name,
                    "--listen", "tcp://127.0.0.1:0", "--no-beacon", "--probe-interval", "0.2",
                    "--log-json", "--model", REAL_MODEL, "--model-store", str(root / "store"),
                    "--model-slots", str(slots), "--fault-slow-ms", str(REAL_SLOW_MS),
                ]  # fmt: skip
                if seed:
                    args += ["--join", seed]
                with (root / f"{name}.log").open("ab") as log:
                    processes.append(
                        subprocess.Popen(
                            _llmnode(*args),
                            env=env,
                            stdout=log,
                            stderr=log,
                            start_new_session=True,
                        )
                    )
                data_dirs.append(data_dir)
                status = _wait(
                    functools.partial(_cli_json, env, data_dir, "status"),
                    60,
                    f"node {name} to start",
                )
                if not seed:
                    seed = str(status["address"]).removeprefix("tcp://")
            service = f"model:{REAL_MODEL}"
            for data_dir in data_dirs:
                _wait(
                    functools.partial(_sees_every_host, env, data_dir, service),
                    60,
                    "every node to see the model on every node",
                )
            before = [_served(env, data_dir) for data_dir in data_dirs]
            completed, failed = asyncio.run(_saturate(data_dirs[0], service, seconds))
            after = [_served(env, data_dir) for data_dir in data_dirs]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    process.wait(10)
    served = [end - start for start, end in zip(before, after, strict=True)]
    total = max(1, sum(served))
    capacity = [slots / sum(REAL_SLOTS) for slots in REAL_SLOTS]
    shares = [count / total for count in served]
    return {
        "real_share_error": round(
            max(abs(share - want) for share, want in zip(shares, capacity, strict=True)), 3
        ),
        "real": {
            "slots": list(REAL_SLOTS),
            "fault_slow_ms": REAL_SLOW_MS,
            "tokens": REAL_TOKENS,
            "seconds": seconds,
            "entry_node": "s0",
            "served": served,
            "served_share": [round(share, 3) for share in shares],
            "capacity_share": [round(want, 3) for want in capacity],
            "completed": completed,
            "failed": failed,
        },
    }


def _sees_every_host(env: dict[str, str], data_dir: Path, service: str) -> bool:
    rows = _cli_json(env, data_dir, "peers") or []
    hosts = [row for row in rows if row.get("state") == "alive" and service in row.get("load", {})]
    return len(hosts) == len(REAL_SLOTS)


def _served(env: dict[str, str], data_dir: Path) -> int:
    status = _cli_json(env, data_dir, "status")
    if status is None:
        raise RuntimeError(f"llmnode status failed for {data_dir.name}")
    return int(status["counters"]["requests"]["served"])


async def _saturate(entry: Path, service: str, seconds: float) -> tuple[int, int]:
    """Keep ``3 × total slots`` streams in flight at ``entry`` for ``seconds``."""
    import msgspec

    from llmnode.client.connection import ControlClient
    from llmnode.errors import MeshError
    from llmnode.schemas.control import CtlRequest
    from llmnode.schemas.inference import GenerateRequest

    completed = failed = 0
    stop_at = time.monotonic() + seconds
    async with ControlClient.from_data_dir(entry) as client:

        async def worker(number: int) -> None:
            nonlocal completed, failed
            sequence = 0
            while time.monotonic() < stop_at:
                sequence += 1
                payload = msgspec.msgpack.encode(
                    GenerateRequest(
                        prompt=f"worker {number} request {sequence}",
                        max_tokens=REAL_TOKENS,
                        ignore_eos=True,
                    )
                )
                request = CtlRequest(
                    id=client.next_id(), service=service, method="generate",
                    payload=payload, timeout=30.0, stream=True,
                )  # fmt: skip
                try:
                    async with client.stream(request) as chunks:
                        async for _ in chunks:
                            pass
                    completed += 1
                except MeshError:
                    failed += 1

        await asyncio.gather(*(worker(number) for number in range(3 * sum(REAL_SLOTS))))
    return completed, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000, help="requests per run")
    parser.add_argument(
        "--parallelism-requests",
        type=int,
        default=None,
        help="requests per run in the parallelism scenario (default: --requests; 0 skips it)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--loads", type=float, nargs="+", default=list(LOADS), help="offered loads to simulate"
    )
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument(
        "--no-piggyback", action="store_true", help="gossip only: no load on Accept/Result"
    )
    parser.add_argument(
        "--gossiped-load",
        action="store_true",
        help="the design before issue 18: every record, load included, gossiped every 200 ms "
        "(default: the node's design: records carry capabilities, stale candidates are asked)",
    )
    parser.add_argument(
        "--large-nodes",
        type=int,
        default=1000,
        help="also simulate a mesh of this many nodes (the speed shapes repeated) at 80 %% "
        "load with llmnode, oracle and random (0 skips it)",
    )
    parser.add_argument(
        "--large-requests",
        type=int,
        default=600_000,
        help="requests in the large mesh's runs; the first half is its warm-up",
    )
    parser.add_argument(
        "--accept-excludes-admitted",
        action="store_true",
        help="the Accept's load omits the request it admits (server.py as built today)",
    )
    parser.add_argument(
        "--real",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run three real node processes and measure their shares (default: on)",
    )
    parser.add_argument("--real-seconds", type=float, default=REAL_SECONDS)
    parser.add_argument("--real-only", action="store_true", help="skip the simulation")
    arguments = parser.parse_args()
    options = {
        "piggyback": not arguments.no_piggyback,
        "accept_counts_admitted": not arguments.accept_excludes_admitted,
        "load_on_demand": not arguments.gossiped_load,
    }
    parallelism_requests = (
        arguments.requests
        if arguments.parallelism_requests is None
        else arguments.parallelism_requests
    )

    started = time.perf_counter()
    summary: dict[str, Any] = {"benchmark": "scheduler"}
    if not arguments.real_only:
        speed = simulation_summary(
            "speed",
            arguments.loads,
            arguments.policies,
            arguments.requests,
            arguments.seed,
            options,
        )
        summary.update(speed)  # the top-level figures stay those of the first scenario
        scenarios = {"speed": scenario_figures(speed)}
        if parallelism_requests > 0:
            parallelism = simulation_summary(
                "parallelism",
                arguments.loads,
                arguments.policies,
                parallelism_requests,
                arguments.seed,
                options,
            )
            scenarios["parallelism"] = scenario_figures(parallelism)
        if arguments.large_nodes > 0:
            large = simulation_summary(
                "speed",
                [0.8],
                [policy for policy in arguments.policies if policy != "round_robin"],
                arguments.large_requests,
                arguments.seed,
                options,
                nodes=arguments.large_nodes,
                warmup_fraction=LARGE_WARMUP_FRACTION,
            )
            scenarios[f"speed_{arguments.large_nodes}"] = scenario_figures(large)
        summary["scenarios"] = scenarios
        summary["scenario_note"] = SCENARIO_NOTE
    if arguments.real:
        real = real_process_run(arguments.real_seconds)
        print(f"real processes: {json.dumps(real['real'])}", file=sys.stderr)
        summary.update(real)
    else:
        summary["real_share_error"] = None
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))


SCENARIO_KEYS = (
    "nodes",
    "requests_per_run",
    "slots",
    "mean_service_ms",
    "loads",
    "p99_vs_oracle_80",
    "p99_vs_random_80",
    "efficiency_80",
    "efficiency_80_oracle",
    "share_efficiency_80",
    "share_efficiency_80_oracle",
)


def scenario_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The per-scenario part of a simulation summary (no per-run details)."""
    return {key: summary[key] for key in SCENARIO_KEYS}


def simulation_summary(
    scenario: str,
    loads: list[float],
    policies: list[str],
    requests: int,
    seed: int,
    options: dict[str, bool],
    *,
    nodes: int = 0,
    warmup_fraction: float = 0.1,
) -> dict[str, Any]:
    specs = SCENARIOS[scenario]()
    if nodes:  # the scenario's shapes repeated: the same mix of nodes, many more of them
        specs = [specs[index % len(specs)] for index in range(nodes)]
        scenario = f"{scenario}_{nodes}"
    runs: list[dict[str, Any]] = []
    for load in loads:
        for policy in policies:
            started = time.perf_counter()
            result = simulate(
                policy, load, requests, seed, specs, warmup_fraction=warmup_fraction, **options
            )
            result["wall_s"] = round(time.perf_counter() - started, 1)
            runs.append(result)
            print(
                f"{scenario:<11} load={load:.2f} {policy:<12} p50={result['p50_ms']:8.2f} ms "
                f"p99={result['p99_ms']:8.2f} ms efficiency={result['efficiency']:.3f} "
                f"share_efficiency={result['share_efficiency']:.3f} "
                f"refusals={result['refusals']}",
                file=sys.stderr,
            )

    def at(policy: str, load: float) -> dict[str, Any] | None:
        return next((run for run in runs if run["policy"] == policy and run["load"] == load), None)

    def ratio(policy: str, baseline: str) -> float | None:
        ours, other = at(policy, 0.8), at(baseline, 0.8)
        if ours is None or other is None:
            return None
        return round(float(ours["p99_ms"]) / float(other["p99_ms"]), 3)

    ours, oracle = at("llmnode", 0.8), at("oracle", 0.8)
    return {
        "nodes": len(specs),
        "requests_per_run": requests,
        "slots": [spec.slots for spec in specs[:16]] + (["..."] if len(specs) > 16 else []),
        "mean_service_ms": [round(spec.mean_service * 1000, 1) for spec in specs[:16]]
        + (["..."] if len(specs) > 16 else []),
        "seed": seed,
        "gossip_interval_ms": GOSSIP_INTERVAL * 1000,
        "piggyback": options["piggyback"],
        "load_on_demand": options["load_on_demand"],
        "warmup_fraction": warmup_fraction,
        "accept_counts_admitted": options["accept_counts_admitted"],
        "loads": [
            {key: run[key] for key in ("policy", "load", "p50_ms", "p99_ms")} for run in runs
        ],
        "details": runs,
        "p99_vs_oracle_80": ratio("llmnode", "oracle"),
        "p99_vs_random_80": ratio("llmnode", "random"),
        "efficiency_80": None if ours is None else ours["efficiency"],
        "efficiency_80_oracle": None if oracle is None else oracle["efficiency"],
        "share_efficiency_80": None if ours is None else ours["share_efficiency"],
        "share_efficiency_80_oracle": None if oracle is None else oracle["share_efficiency"],
        "efficiency_definition": (
            "efficiency = min over nodes of u / mean over nodes of u at 80 % load, u = busy "
            "slot-seconds / (slots x measured window) (busy-slot fraction). share_efficiency: "
            "the same min/mean of (node's share of requests served) / (node's share of "
            "capacity, slots / mean service time); equal to efficiency up to service-time noise"
        ),
    }


if __name__ == "__main__":
    main()
