"""Which nodes may serve a request, as the scheduler sees them (pure, no I/O, no clock reads).

The one candidate filter: the router and ``benchmarks/scheduler.py`` both build the scheduler's
input here, from the view's gossiped records, the load learnt from replies and load reports, and,
for this node, its exact live load.

In a small mesh the scheduler looks at every host of the service. In a large one it looks at a
**shortlist** (:func:`shortlist`): this node, when it serves the request, plus ``d - 1`` others
drawn in proportion to their capacity (power-of-d choices, as :func:`choose` samples a large
pool). Drawing comes first, so the cost of a decision does not grow with the mesh (a binary search
in a per-service index rebuilt only when records change), and the caller asks exactly the nodes
it is about to compare for their load when what it knows of them is stale (Sparrow's probes), so
a probe is never spent on a node the choice then ignores.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmnode.errors import NoCapacity
from llmnode.nodes.mesh.view import MeshView, Peer
from llmnode.nodes.requests.scheduler import (
    DEFAULT_CHOICES,
    DEFAULT_SERVICE_MS,
    FULL_SCAN_BELOW,
    Candidate,
    Choice,
    InFlightLedger,
    capacity_weight,
    choose,
    is_full,
    queue_ahead,
)
from llmnode.schemas.state import ServiceInfo, ServiceLoad

LocalLoad = Callable[[str], ServiceLoad | None]
DRAWS_PER_CHOICE = 4  # draws tried per wanted node before falling back to every host


def _candidate(
    view: MeshView, peer: Peer, info: ServiceInfo, now: float, local_load: LocalLoad | None
) -> Candidate:
    """``peer`` as a candidate for ``info``'s service, with the freshest load known."""
    service = info.name
    load = info.load
    queue_depth, in_flight, measured = load.queue_depth, load.in_flight, peer.record_time
    service_ms = load.ewma_service_ms
    fresh = view.fresh_load.get((peer.node, service))
    if fresh is not None and fresh.at > measured:
        queue_depth, in_flight, measured = fresh.queue_depth, fresh.in_flight, fresh.at
        service_ms = fresh.service_ms or service_ms
    is_local = peer.node == view.self_id
    if is_local and local_load is not None:
        live = local_load(service)  # our own load: exact, now (not our last record's)
        if live is not None:
            load = live
            queue_depth, in_flight, measured = live.queue_depth, live.in_flight, now
            service_ms = live.ewma_service_ms
    return Candidate(
        node=peer.node,
        service=service,
        state="alive" if view.state_of(peer.node) == "alive" else "suspect",
        slots=max(1, load.slots),
        queue_limit=load.queue_limit,
        gossip_queue_depth=queue_depth,
        gossip_in_flight=in_flight,
        ewma_service_ms=service_ms,
        rtt_ms=0.0 if is_local else view.rtt_ms.get(peer.node, 1.0),
        gossip_time=measured,
        is_local=is_local,
        prefixes=frozenset(load.prefixes),
    )


def candidates(
    view: MeshView,
    service: str,
    now: float,
    *,
    only: bytes | None = None,
    local_load: LocalLoad | None = None,
) -> list[Candidate]:
    """Every live node advertising ``service`` (only node ``only`` when given), with its load.

    ``queue_limit`` keeps the meaning it has in :class:`ServiceLoad`: waiting requests beyond
    which the node answers ``Busy`` (:func:`~llmnode.nodes.requests.scheduler.is_full`).
    """
    return [
        _candidate(view, peer, info, now, local_load)
        for peer, info in view.hosts(service)
        if only is None or peer.node == only
    ]


def refreshed(
    view: MeshView, chosen: Sequence[Candidate], now: float, local_load: LocalLoad | None = None
) -> list[Candidate]:
    """``chosen`` again, each with the load known now (after a load query answered)."""
    result: list[Candidate] = []
    for candidate in chosen:
        peer = view.peers.get(candidate.node)
        if peer is None or peer.record is None:
            continue  # forgotten meanwhile
        for info in peer.record.services:
            if info.name == candidate.service:
                result.append(_candidate(view, peer, info, now, local_load))
    return result


@dataclass(slots=True)
class _Hosts:
    version: int
    built_at: float
    hosts: list[tuple[Peer, ServiceInfo]]
    cumulative: list[float]  # running sum of capacity weights, for drawing by bisection


INDEX_REFRESH_S = 1.0  # service times learnt from replies reach the weights this often
INDEX_REBUILD_S = 0.1  # and changed records at most this often (a thousand joining at once)


class ServiceIndex:
    """Every node whose record advertises a service, with cumulative capacity weights (slots
    and the freshest service time known: a reply's, a load report's, else the record's).
    Rebuilt every :data:`INDEX_REFRESH_S` for the service times, and sooner (after
    :data:`INDEX_REBUILD_S`) when the view's records changed, so its cost per request does not
    grow with the mesh. A mesh too small for a shortlist is read from the view directly."""

    def __init__(self, view: MeshView) -> None:
        self.view = view
        self._by_service: dict[str, _Hosts] = {}

    def hosts(self, service: str, now: float) -> _Hosts:
        version = self.view.records_version
        entry = self._by_service.get(service)
        if (
            entry is None
            or not 0.0 <= now - entry.built_at <= INDEX_REFRESH_S
            or (entry.version != version and now - entry.built_at > INDEX_REBUILD_S)
        ):
            if len(self._by_service) > 1024:  # services come and go: keep the index bounded
                self._by_service.clear()
            view = self.view
            found = [
                (peer, info)
                for peer in view.peers.values()
                if peer.record is not None
                for info in peer.record.services
                if info.name == service
            ]
            times = [view.current_load(peer, info).ewma_service_ms for peer, info in found]
            known = [value for value in times if value > 0.0]
            prior = sum(known) / len(known) if known else DEFAULT_SERVICE_MS
            weights = (
                capacity_weight(info.load.slots, service_ms or prior)
                for (_, info), service_ms in zip(found, times, strict=True)
            )
            entry = _Hosts(version, now, found, list(itertools.accumulate(weights)))
            self._by_service[service] = entry
        return entry


def shortlist(
    index: ServiceIndex,
    service: str,
    now: float,
    ledger: InFlightLedger,
    rng: random.Random,
    *,
    exclude: frozenset[bytes] = frozenset(),
    only: bytes | None = None,
    local_load: LocalLoad | None = None,
    choices: int = DEFAULT_CHOICES,
) -> list[Candidate]:
    """The candidates to choose among: every host when there are few (or ``only``); else this
    node, when it serves ``service`` with room, plus others drawn by capacity until ``choices``
    live, not excluded, not full ones are found. Drawing gives up after
    :data:`DRAWS_PER_CHOICE` tries per wanted node (most hosts dead or full) and returns every
    host, so a choice is found whenever one exists."""
    view = index.view
    if only is not None:
        return candidates(view, service, now, only=only, local_load=local_load)
    entry = index.hosts(service, now)
    if len(entry.hosts) < FULL_SCAN_BELOW:
        return candidates(view, service, now, local_load=local_load)
    picked: list[Candidate] = []
    seen = set(exclude)
    seen.add(view.self_id)
    own = view.peers.get(view.self_id)
    if own is not None and own.record is not None and view.self_id not in exclude:
        for info in own.record.services:
            if info.name == service:
                local = _candidate(view, own, info, now, local_load)
                if not is_full(queue_ahead(local, ledger), local.slots, local.queue_limit):
                    picked.append(local)
    wanted = max(choices, 1)
    total = entry.cumulative[-1]
    for _ in range(DRAWS_PER_CHOICE * wanted):
        if len(picked) >= wanted:
            return picked
        position = bisect.bisect_right(entry.cumulative, rng.random() * total)
        peer, info = entry.hosts[min(position, len(entry.hosts) - 1)]
        if peer.node in seen or view.state_of(peer.node) != "alive":
            continue
        seen.add(peer.node)
        candidate = _candidate(view, peer, info, now, local_load)
        if not is_full(queue_ahead(candidate, ledger), candidate.slots, candidate.queue_limit):
            picked.append(candidate)
    if len(picked) >= wanted:
        return picked
    return candidates(view, service, now, local_load=local_load)


def pick(
    index: ServiceIndex,
    service: str,
    listed: Sequence[Candidate],
    now: float,
    ledger: InFlightLedger,
    rng: random.Random,
    *,
    exclude: frozenset[bytes] = frozenset(),
    only: bytes | None = None,
    local_load: LocalLoad | None = None,
    prefix: bytes | None = None,
) -> Choice:
    """:func:`choose` among ``listed`` (a :func:`shortlist`, its load refreshed); when all of
    them turned out full or gone, among every host. Raises :class:`NoCapacity` if none is left."""
    try:
        if not listed:
            raise NoCapacity(f"no live node can take a request for {service!r}")
        return choose(listed, ledger, now, rng, exclude=exclude, prefix=prefix)
    except NoCapacity:
        everyone = candidates(index.view, service, now, only=only, local_load=local_load)
        if len(everyone) <= len(listed):
            raise
        return choose(everyone, ledger, now, rng, exclude=exclude, prefix=prefix)


class Chooser:
    """The router's decision steps on its view, ledger, randomness, clock and own load:
    :func:`shortlist`, :func:`refreshed` after a load query, then :func:`pick`."""

    def __init__(
        self,
        index: ServiceIndex,
        ledger: InFlightLedger,
        rng: random.Random,
        clock: Callable[[], float],
        local_load: LocalLoad | None,
    ) -> None:
        self.index, self.ledger, self.rng = index, ledger, rng
        self._clock, self._local_load = clock, local_load

    def shortlist(
        self, service: str, only: bytes | None = None, exclude: frozenset[bytes] = frozenset()
    ) -> list[Candidate]:
        return shortlist(
            self.index, service, self._clock(), self.ledger, self.rng,
            exclude=exclude, only=only, local_load=self._local_load,
        )  # fmt: skip

    def refreshed(self, listed: Sequence[Candidate]) -> list[Candidate]:
        return refreshed(self.index.view, listed, self._clock(), self._local_load)

    def pick(
        self, service: str, listed: Sequence[Candidate], only: bytes | None = None, **options: Any
    ) -> Choice:
        """:func:`pick`; ``options``: ``exclude`` and ``prefix``."""
        return pick(
            self.index, service, listed, self._clock(), self.ledger, self.rng,
            only=only, local_load=self._local_load, **options,
        )  # fmt: skip
