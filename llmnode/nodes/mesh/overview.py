"""What the live views show (the dashboard, ``llmnode top``): one snapshot of the mesh as this
node sees it, and the events between two snapshots (no I/O).

Every number comes from where ``llmnode status`` and ``GET /metrics`` read it: counters from the
node's metrics registry (through :func:`reports.counters`), members and their load from the
membership table and the signed state records, latencies from the registry's histograms. The
views add nothing of their own, so the four of them agree.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmnode.bus.identity import node_id_to_text
from llmnode.metrics import PREFIX
from llmnode.nodes.mesh import reports
from llmnode.nodes.mesh.view import LIVE

if TYPE_CHECKING:
    from llmnode.metrics import Metrics
    from llmnode.nodes.node import Node

#: Histograms a snapshot carries (count and sum per model): name without the prefix.
HISTOGRAMS = (
    "time_to_first_token_seconds",
    "inter_token_latency_seconds",
    "e2e_request_latency_seconds",
    "request_generation_tokens",
    "request_prompt_tokens",
)
#: A rejection count rising by this much between two snapshots is reported as a burst.
REJECTION_BURST = 5


def snapshot(node: Node) -> dict[str, Any]:
    """The mesh now, as this node sees it: JSON-ready."""
    return {
        "time": time.time(),
        "node": {
            "name": node.name,
            "node_id": node.node_text,
            "http": node.http_address,
            "uptime_s": round(time.time() - node.started_at, 1),
        },
        "members": members(node),
        "counters": reports.counters(node.metrics.read()),
        "models": histograms(node.metrics),
    }


def members(node: Node) -> list[dict[str, Any]]:
    """Every member: its state from membership; name, resources and services from its record."""
    rows = []
    now = time.time()
    listed = node.membership.members() if node.membership is not None else []
    for member in listed:
        peer = node.view.peers.get(member.node)
        record = peer.record if peer is not None else None
        row: dict[str, Any] = {
            "node_id": node_id_to_text(member.node),
            "name": record.name if record else node_id_to_text(member.node)[:8],
            "state": member.state,
            "self": member.node == node.node_id,
            "address": member.address,
            "http": record.http if record else "",
            "models": [],
            "agents": [],
            "load": {},
        }
        if record is not None:
            res = record.resources
            row["cpu_cores"] = res.cpu_cores
            row["ram_total_mb"], row["ram_free_mb"] = res.ram_total_mb, res.ram_free_mb
            row["gpus"] = [
                {"name": gpu.name, "total_mb": gpu.memory_total_mb, "free_mb": gpu.memory_free_mb,
                 "util_pct": gpu.utilization_pct}
                for gpu in res.gpus
            ]  # fmt: skip
            # Running and waiting as `llmnode peers` shows them (None: not known); records
            # carry no live load.
            live = reports.member_load(node, member.node, record, now)
            for info in record.services:
                kind = "models" if info.kind == "model" else "agents"
                row[kind].append(info.name.removeprefix("model:"))
                seen = live.get(info.name, {})
                row["load"][info.name] = {
                    "slots": info.load.slots, "running": seen.get("in_flight"),
                    "waiting": seen.get("queue"), "age_s": seen.get("age_s"),
                    "served": info.load.served, "tokens_per_s": info.load.tokens_per_s,
                }  # fmt: skip
        rows.append(row)
    return sorted(rows, key=lambda row: (not row["self"], row["name"]))


def histograms(metrics: Metrics) -> dict[str, dict[str, float]]:
    """Per model, the count and sum of each histogram in :data:`HISTOGRAMS`, and its requests
    by finished_reason: ``{model: {"time_to_first_token_seconds_count": 3.0, ...}}``."""
    wanted = {PREFIX + name for name in HISTOGRAMS}
    models: dict[str, dict[str, float]] = {}
    for family in metrics.registry.collect():
        if family.name not in wanted:
            continue
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None or not sample.name.endswith(("_count", "_sum")):
                continue
            models.setdefault(model, {})[sample.name.removeprefix(PREFIX)] = sample.value
    for (model, reason), number in metrics.read()["request_success"].items():
        models.setdefault(model, {})["requests_" + reason] = number
    return models


def events(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """What changed between two snapshots: members that joined or changed state, and requests
    re-routed, resumed or retried, and bursts of rejections."""
    if before is None:
        return []
    at = after["time"]
    found: list[dict[str, Any]] = []
    old = {row["node_id"]: row for row in before["members"]}
    for row in after["members"]:
        previous = old.get(row["node_id"])
        if previous is None:
            found.append({"time": at, "kind": "join", "text": f"{row['name']} joined"})
        elif previous["state"] != row["state"]:
            state = row["state"]
            found.append({"time": at, "kind": state, "text": f"{row['name']} is {state}"})
    requests_before, requests_after = before["counters"]["requests"], after["counters"]["requests"]
    for key, kind in (("rerouted", "re-route"), ("resumed", "resume"), ("retried", "retry")):
        added = requests_after[key] - requests_before[key]
        if added > 0:
            found.append({"time": at, "kind": kind, "text": f"{added} request(s): {kind}"})
    rejected = sum(after["counters"]["rejections"].values()) - sum(
        before["counters"]["rejections"].values()
    )
    if rejected >= REJECTION_BURST:
        found.append({"time": at, "kind": "rejections", "text": f"{rejected} rejections"})
    return found


def scrape_targets(node: Node) -> list[dict[str, Any]]:
    """Prometheus ``http_sd_configs`` groups: one per live member with an HTTP server, its
    ``HOST:PORT`` as the target and its name and id as labels."""
    groups = []
    for peer in node.view.peers.values():
        record = peer.record
        if record is None or not record.http or node.view.state_of(peer.node) not in LIVE:
            continue
        labels = {"node": record.name, "node_id": record.node_id}
        groups.append({"targets": [record.http], "labels": labels})
    return sorted(groups, key=lambda group: group["labels"]["node"])
