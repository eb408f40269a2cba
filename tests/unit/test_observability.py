"""The node's measurements and what the views make of them: per-model timings, mesh families,
the events between two snapshots, and the Grafana/Prometheus files that name the metrics.

Real nodes on the memory transport where a node is needed.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from llmnode.metrics import Metrics
from llmnode.nodes.mesh import overview
from llmnode.nodes.requests.measures import RequestMeasures
from tests.support.inprocess import EchoService, in_process_mesh

pytestmark = pytest.mark.timeout(60)
REPOSITORY = Path(__file__).resolve().parents[2]
MONITORING = REPOSITORY / "docker" / "monitoring"


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }


def test_a_model_request_records_first_token_gaps_tokens_and_outcome() -> None:
    metrics = Metrics(process=False)
    measures = RequestMeasures(metrics)
    timing = measures.model_request("m")
    for chunk in (2, 0, 3, 1):  # six tokens in three chunks (an empty chunk counts nothing)
        timing.token(chunk)
    timing.finish("length", prompt_tokens=7, generated=6)
    measures.model_request("m").finish("deadline")  # failed before any token
    samples = _samples(metrics)
    model = (("model", "m"),)
    assert samples["llmnode_time_to_first_token_seconds_count", model] == 1
    assert samples["llmnode_inter_token_latency_seconds_count", model] == 5
    assert samples["llmnode_e2e_request_latency_seconds_count", model] == 2
    assert samples["llmnode_prompt_tokens_total", model] == 7
    assert samples["llmnode_generation_tokens_total", model] == 6
    assert samples["llmnode_request_generation_tokens_sum", model] == 6
    assert samples["llmnode_request_generation_tokens_count", model] == 1
    assert samples["llmnode_request_success_total", (("finished_reason", "length"), *model)] == 1
    assert samples["llmnode_request_success_total", (("finished_reason", "deadline"), *model)] == 1
    figures = overview.histograms(metrics)["m"]
    assert figures["time_to_first_token_seconds_count"] == 1
    assert figures["requests_length"] == figures["requests_deadline"] == 1


async def test_queue_time_probe_rtt_gossip_and_declared_deaths_are_measured(
    tmp_path: Path,
) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start([])
        server = await mesh.start([EchoService()])
        victim = await mesh.start([])
        await mesh.converge("echo")
        for _ in range(4):
            assert await entry.router.call("echo", "request", b"x", timeout=10) == b"x"
        served = _samples(server.metrics)
        # an agent's request/reply stays free of histogram work: only models' queues are timed
        assert ("llmnode_request_queue_time_seconds_count", (("service", "echo"),)) not in served
        assert server.server.measures is not None
        server.server.measures.time_queue_of("echo")
        assert await entry.router.call("echo", "request", b"x", timeout=10) == b"x"
        timed = _samples(server.metrics)
        assert timed["llmnode_request_queue_time_seconds_count", (("service", "echo"),)] == 1
        await mesh.crash(victim)
        for _ in range(500):
            if entry.metrics.read()["members"][("dead",)] == 1:
                break
            await asyncio.sleep(0.02)
        declared = [node.metrics.read()["failures_declared"] for node in (entry, server)]
        assert sum(counts.get(("dead",), 0) for counts in declared) >= 1
        assert sum(counts.get(("suspect",), 0) for counts in declared) >= 1
        samples = _samples(entry.metrics)
        assert samples["llmnode_probe_rtt_seconds_count", ()] > 0
        sent = samples["llmnode_gossip_messages_total", (("direction", "sent"),)]
        assert 0 < sent <= samples["llmnode_bus_frames_total", (("event", "sent"),)]
        assert samples["llmnode_gossip_bytes_total", (("direction", "sent"),)] > sent
        assert samples["llmnode_mesh_keys", ()] == 1
        slots = _samples(server.metrics)["llmnode_service_slots", (("service", "echo"),)]
        assert slots == 1


def _snapshot(at: float, states: dict[str, str], rerouted: int, rejections: int) -> dict[str, Any]:
    return {
        "time": at,
        "members": [
            {"node_id": name, "name": name, "state": state} for name, state in states.items()
        ],
        "counters": {
            "requests": {"rerouted": rerouted, "resumed": 0, "retried": 1},
            "rejections": {"bad_mac": rejections},
        },
    }


def test_events_between_two_snapshots_name_joins_deaths_reroutes_and_bursts() -> None:
    before = _snapshot(1.0, {"a": "alive", "b": "alive"}, rerouted=2, rejections=1)
    after = _snapshot(2.0, {"a": "alive", "b": "dead", "c": "alive"}, rerouted=5, rejections=9)
    found = {(event["kind"], event["text"]) for event in overview.events(before, after)}
    assert found == {
        ("join", "c joined"),
        ("dead", "b is dead"),
        ("re-route", "3 request(s): re-route"),
        ("rejections", "8 rejections"),
    }
    assert overview.events(None, after) == []
    quiet = _snapshot(3.0, {"a": "alive", "b": "dead", "c": "alive"}, rerouted=5, rejections=10)
    assert overview.events(after, quiet) == []


async def test_the_grafana_dashboard_and_prometheus_config_name_what_nodes_serve(
    tmp_path: Path,
) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        node = await mesh.start([EchoService()])
        families = {family.name for family in node.metrics.registry.collect()}
    dashboard = json.loads((MONITORING / "grafana" / "llmnode.json").read_text())
    named = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            named |= set(re.findall(r"llmnode_[a-z0-9_]+", target["expr"]))
    assert named, "the dashboard queries nothing"
    suffixes = ("_total", "_bucket")
    unknown = {
        name for name in named
        if name not in families and not any(
            name.endswith(suffix) and name.removesuffix(suffix) in families for suffix in suffixes
        )
    }  # fmt: skip
    assert unknown == set()
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["http_sd_configs"]
    assert discovery["url"].endswith("/metrics/targets")


async def test_metrics_targets_and_the_dashboard_data_need_the_api_key_off_loopback(
    tmp_path: Path,
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from llmnode.http import dashboard, metrics_routes
    from llmnode.http.app import build_app, key_hash
    from llmnode.http.node_gateway import NodeGateway

    async with in_process_mesh(tmp_path) as mesh:
        node = await mesh.start([EchoService()])
        node.api_keys = [key_hash("sk-llmnode-right")]
        node.state_changed()
        gateway = NodeGateway(node)
        for _ in range(200):
            if gateway.api_key_hashes():
                break
            await asyncio.sleep(0.02)

        def extend(app: Any) -> None:
            metrics_routes.install(node, app)
            dashboard.install(node, app)

        app = build_app(gateway, loopback=False, extend=extend)
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            page = await http.get("/")
            assert page.status == 200  # the page holds no data
            assert "<script>" in await page.text()
            for path in ("/metrics", "/metrics/targets", "/dashboard/snapshot"):
                assert (await http.get(path)).status == 401, path
                wrong = await http.get(path, headers={"Authorization": "Bearer sk-llmnode-no"})
                assert wrong.status == 401, path
                right = await http.get(path, headers={"Authorization": "Bearer sk-llmnode-right"})
                assert right.status == 200, path
        read = node.metrics.read()["rejections"]
        assert read[("http", "missing_api_key")] == 3
        assert read[("http", "invalid_api_key")] == 3


async def test_the_dashboard_shows_the_load_that_peers_shows(tmp_path: Path) -> None:
    """Records do not carry live load (issue 18): the dashboard and `llmnode top` showed the
    record's snapshot from when it was signed while `llmnode peers` showed the load last seen on
    replies, or "not known". All three now show the same numbers."""
    from llmnode.nodes.mesh import reports

    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start()
        await mesh.start([EchoService(delay=0.05, slots=2)])
        await mesh.start([EchoService(delay=0.05, slots=2)])
        await mesh.converge("echo")

        def same_numbers() -> int:
            peers = {row["node_id"]: row for row in reports.peers_report(entry)}
            compared = 0
            for row in overview.members(entry):
                for service, load in row["load"].items():
                    seen = peers[row["node_id"]]["load"][service]  # type: ignore[index]
                    assert (load["running"], load["waiting"]) == (
                        seen["in_flight"],
                        seen["queue"],
                    ), (row["name"], service)
                    compared += 1
            return compared

        assert same_numbers() == 2  # nothing heard yet from either: "not known" on both
        calls = [entry.router.call("echo", "request", b"x", timeout=10) for _ in range(12)]
        running = asyncio.gather(*calls)
        await asyncio.sleep(0.08)
        assert same_numbers() == 2  # mid-load
        await running
        assert same_numbers() == 2
