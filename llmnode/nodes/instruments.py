"""What a node counts, registered once in its metrics registry (no I/O).

Each family below reads a counter its owner keeps (the bus, the control socket, membership, the
router, the request server, the node itself); :mod:`llmnode.metrics` explains why counting stays
in the owners. ``llmnode status`` and ``GET /metrics`` both read the registry this fills.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from llmnode.metrics import Metrics

if TYPE_CHECKING:
    from llmnode.nodes.node import Node


def rejections(node: Node) -> dict[tuple[str, str], int]:
    """Bad input refused so far, by (where it was refused, why)."""
    counts: Counter[tuple[str, str]] = Counter()
    for reason, number in node.bus.rejections.items():
        counts["bus", reason] += number
    for reason, number in node.control.rejections.items():
        counts["control", reason] += number
    if node.membership is not None:
        for reason, number in node.membership.rejections.items():
            counts["membership", reason] += number
    counts.update(node.rejections)
    return dict(counts)


def _members(node: Node) -> dict[str, int]:
    states: Counter[str] = Counter({"alive": 0, "suspect": 0, "dead": 0, "left": 0})
    if node.membership is None:
        states["alive"] = 1
    else:
        states.update(member.state for member in node.membership.members())
    return dict(states)


def instrument(node: Node) -> Metrics:
    """The node's registry with every counter the node core keeps."""
    metrics = Metrics()
    metrics.counter(
        "rejections",
        "Bad input refused (frames, connections, control requests, beacons), by where and why.",
        lambda: rejections(node),
        labels=("source", "reason"),
    )
    metrics.counter(
        "routed_requests",
        "Requests that entered the mesh at this node, and what the router did for them.",
        lambda: node.router.counters,
        labels=("event",),
    )
    metrics.counter(
        "served_requests",
        "Requests this node's services were asked to serve, by outcome.",
        lambda: node.server.counters,
        labels=("outcome",),
    )
    metrics.gauge(
        "requests_in_flight",
        "Requests this node's services are serving now.",
        lambda: node.server.in_flight,
    )
    metrics.counter(
        "bus_frames",
        "Frames through the bus, by event (sent, received, send_failed, ...).",
        lambda: node.bus.stats,
        labels=("event",),
    )
    metrics.gauge(
        "members",
        "Members of the mesh this node knows, by state (this node included).",
        lambda: _members(node),
        labels=("state",),
    )
    return metrics
