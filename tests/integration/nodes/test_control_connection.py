"""The control connection's lifecycle against a real node: a client that dies takes its agents
with it at once, and agents and subscriptions come back after the node restarts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from llmnode.agents.agent import Agent, handler
from llmnode.agents.sdk import Mesh, connect
from llmnode.errors import MeshError, UnknownAgent
from tests.support.mesh import NodeProcess, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


class Echo(Agent):
    name = "echo"

    @handler
    async def echo(self, message: dict[str, Any]) -> dict[str, Any]:
        return message


def _services(node: NodeProcess) -> set[str]:
    status = wait_for(node.status, timeout=10, what="status")
    return {str(service["name"]) for service in status["services"]}


async def _request_until_served(mesh: Mesh, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        try:
            reply: dict[str, Any] = await mesh.request("echo", {"type": "echo", "n": 1}, timeout=3)
            return reply
        except MeshError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _publish_until(mesh: Mesh, waiting: asyncio.Future[Any], n: int) -> Any:
    """Publish until ``waiting`` (the subscriber's next message) has it: subscriptions take a
    moment to reach the node's topic table."""
    deadline = time.monotonic() + 20
    while not waiting.done() and time.monotonic() < deadline:
        await mesh.publish("news", {"type": "news", "n": n})
        await asyncio.sleep(0.3)
    return await asyncio.wait_for(waiting, 1)


def test_agents_of_a_killed_client_are_withdrawn_at_once(node: NodeProcess) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from llmnode.agents.sdk import connect
        from tests.integration.nodes.test_control_connection import Echo

        async def main():
            async with connect({str(node.data_dir)!r}) as mesh, mesh.serving(Echo()):
                print("serving", flush=True)
                await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert host.stdout is not None
        while (line := host.stdout.readline()) and line.strip() != b"serving":
            pass  # its log lines
        assert line.strip() == b"serving"
        assert "echo" in _services(node)
        host.kill()
        host.wait(10)
        started = time.monotonic()
        wait_for(lambda: "echo" not in _services(node), timeout=10, what="echo withdrawn")
        # The node saw the connection close: no waiting for the 10 s heartbeat timeout.
        assert time.monotonic() - started < 5.0
    finally:
        if host.poll() is None:
            host.kill()
        host.wait(10)
        if host.stdout is not None:
            host.stdout.close()

    async def call() -> None:
        async with connect(node.data_dir) as mesh:
            with pytest.raises(UnknownAgent):
                await mesh.request("echo", {"type": "echo"}, timeout=4)

    asyncio.run(call())
    assert node.alive()


async def test_agents_and_subscriptions_come_back_after_the_node_restarts(
    node: NodeProcess,
) -> None:
    async with connect(node.data_dir, name="host") as host, host.serving(Echo()):
        updates = host.subscribe("news")
        first = asyncio.ensure_future(anext(updates))
        async with connect(node.data_dir) as caller:
            assert await _request_until_served(caller, within=10) == {"type": "echo", "n": 1}
            assert (await _publish_until(caller, first, 1))["n"] == 1

        node.stop()
        node.start()
        await asyncio.to_thread(wait_for, node.status, timeout=60, what="restarted node")

        # The host's heartbeat reconnects (reading the new token) and registers the agent again,
        # and the subscription is renewed on the new connection.
        async with connect(node.data_dir) as caller:
            assert await _request_until_served(caller, within=20) == {"type": "echo", "n": 1}
            second = asyncio.ensure_future(anext(updates))
            assert (await _publish_until(caller, second, 2))["n"] == 2
