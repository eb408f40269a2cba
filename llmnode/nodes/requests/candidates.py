"""Which nodes may serve a request, as the scheduler sees them (pure, no I/O, no clock reads).

The one candidate filter: the router and ``benchmarks/scheduler.py`` both build the scheduler's
input here, from the view's gossiped records, the load piggybacked on replies (fresher than
gossip) and, for this node, its exact live load.
"""

from __future__ import annotations

from collections.abc import Callable

from llmnode.nodes.mesh.view import MeshView
from llmnode.nodes.requests.scheduler import Candidate
from llmnode.schemas.state import ServiceLoad

LocalLoad = Callable[[str], ServiceLoad | None]


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
    result: list[Candidate] = []
    for peer, info in view.hosts(service):
        if only is not None and peer.node != only:
            continue
        load = info.load
        queue_depth, in_flight, measured = load.queue_depth, load.in_flight, peer.record_time
        fresh = view.fresh_load.get((peer.node, service))
        if fresh is not None and fresh[2] > measured:
            queue_depth, in_flight, measured = fresh
        is_local = peer.node == view.self_id
        if is_local and local_load is not None:
            live = local_load(service)  # our own load: exact, now (not our last record's)
            if live is not None:
                load = live
                queue_depth, in_flight, measured = live.queue_depth, live.in_flight, now
        result.append(
            Candidate(
                node=peer.node,
                service=service,
                state="alive" if view.state_of(peer.node) == "alive" else "suspect",
                slots=max(1, load.slots),
                queue_limit=load.queue_limit,
                gossip_queue_depth=queue_depth,
                gossip_in_flight=in_flight,
                ewma_service_ms=load.ewma_service_ms,
                rtt_ms=0.0 if is_local else view.rtt_ms.get(peer.node, 1.0),
                gossip_time=measured,
                is_local=is_local,
                prefixes=frozenset(load.prefixes),
            )
        )
    return result
