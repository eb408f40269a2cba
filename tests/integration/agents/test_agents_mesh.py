"""Agents on three real nodes: conversations, one-way sends, topics, access control, handler
errors, SDK-hosted agents, and replicas sharing load through a node failure."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from llmnode.agents.agent import Agent, Context, handler
from llmnode.client.mesh import Mesh, connect
from llmnode.client.sync import connect_sync
from llmnode.errors import AccessDenied, HandlerError, NotRunning, UnknownAgent
from tests.integration.agents.conftest import CLI, Cluster, NodeProcess
from tests.integration.agents.mesh_test_agents import Ping, Pong, Relay

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trio(module_cluster: Cluster) -> dict[str, NodeProcess]:
    nodes = {
        "a": module_cluster.start("a", agents=["Recorder", "Guarded"]),
        "b": module_cluster.start("b", agents=["Recorder", "Worker"]),
        "c": module_cluster.start("c", agents=["Recorder", "Worker"]),
    }
    for node in nodes.values():
        module_cluster.wait_for(node, "recorder", 3)
        module_cluster.wait_for(node, "worker", 2)
    return nodes


async def _received(mesh: Mesh, agent: str) -> list[dict[str, Any]]:
    dump = await mesh.request(agent, {"type": "dump"}, timeout=10)
    received: list[dict[str, Any]] = dump["received"]
    return received


async def _until(condition: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_agents_on_different_nodes_converse_by_request_reply_and_one_way_send(
    trio: dict[str, NodeProcess],
) -> None:
    async with connect(trio["a"].data_dir, name="tester") as mesh:
        pong = await mesh.request(
            "recorder@a", Relay(to="recorder@b", notify="recorder", text="hello"), reply_type=Pong
        )
        assert pong == Pong(
            text="hello",
            node_id=trio["b"].node_id,
            caller="recorder",
            caller_node=trio["a"].node_id,
        )

        async def noted() -> bool:  # the one-way note went to one of the three replicas
            notes = [
                r
                for name in ("a", "b", "c")
                for r in await _received(mesh, f"recorder@{name}")
                if r["kind"] == "note" and r["text"] == "hello" and r["caller"] == "recorder"
            ]
            return len(notes) == 1

        await _until(noted)


async def test_publish_on_one_node_reaches_every_subscriber_exactly_once(
    trio: dict[str, NodeProcess],
) -> None:
    marker = uuid.uuid4().hex
    async with connect(trio["b"].data_dir) as publisher, connect(trio["c"].data_dir) as listener:
        subscription = listener.subscribe("news")
        first = asyncio.ensure_future(anext(subscription))
        await asyncio.sleep(1.0)  # the subscription reaches the mesh through gossip
        await publisher.publish("news", {"type": "headline", "id": marker})

        async def everywhere() -> bool:
            for name in ("a", "b", "c"):
                items = await _received(publisher, f"recorder@{name}")
                if not any(r.get("id") == marker for r in items):
                    return False
            return True

        await _until(everywhere)
        assert (await asyncio.wait_for(first, 10))["id"] == marker
        await asyncio.sleep(1.0)  # any duplicate would have arrived by now
        for name in ("a", "b", "c"):
            items = await _received(publisher, f"recorder@{name}")
            assert sum(1 for r in items if r.get("id") == marker) == 1, name
        await subscription.aclose()


async def test_sdk_subscription_survives_idle_time_past_the_node_client_timeout(
    trio: dict[str, NodeProcess],
) -> None:
    async with connect(trio["a"].data_dir) as publisher, connect(trio["b"].data_dir) as listener:
        subscription = listener.subscribe("alerts")
        first = asyncio.ensure_future(anext(subscription))
        await asyncio.sleep(12.0)  # the node drops clients silent for 10 s
        await publisher.publish("alerts", {"type": "alert", "level": "high"})
        assert (await asyncio.wait_for(first, 10))["level"] == "high"
        await subscription.aclose()


async def test_handler_that_raises_returns_handler_error_and_agent_keeps_serving(
    trio: dict[str, NodeProcess],
) -> None:
    async with connect(trio["a"].data_dir) as mesh:
        with pytest.raises(HandlerError, match="the handler was told to fail") as caught:
            await mesh.request("recorder@b", {"type": "boom"}, timeout=10)
        assert caught.value.remote_type == "ValueError"
        pong = await mesh.request("recorder@b", Ping(text="still here"), reply_type=Pong)
        assert pong.text == "still here"


async def test_caller_not_on_the_allowlist_is_refused_with_access_denied(
    trio: dict[str, NodeProcess],
) -> None:
    async with connect(trio["b"].data_dir) as mesh:
        with pytest.raises(AccessDenied):
            await mesh.request("guarded", {"type": "secret"}, timeout=10)


async def test_request_to_an_unknown_agent_raises_unknown_agent(
    trio: dict[str, NodeProcess],
) -> None:
    async with connect(trio["a"].data_dir) as mesh:
        with pytest.raises(UnknownAgent):
            await mesh.request("nobody-here", {"type": "x"}, timeout=5)


async def test_connect_without_a_running_node_raises_not_running(tmp_path: Path) -> None:
    (tmp_path / "control.address").write_text(f"ipc://{tmp_path / 'control.sock'}")
    (tmp_path / "control.token").write_text("token")
    with pytest.raises(NotRunning, match="llmnode start"):
        async with connect(tmp_path):
            pass


def test_sync_sdk_requests_an_agent_from_plain_code(trio: dict[str, NodeProcess]) -> None:
    with connect_sync(trio["a"].data_dir, name="script") as mesh:
        pong = mesh.request("recorder@c", Ping(text="sync"), reply_type=Pong)
        assert [p["name"] for p in mesh.peers() if p.get("state") == "alive"]
    assert pong.node_id == trio["c"].node_id
    assert pong.caller == "script"


def test_cli_request_prints_the_reply_as_json(trio: dict[str, NodeProcess]) -> None:
    result = subprocess.run(
        [*CLI, "request", "recorder@b", '{"type": "Ping", "text": "from the cli"}',
         "--data-dir", str(trio["a"].data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["text"] == "from the cli"
    assert reply["node_id"] == trio["b"].node_id


def test_cli_request_to_an_unknown_agent_fails_with_one_readable_line(
    trio: dict[str, NodeProcess],
) -> None:
    result = subprocess.run(
        [*CLI, "request", "nobody-here", "{}", "--data-dir", str(trio["a"].data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "nobody-here" in lines[0]
    assert "Traceback" not in result.stderr


class Greeter(Agent):
    name = "sdk-greeter"

    @handler
    async def greet(self, message: Ping, ctx: Context) -> Pong:
        return Pong(
            text=f"hi {message.text}",
            node_id=ctx.node_id,
            caller=ctx.caller,
            caller_node=ctx.caller_node,
        )


async def test_agent_hosted_by_an_sdk_process_serves_requests_from_another_node(
    trio: dict[str, NodeProcess], module_cluster: Cluster
) -> None:
    async with connect(trio["c"].data_dir) as host_mesh, host_mesh.serving(Greeter()):
        await asyncio.to_thread(module_cluster.wait_for, trio["a"], "sdk-greeter", 1)
        async with connect(trio["a"].data_dir, name="asker") as mesh:
            pong = await mesh.request("sdk-greeter", Ping(text="there"), reply_type=Pong)
    assert pong.text == "hi there"
    assert pong.node_id == trio["c"].node_id
    assert pong.caller == "asker"


async def test_replicas_share_load_and_requests_survive_killing_one(
    trio: dict[str, NodeProcess], module_cluster: Cluster
) -> None:
    """Runs last in this module: it kills node c."""
    total = 60
    results: list[dict[str, Any]] = []
    async with connect(trio["a"].data_dir) as mesh:
        gate = asyncio.Semaphore(8)
        third_done = asyncio.Event()

        async def one(n: int) -> None:
            async with gate:
                reply = await mesh.request(
                    "worker", {"type": "work", "n": n, "seconds": 0.1}, timeout=30
                )
                results.append(reply)
                if len(results) >= total // 3:
                    third_done.set()

        tasks = [asyncio.create_task(one(n)) for n in range(total)]
        await third_done.wait()
        before_kill = {r["node_id"] for r in results}
        await asyncio.to_thread(module_cluster.kill, trio["c"])
        await asyncio.gather(*tasks)
    assert sorted(r["n"] for r in results) == list(range(total))  # none lost, none doubled
    assert before_kill == {trio["b"].node_id, trio["c"].node_id}
    assert results[-1]["node_id"] == trio["b"].node_id
