"""Reports of a node for `llmnode status` and `llmnode peers` (no I/O): plain dicts, JSON-ready."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

from llmnode._version import __version__
from llmnode.bus.identity import node_id_to_text

if TYPE_CHECKING:
    from llmnode.nodes.mesh.view import MeshView
    from llmnode.nodes.node import Node
    from llmnode.schemas.state import NodeState


def status_report(node: Node) -> dict[str, object]:
    """What `llmnode status` shows: this node, its services, load and counters."""
    families = node.metrics.read()
    return {
        "node_id": node.node_text,
        "name": node.name,
        "version": __version__,
        "uptime_s": round(time.time() - node.started_at, 1),
        "address": node.bus.address,
        "control": node.control.address,
        "http": node.http_address,
        "incarnation": node.membership.incarnation if node.membership else 0,
        "members_alive": int(families["members"][("alive",)]),
        "resources": node.resources_now,
        "services": node.services_info(),
        "counters": counters(families),
        "process": process_report(),
    }


def process_report() -> dict[str, int]:
    """What could grow inside the node process (benchmarks/soak.py fits a slope to each):
    asyncio tasks, and the blocks Python's allocator holds (RSS minus these is native memory)."""
    return {"tasks": len(asyncio.all_tasks()), "python_blocks": sys.getallocatedblocks()}


def counters(families: dict[str, dict[tuple[str, ...], float]]) -> dict[str, object]:
    """The counters `llmnode status` shows, read from the node's metrics registry."""
    rejections: Counter[str] = Counter()
    by_source: dict[str, dict[str, int]] = {}
    for (source, reason), number in families["rejections"].items():
        rejections[reason] += int(number)
        by_source.setdefault(source, {})[reason] = int(number)
    routed = Counter({key[0]: int(value) for key, value in families["routed_requests"].items()})
    served = Counter({key[0]: int(value) for key, value in families["served_requests"].items()})
    return {
        "rejections": dict(rejections),
        "rejections_by_source": by_source,
        "requests": {
            "entered": routed["requests"],
            "in_flight": int(families["requests_in_flight"][()]),
            "served": served["served"],
            "rerouted": routed["rerouted"],
            "retried": routed["retried"],
            "resumed": routed["resumed"],
            "hedged": routed["hedged"],
            "failed": routed["failed"],
            "cancelled": routed["cancelled"],
            "refused_busy": served["busy"],
            "access_denied": served["access_denied"],
        },
        "bus": {key[0]: int(value) for key, value in families["bus_frames"].items()},
        # Of those, the membership frames (SWIM, gossip, push-pull): what the simulation models.
        "gossip_bytes": {key[0]: int(value) for key, value in families["gossip_bytes"].items()},
        "members": {key[0]: int(value) for key, value in families["members"].items()},
    }


def peers_report(node: Node) -> list[dict[str, object]]:
    """What `llmnode peers` shows: one row per member, liveness from membership, load as in
    :func:`peer_load`, everything else from its state record. Reading it changes nothing."""
    now = time.time()
    members = node.membership.members() if node.membership is not None else []
    rows: list[dict[str, object]] = []
    for member in members:
        peer = node.view.peers.get(member.node)
        record = peer.record if peer is not None else None
        gpus = record.resources.gpus if record else []
        own = member.node == node.node_id
        rows.append(
            {
                "node_id": node_id_to_text(member.node),
                "name": record.name if record else "",
                "state": member.state,
                "incarnation": member.incarnation,
                "address": member.address,
                "self": own,
                "gpus": [gpu.name for gpu in gpus],
                "free_memory_mb": sum(gpu.memory_free_mb for gpu in gpus)
                if gpus
                else (record.resources.ram_free_mb if record else 0),
                "cpu_cores": record.resources.cpu_cores if record else 0,
                "services": record.services if record else [],
                "load": member_load(node, member.node, record, now),
                "models_stored": record.models_stored if record else [],
                "model_memory_mb": record.model_memory_mb if record else 0,
                "last_heard_s": 0.0
                if own
                else round(max(0.0, now - member.last_heard), 2)
                if member.last_heard
                else None,
            }
        )
    return rows


def member_load(
    node: Node, member: bytes, record: NodeState | None, now: float
) -> dict[str, dict[str, object]]:
    """A member's load per service as every view shows it (`peers`, the dashboard, `top`):
    this node's own now, a peer's as in :func:`peer_load`."""
    if member == node.node_id:
        return own_load(node)
    return peer_load(node.view, member, record, now)


def own_load(node: Node) -> dict[str, dict[str, object]]:
    """This node's services' load now."""
    return {
        info.name: {
            "queue": info.load.queue_depth,
            "in_flight": info.load.in_flight,
            "service_ms": round(info.load.ewma_service_ms, 1),
            "age_s": 0.0,
        }
        for info in node.services_info()
    }


def peer_load(
    view: MeshView, peer: bytes, record: NodeState | None, now: float
) -> dict[str, dict[str, object]]:
    """A peer's load per service, as fresh as this node knows it. Load is not gossiped (the
    record's queue and in-flight counts are those of when it was signed, possibly long ago):
    it comes from the replies of requests sent there and from load reports, with its age.
    Never heard: queue, in-flight and age are None (not known), and the service time is the
    record's (as of when it was signed)."""
    rows: dict[str, dict[str, object]] = {}
    for info in record.services if record else []:
        seen = view.fresh_load.get((peer, info.name))
        rows[info.name] = {
            "queue": None if seen is None else seen.queue_depth,
            "in_flight": None if seen is None else seen.in_flight,
            "service_ms": round(
                (seen.service_ms if seen is not None else 0.0) or info.load.ewma_service_ms, 1
            ),
            "age_s": None if seen is None else round(max(0.0, now - seen.at), 1),
        }
    return rows
