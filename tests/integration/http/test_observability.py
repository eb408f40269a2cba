"""Seeing the mesh: GET /metrics counts exactly what was sent, `llmnode status`, /metrics, the
dashboard's data and `llmnode top` agree, and the dashboard works in a real headless browser.

Three real `llmnode start` processes on 127.0.0.1, each with its HTTP server: "models" serves the
chat model, "front" and "edge" serve nothing (their requests cross the bus).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from llmnode.agents.models import ModelStore, ensure_models
from llmnode.cli.top import render
from llmnode.nodes.membership import MembershipConfig
from llmnode.nodes.membership.simulation import detection_bound
from tests.integration.http.conftest import CHAT_MODEL, HttpNode, start_http_node, store_root
from tests.support.mesh import LocalMesh, llmnode_command, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.models]

PROBE_INTERVAL = 0.2
QUESTION = [{"role": "user", "content": "Name a colour."}]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: HttpNode) -> Samples:
    """/metrics of ``node``, parsed with the Prometheus client's own text parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(
        number
        for (sample, sample_labels), number in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def client(node: HttpNode) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=120)


def chat(node: HttpNode, stream: bool) -> tuple[int, int]:
    """One chat through ``node``; its (prompt, completion) tokens as the API reported them."""
    if not stream:
        reply = client(node).chat.completions.create(
            model=CHAT_MODEL,
            messages=QUESTION,
            max_tokens=6,  # type: ignore[arg-type]
        )
        assert reply.usage is not None
        return reply.usage.prompt_tokens, reply.usage.completion_tokens
    usage = None
    for chunk in client(node).chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, max_tokens=6, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ):  # fmt: skip
        usage = chunk.usage or usage
    assert usage is not None
    return usage.prompt_tokens, usage.completion_tokens


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, HttpNode]]:
    ensure_models(ModelStore(store_root()), [CHAT_MODEL])
    mesh = LocalMesh(tmp_path_factory.mktemp("watched"), probe_interval=PROBE_INTERVAL)
    try:
        nodes = {
            "models": start_http_node(mesh, "models", [CHAT_MODEL]),
            "front": start_http_node(mesh, "front", []),
            "edge": start_http_node(mesh, "edge", []),
        }
        mesh.wait_converged()
        for node in nodes.values():
            wait_for(lambda node=node: CHAT_MODEL in node.model_ids(), timeout=180,  # type: ignore[misc]
                     what="the chat model listed")  # fmt: skip
        yield nodes
    finally:
        mesh.close()


def test_metrics_of_three_nodes_under_load_count_exactly_the_requests_sent(
    watched: dict[str, HttpNode],
) -> None:
    front, edge, models = watched["front"], watched["edge"], watched["models"]
    before = {name: scrape(node) for name, node in watched.items()}
    plan = [(front, False)] * 4 + [(front, True)] * 2 + [(edge, False)] * 3 + [(edge, True)] * 1
    with ThreadPoolExecutor(len(plan)) as pool:  # all at once: the model's slots fill, some wait
        usages = list(pool.map(lambda step: chat(*step), plan))
    for _ in range(3):  # refused by the HTTP face: counted as http rejections
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{front.port}/v1/nothing-here", timeout=10)
    after = {name: scrape(node) for name, node in watched.items()}

    def added(name: str, metric: str, **labels: str) -> float:
        return total(after[name], metric, **labels) - total(before[name], metric, **labels)

    assert added("front", "llmnode_routed_requests_total", event="requests") == 6
    assert added("edge", "llmnode_routed_requests_total", event="requests") == 4
    assert added("models", "llmnode_routed_requests_total", event="requests") == 0
    assert added("models", "llmnode_served_requests_total", outcome="served") == 10
    model = {"model": CHAT_MODEL}
    assert added("models", "llmnode_request_success_total", **model) == 10
    assert added("models", "llmnode_time_to_first_token_seconds_count", **model) == 10
    assert added("models", "llmnode_e2e_request_latency_seconds_count", **model) == 10
    assert added("models", "llmnode_request_queue_time_seconds_count") == 10
    prompt = sum(usage[0] for usage in usages)
    generated = sum(usage[1] for usage in usages)
    assert added("models", "llmnode_prompt_tokens_total", **model) == prompt
    assert added("models", "llmnode_generation_tokens_total", **model) == generated
    assert added("models", "llmnode_request_generation_tokens_sum", **model) == generated
    # every token after a request's first is one inter-token gap
    assert added("models", "llmnode_inter_token_latency_seconds_count", **model) == generated - 10
    assert added("front", "llmnode_rejections_total", source="http", reason="http_404") == 3
    for name in watched:
        assert value(after[name], "llmnode_members", state="alive") == 3
        assert value(after[name], "llmnode_gossip_messages_total", direction="sent") > 0
        assert value(after[name], "llmnode_mesh_keys") == 1
    assert value(after["models"], "llmnode_service_slots", service=f"model:{CHAT_MODEL}") >= 1
    assert value(after["models"], "llmnode_process_resident_memory_bytes") > 0
    assert models.port  # the serving node was scraped like the others


def _get(node: HttpNode, path: str) -> Any:
    return node.get(path)


def test_status_metrics_dashboard_and_top_show_the_same_numbers(
    watched: dict[str, HttpNode],
) -> None:
    for node in (watched["front"], watched["models"]):
        chat(watched["front"], stream=False)  # something to count on both
        status = node.process.status()
        assert status is not None
        samples = scrape(node)
        snapshot = _get(node, "/dashboard/snapshot")
        screen = Console(record=True, width=200)
        screen.print(render(snapshot))
        shown = screen.export_text()
        requests = status["counters"]["requests"]
        assert snapshot["counters"]["requests"] == requests
        assert (
            value(samples, "llmnode_routed_requests_total", event="requests") == requests["entered"]
        )
        assert (
            value(samples, "llmnode_served_requests_total", outcome="served") == requests["served"]
        )
        assert f"entered {requests['entered']} " in shown
        assert f"served {requests['served']} " in shown
        assert status["counters"]["members"]["alive"] == 3
        assert sum(row["state"] == "alive" for row in snapshot["members"]) == 3
        assert "3/3 members alive" in shown
        if node is watched["models"]:
            figures = snapshot["models"][CHAT_MODEL]
            count = value(samples, "llmnode_e2e_request_latency_seconds_count", model=CHAT_MODEL)
            assert figures["e2e_request_latency_seconds_count"] == count
            tokens = value(samples, "llmnode_generation_tokens_total", model=CHAT_MODEL)
            assert figures["request_generation_tokens_sum"] == tokens
            row = next(line for line in shown.splitlines() if line.startswith("│ " + CHAT_MODEL))
            cells = [cell.strip() for cell in row.split("│")[1:-1]]
            assert cells[1] == str(int(count))  # requests
            assert cells[4] == str(int(tokens))  # tokens


def test_top_draws_the_mesh_live_and_ctrl_c_leaves_with_one_line(
    watched: dict[str, HttpNode],
) -> None:
    front = watched["front"].process
    top = subprocess.Popen(
        llmnode_command("top", "--data-dir", str(front.data_dir), "--interval", "0.3"),
        env=front.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(6)  # it imports, asks the control socket, and draws a few frames
    top.send_signal(signal.SIGINT)
    out, err = top.communicate(timeout=20)
    assert top.returncode == 0, err
    assert "llmnode top  front" in out
    assert out.rstrip().splitlines()[-1] == "top: stopped"
    assert "Traceback" not in out + err


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (scripts/install installs it as root)")
    return path


def test_dashboard_in_a_headless_browser_is_live_sees_a_death_and_chats(
    watched: dict[str, HttpNode], tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    front = watched["front"]
    bound = detection_bound(MembershipConfig().scaled(1.0 / PROBE_INTERVAL), 3)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{front.port}/")
            page.wait_for_function(
                "document.querySelectorAll('#members td.state-alive').length === 3", timeout=15000
            )
            for name in ("models", "front", "edge"):
                assert page.locator(f'#members tr[data-name="{name}"] .state').inner_text() == (
                    "alive"
                )
            # front serves no model: the chart comes from the state records of the mesh
            page.wait_for_selector(f'#models [data-model="{CHAT_MODEL}"]', timeout=10000)
            entered = int(page.locator("#counter-entered").inner_text())
            chat(front, stream=False)
            chat(front, stream=True)
            page.wait_for_function(
                f"Number(document.getElementById('counter-entered').textContent) === {entered + 2}",
                timeout=10000,
            )

            page.select_option("#chat-model", CHAT_MODEL)
            page.fill("#chat-input", "What is the capital of France?")
            page.click("#chat-send")
            page.wait_for_function(
                "document.getElementById('chat-output').dataset.done === 'yes'", timeout=120000
            )
            output = page.locator("#chat-output")
            assert output.inner_text().strip(), "the chat got no answer"
            assert not output.inner_text().startswith("error")
            assert int(output.get_attribute("data-pieces") or 0) >= 2, "the answer was not streamed"

            watched["edge"].process.kill()  # kill -9
            page.wait_for_function(
                "document.querySelector('#members tr[data-name=\"edge\"] .state')"
                ".textContent === 'dead'",
                timeout=1000 * (bound + 2 * 1.0 + 3.0),  # detection, one refresh, slack
            )
            assert page.locator('#events li[data-kind="dead"]').count() >= 1
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert errors == [], errors
        finally:
            browser.close()


def test_service_discovery_lists_exactly_the_live_nodes_before_and_after_one_leaves(
    tmp_path: Path,
) -> None:
    mesh = LocalMesh(tmp_path, probe_interval=PROBE_INTERVAL)
    try:
        nodes = [start_http_node(mesh, name, []) for name in ("a", "b", "c")]
        mesh.wait_converged()

        def listed(node: HttpNode) -> set[str]:
            groups = _get(node, "/metrics/targets")
            return {target for group in groups for target in group["targets"]}

        everyone = {f"127.0.0.1:{node.port}" for node in nodes}
        for node in nodes:
            wait_for(lambda node=node: listed(node) == everyone, timeout=20,  # type: ignore[misc]
                     what="every node listed")  # fmt: skip
        groups = _get(nodes[0], "/metrics/targets")
        assert {group["labels"]["node"] for group in groups} == {"a", "b", "c"}
        assert nodes[2].process.stop() == 0  # leaves gracefully
        remaining = everyone - {f"127.0.0.1:{nodes[2].port}"}
        for node in nodes[:2]:
            wait_for(lambda node=node: listed(node) == remaining, timeout=20,  # type: ignore[misc]
                     what="the node that left unlisted")  # fmt: skip
            assert json.dumps(_get(node, "/metrics/targets")).count("targets") == 2
    finally:
        mesh.close()
