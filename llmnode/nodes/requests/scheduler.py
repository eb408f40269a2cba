"""The request scheduler: pick the node that will answer soonest (pure, no I/O, no clock reads).

The node where a request enters decides from its gossiped view of the mesh plus its own
:class:`InFlightLedger`, the record of what it has in flight to each peer. Time is always passed
in (``now``, seconds on the caller's monotonic clock) and randomness comes from an injected
``random.Random``, so the same code runs in the node process, the unit tests and the
discrete-event simulation in ``benchmarks/scheduler.py``.

Estimated completion time of a request on a node::

    ahead    = gossiped (queue + in flight) + what we sent since that gossip - what finished since
    waiting  = max(0, ahead - slots + 1) / slots  # service times to wait
    estimate = (1 + waiting) × service_ms + rtt_ms

``ahead`` is never below what we alone still have outstanding there. The estimate includes the
request's own service time, so an idle slow node does not look as good as an idle fast one.

Choice: among capable candidates (alive; suspect only when no alive one is left; not in
``exclude``; estimated queue below ``queue_limit``) a full scan picks the lowest estimate when there
are few, else power-of-d choices (d = 2 by default): the local node, whose load is known exactly,
if it serves the request, plus remote candidates sampled without replacement with probability
proportional to slots^1.5 / service time (throughput, with a further √slots because a many-slot
node absorbs the bursts that stale gossip hides, where a single-slot node queues at once); the
lowest estimate wins. Weighting the sample keeps fast nodes busy in a heterogeneous mesh, where
uniform sampling would starve them and overload slow ones. Service times are the nodes' gossiped
EWMAs averaged again over successive reports (:meth:`InFlightLedger.reported_service_ms`): one
report of an EWMA with a short memory is ±20 % noise, enough to rank nodes wrongly.

In a large mesh the router passes only a shortlist (:func:`llmnode.nodes.requests.candidates.
shortlist`): the local node plus ``d - 1`` others drawn the same way from a per-service index
before anything is evaluated, so a decision does not cost more at 10,000 nodes than at 20.

Sampling, rather than taking the global minimum, keeps the entry nodes,
which all see the same stale gossip, from stampeding onto the node that looked idle: in the
simulation (``benchmarks/scheduler.py``, 200 ms gossip) a full scan doubles p99 against d = 2,
and d = 3, 4 sit in between; always offering the fresh local node cuts p99 by another fifth.

:class:`~llmnode.nodes.requests.retry.RetryPolicy` decides whether and when a refused, failed or
timed-out request is retried elsewhere within its deadline.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from llmnode.errors import NoCapacity

NodeState = Literal["alive", "suspect", "dead", "left"]

DEFAULT_SERVICE_MS = 100.0  # prior for a service time nobody has measured yet
DEFAULT_CHOICES = 2  # d in power-of-d choices
FULL_SCAN_BELOW = 8  # fewer capable candidates than this: compare them all


@dataclass(frozen=True, slots=True)
class Candidate:
    """One node that hosts the requested service, as the entry node sees it.

    ``gossip_queue_depth``, ``gossip_in_flight`` and ``ewma_service_ms`` come from the node's
    gossiped :class:`llmnode.schemas.state.ServiceLoad`; ``gossip_time`` is when that load was
    measured, on the caller's clock (the time the record was received is a fine stand-in).
    ``ewma_service_ms`` of 0 means unknown. For the local node, pass its live load and ``now``.
    """

    node: bytes
    service: str
    state: NodeState = "alive"
    slots: int = 1
    queue_limit: int = 64
    gossip_queue_depth: int = 0
    gossip_in_flight: int = 0
    ewma_service_ms: float = 0.0
    rtt_ms: float = 0.0
    gossip_time: float = 0.0
    is_local: bool = False
    prefixes: frozenset[bytes] = frozenset()  # prompt prefixes its KV cache holds (prefix_key)


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen node and its estimated completion time (service + queueing + RTT), in ms."""

    node: bytes
    estimate_ms: float


@dataclass(slots=True)
class _Track:
    """What one caller has sent to one (node, service)."""

    outstanding: dict[bytes, float] = field(default_factory=dict)  # request id -> sent time
    # (sent time, finished time) of completed requests, in finishing order; pruned lazily.
    finished: deque[tuple[float, float]] = field(default_factory=deque)
    service_ms: float | None = None  # EWMA of service times we observed
    reported_ms: float = 0.0  # the node's own EWMA as last reported (gossip), raw
    reported_smoothed_ms: float = 0.0  # a slower average of those reports


class InFlightLedger:
    """The caller's own record of requests in flight to each (node, service).

    Gossip about a node's load is up to a gossip interval (plus dissemination) old. The ledger
    corrects it: requests we sent after the snapshot are not in it (add those still outstanding),
    and requests we sent before it that finished since are no longer there (subtract them). It
    also keeps an EWMA of the service times we observed, used when gossip has none.
    """

    def __init__(self, *, smoothing: float = 0.2, history_seconds: float = 60.0) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError("smoothing must be in (0, 1]")
        self._smoothing = smoothing
        self._history_seconds = history_seconds
        self._tracks: dict[tuple[bytes, str], _Track] = {}

    def _track(self, node: bytes, service: str) -> _Track:
        key = (node, service)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track()
        return track

    def sent(self, node: bytes, service: str, request_id: bytes, now: float) -> None:
        """A request left for ``node`` at ``now``."""
        self._track(node, service).outstanding[request_id] = now

    def finished(
        self,
        node: bytes,
        service: str,
        request_id: bytes,
        now: float,
        service_ms: float | None = None,
    ) -> None:
        """A request ``node`` accepted has completed (answered or failed there) at ``now``.

        ``service_ms``, when known (reported by the node, or measured by the caller minus the
        RTT), feeds the per-node EWMA of service time. Unknown ids are ignored.
        """
        track = self._tracks.get((node, service))
        if track is None:
            return
        sent_at = track.outstanding.pop(request_id, None)
        if sent_at is None:
            return
        track.finished.append((sent_at, now))
        horizon = now - self._history_seconds
        while track.finished and track.finished[0][1] < horizon:
            track.finished.popleft()
        if service_ms is not None and service_ms > 0.0 and math.isfinite(service_ms):
            previous = track.service_ms
            track.service_ms = (
                service_ms
                if previous is None
                else previous + self._smoothing * (service_ms - previous)
            )

    def refused(self, node: bytes, service: str, request_id: bytes) -> None:
        """``node`` never queued the request (Busy, unreachable): forget it, count no completion."""
        track = self._tracks.get((node, service))
        if track is not None:
            track.outstanding.pop(request_id, None)

    def forget(self, node: bytes) -> None:
        """Drop everything about ``node`` (it left or was declared dead)."""
        for key in [key for key in self._tracks if key[0] == node]:
            del self._tracks[key]

    def outstanding(self, node: bytes, service: str) -> int:
        """Requests we sent to ``node`` for ``service`` that have not finished."""
        track = self._tracks.get((node, service))
        return 0 if track is None else len(track.outstanding)

    def sent_since(self, node: bytes, service: str, since: float) -> int:
        """Requests sent after ``since`` and still outstanding: missing from a snapshot of then."""
        track = self._tracks.get((node, service))
        if track is None:
            return 0
        return sum(1 for sent_at in track.outstanding.values() if sent_at > since)

    def finished_since(self, node: bytes, service: str, since: float) -> int:
        """Requests sent at or before ``since`` that finished after it: gone from that snapshot.

        Gossip times of one node only move forward, so completions at or before ``since`` can
        never matter again and are pruned here.
        """
        track = self._tracks.get((node, service))
        if track is None:
            return 0
        finished = track.finished
        while finished and finished[0][1] <= since:
            finished.popleft()
        return sum(1 for sent_at, _ in finished if sent_at <= since)

    def correction(self, node: bytes, service: str, since: float) -> int:
        """What to add to a load snapshot taken at ``since`` to estimate the load now."""
        return self.sent_since(node, service, since) - self.finished_since(node, service, since)

    def reported_service_ms(
        self, node: bytes, service: str, reported_ms: float, smoothing: float
    ) -> float:
        """Average ``reported_ms`` (the node's own EWMA, as gossiped) over successive reports.

        A serving node's EWMA with a short memory swings by a fifth or more around its mean;
        ranking nodes on one report sends work after noise. Each new value is folded into a
        slower average here; the same value seen again (one record read twice) is ignored.
        """
        track = self._track(node, service)
        if reported_ms != track.reported_ms:
            track.reported_ms = reported_ms
            previous = track.reported_smoothed_ms
            track.reported_smoothed_ms = (
                reported_ms if previous <= 0.0 else previous + smoothing * (reported_ms - previous)
            )
        return track.reported_smoothed_ms

    def service_ms(self, node: bytes, service: str) -> float | None:
        """EWMA of the service times we observed on ``node``, or None if we observed none."""
        track = self._tracks.get((node, service))
        return None if track is None else track.service_ms


def queue_ahead(candidate: Candidate, ledger: InFlightLedger) -> int:
    """Requests at ``candidate`` now (waiting + in service), gossip corrected by the ledger."""
    gossiped = candidate.gossip_queue_depth + candidate.gossip_in_flight
    corrected = gossiped + ledger.correction(
        candidate.node, candidate.service, candidate.gossip_time
    )
    return max(corrected, ledger.outstanding(candidate.node, candidate.service), 0)


REPORT_SMOOTHING = 0.1  # how successive gossiped service-time reports are averaged


def service_time_ms(candidate: Candidate, ledger: InFlightLedger, prior_ms: float) -> float:
    """Best known service time: gossip (averaged over reports), else ours, else ``prior_ms``."""
    if candidate.ewma_service_ms > 0.0:
        return ledger.reported_service_ms(
            candidate.node, candidate.service, candidate.ewma_service_ms, REPORT_SMOOTHING
        )
    observed = ledger.service_ms(candidate.node, candidate.service)
    return prior_ms if observed is None else observed


def estimate_completion_ms(ahead: int, slots: int, service_ms: float, rtt_ms: float) -> float:
    """Expected time until a new request completes behind ``ahead`` others on ``slots``."""
    slots = max(slots, 1)
    waiting = max(0, ahead - slots + 1) / slots
    return (1.0 + waiting) * service_ms + rtt_ms


def _prior_ms(candidates: Sequence[Candidate], ledger: InFlightLedger) -> float:
    """Mean of the known service times, so a node nobody has measured still gets traffic."""
    known: list[float] = []
    for candidate in candidates:
        if candidate.ewma_service_ms > 0.0:
            known.append(candidate.ewma_service_ms)
        else:
            observed = ledger.service_ms(candidate.node, candidate.service)
            if observed is not None:
                known.append(observed)
    return sum(known) / len(known) if known else DEFAULT_SERVICE_MS


def capacity_weight(slots: int, service_ms: float) -> float:
    """How likely a node is to be sampled: slots^1.5 / service time.

    Throughput (slots / service time) times a further √slots: a node with many slots absorbs a
    burst that stale load hides with little waiting, a single-slot node queues at once.
    """
    return float(max(slots, 1) ** 1.5) / max(service_ms, 1e-3)


def _sample_weighted(
    pool: list[tuple[Candidate, int, float]], count: int, rng: random.Random
) -> list[tuple[Candidate, int, float]]:
    """``count`` entries without replacement, drawn in proportion to :func:`capacity_weight`."""
    remaining = list(pool)
    weights = [capacity_weight(entry[0].slots, entry[2]) for entry in remaining]
    picked: list[tuple[Candidate, int, float]] = []
    for _ in range(min(count, len(remaining))):
        total = sum(weights)
        target = rng.random() * total
        index = 0
        cumulative = weights[0]
        while cumulative < target and index < len(weights) - 1:
            index += 1
            cumulative += weights[index]
        picked.append(remaining.pop(index))
        weights.pop(index)
    return picked


PREFIX_PREFERENCE = 0.9  # "other things equal": within 10 % of the best, the prefix holder wins


def is_full(active: int, slots: int, queue_limit: int) -> bool:
    """Whether a node with ``active`` requests admitted (running + waiting) refuses the next:
    its ``slots`` run, and at most ``queue_limit`` more wait. The server's admission and the
    scheduler's capacity filter both ask this, so the scheduler stops choosing a node exactly
    when the node starts answering ``Busy``."""
    return active - max(slots, 1) >= queue_limit


def choose(
    candidates: Sequence[Candidate],
    ledger: InFlightLedger,
    now: float,
    rng: random.Random,
    *,
    exclude: frozenset[bytes] = frozenset(),
    full_scan_below: int = FULL_SCAN_BELOW,
    choices: int = DEFAULT_CHOICES,
    service: str | None = None,
    prefix: bytes | None = None,
) -> Choice:
    """Pick the node expected to complete the request soonest.

    ``candidates`` are the nodes hosting the service (if ``service`` is given, others are
    ignored). ``exclude`` holds nodes that already refused or failed this request. ``now`` is
    accepted for symmetry with the other pure cores; the estimate depends on it only through
    the ledger and the candidates' gossip times. Raises :class:`NoCapacity` when no node is left.
    ``prefix`` names the request's prompt prefix: a node whose cache holds it is preferred when
    its estimate is within :data:`PREFIX_PREFERENCE` of the best (it skips most of the prefill).
    """
    wanted = service
    pool = [
        candidate
        for candidate in candidates
        if (wanted is None or candidate.service == wanted)
        and candidate.node not in exclude
        and candidate.state in ("alive", "suspect")
    ]
    alive = [candidate for candidate in pool if candidate.state == "alive"]
    if alive:
        pool = alive
    name = wanted if wanted is not None else (candidates[0].service if candidates else "?")
    if not pool:
        raise NoCapacity(f"no live node can take a request for {name!r}")

    prior = _prior_ms(pool, ledger)
    capable: list[tuple[Candidate, int, float]] = []
    for candidate in pool:
        ahead = queue_ahead(candidate, ledger)
        if is_full(ahead, candidate.slots, candidate.queue_limit):
            continue
        capable.append((candidate, ahead, service_time_ms(candidate, ledger, prior)))
    if not capable:
        raise NoCapacity(f"every node serving {name!r} has a full queue")

    if len(capable) < full_scan_below:
        sampled = capable
    else:
        local = [entry for entry in capable if entry[0].is_local]
        remote = [entry for entry in capable if not entry[0].is_local]
        # The local node's load is known exactly, so it is always one of the d choices.
        sampled = local[:1] + _sample_weighted(remote, max(choices, 1) - len(local[:1]), rng)
    best: Choice | None = None
    for candidate, ahead, service_ms in sampled:
        estimate = estimate_completion_ms(ahead, candidate.slots, service_ms, candidate.rtt_ms)
        if prefix is not None and prefix in candidate.prefixes:
            estimate *= PREFIX_PREFERENCE
        if best is None or estimate < best.estimate_ms:
            best = Choice(candidate.node, estimate)
    assert best is not None  # sampled is never empty: capable is not
    return best
