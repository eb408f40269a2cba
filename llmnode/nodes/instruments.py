"""What a node counts, registered once in its metrics registry (no I/O).

Each family below reads a counter its owner keeps (the bus, the control socket, membership, the
router, the request server, the node itself); :mod:`llmnode.metrics` explains why counting stays
in the owners. ``llmnode status`` and ``GET /metrics`` both read the registry this fills.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, get_args

from llmnode.metrics import Metrics
from llmnode.nodes.requests.measures import Measured, RequestMeasures
from llmnode.schemas.membership import MembershipMessage

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


_GOSSIP = frozenset(kind.__name__ for kind in get_args(MembershipMessage))
_PROBE_RTT_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_MB = 1024 * 1024


def _gossip(node: Node, field: int) -> dict[str, int]:
    """Membership (SWIM and gossip) frames (``field`` 0) or bytes (1) out of the bus's counts
    per message type, by direction."""
    totals: Counter[str] = Counter({"sent": 0, "received": 0})
    for (direction, kind), counts in node.bus.traffic().items():
        if kind in _GOSSIP:
            totals[direction] += counts[field]
    return dict(totals)


def _loads(node: Node, field: str) -> dict[str, float]:
    """One figure of every hosted service's live load (what the state record advertises)."""
    return {info.name: float(getattr(info.load, field)) for info in node.services_info()}


def _gpus(node: Node, field: str, scale: float) -> dict[tuple[str, str], float]:
    """One figure per GPU, from the resources probe (NVML, where present; none without)."""
    return {
        (str(gpu.index), gpu.name): getattr(gpu, field) * scale for gpu in node.resources_now.gpus
    }


def _mesh(node: Node, metrics: Metrics) -> None:
    """Families of the mesh itself: failure detection, gossip traffic, keys, resources."""
    metrics.counter(
        "failures_declared",
        "Members this node itself declared suspect or dead (not learned from gossip).",
        lambda: dict(node.membership.declared) if node.membership else {},
        labels=("state",),
    )
    rtt = metrics.histogram(
        "probe_rtt_seconds", "Round-trip time of direct membership probes (Ping to Ack).",
        (), _PROBE_RTT_S,
    )  # fmt: skip
    if node.config.metrics:
        node.observe_probe_rtt = rtt.observe
    node.bus.count_traffic = node.config.metrics
    metrics.counter(
        "gossip_messages", "Membership messages (probes, acks, gossip) through the bus.",
        lambda: _gossip(node, 0), labels=("direction",),
    )  # fmt: skip
    metrics.counter(
        "gossip_bytes", "Bytes of sealed membership frames through the bus.",
        lambda: _gossip(node, 1), labels=("direction",),
    )  # fmt: skip
    metrics.gauge(
        "mesh_keys", "Mesh keys in this node's live key ring.", lambda: len(node.bus.keyring.keys)
    )
    metrics.gauge(
        "gpu_memory_used_bytes", "GPU memory in use, per GPU (NVML; absent without one).",
        lambda: _gpus(node, "memory_used_mb", _MB), labels=("gpu", "name"),
    )  # fmt: skip
    metrics.gauge(
        "gpu_memory_total_bytes", "GPU memory, per GPU (NVML).",
        lambda: _gpus(node, "memory_total_mb", _MB), labels=("gpu", "name"),
    )  # fmt: skip
    metrics.gauge(
        "gpu_utilization_ratio", "GPU utilisation, 0 to 1, per GPU (NVML).",
        lambda: _gpus(node, "utilization_pct", 0.01), labels=("gpu", "name"),
    )  # fmt: skip
    metrics.gauge(
        "ram_free_bytes", "Free RAM of this machine.",
        lambda: node.resources_now.ram_free_mb * _MB,
    )  # fmt: skip


def _services(node: Node, metrics: Metrics) -> None:
    """Live load of each hosted service, as its state record advertises it."""
    metrics.gauge(
        "num_requests_running", "Requests a service is running now, per service.",
        lambda: _loads(node, "in_flight"), labels=("service",),
    )  # fmt: skip
    metrics.gauge(
        "num_requests_waiting", "Requests waiting for a slot of a service, per service.",
        lambda: _loads(node, "queue_depth"), labels=("service",),
    )  # fmt: skip
    metrics.gauge(
        "service_slots", "Requests a service runs at once (its slots), per service.",
        lambda: _loads(node, "slots"), labels=("service",),
    )  # fmt: skip
    measures = RequestMeasures(metrics)
    if not node.config.metrics:  # the families stay, empty: only their cost is measured
        return
    node.server.measures = measures
    for name, service in node.server.services.items():
        if isinstance(service, Measured):
            service.measure_with(measures)
            measures.time_queue_of(name)


def instrument(node: Node) -> Metrics:
    """The node's registry with every counter the node core keeps, and its histograms (handed
    to the request server, the models it hosts and membership, which observe them)."""
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
    _mesh(node, metrics)
    _services(node, metrics)
    return metrics
