"""The control connection's lifecycle against real nodes: a client that dies takes its agents with
it at once (an idempotent request it was serving goes on to another replica), and agents and
subscriptions come back after the node restarts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmnode.agents.agent import Agent, handler
from llmnode.client.mesh import Mesh, connect
from llmnode.errors import AgentLost, MeshError, UnknownAgent
from tests.support.mesh import LocalMesh, NodeProcess, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


class Echo(Agent):
    name = "echo"

    @handler
    async def echo(self, message: dict[str, Any]) -> dict[str, Any]:
        return message


class Slow(Agent):
    """Says it started (on stdout), takes ``$SLOW_SECONDS``, answers with ``$HOST_NAME``."""

    name = "slow"

    @handler
    async def work(self, message: dict[str, Any]) -> dict[str, Any]:
        print("started", flush=True)
        await asyncio.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
        return {"host": os.environ.get("HOST_NAME", "")}


class Draining(Agent):
    """Takes a second; ``started`` is set when a call begins (in this process)."""

    name = "draining"
    started: asyncio.Event | None = None

    @handler
    async def work(self, message: dict[str, Any]) -> dict[str, Any]:
        if Draining.started is not None:
            Draining.started.set()
        await asyncio.sleep(1.0)
        return {"done": True}


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


@contextlib.contextmanager
def _hosting(node: NodeProcess, agent: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A separate process hosting ``agent`` (a class of this module) on ``node``; killed after."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from llmnode.client.mesh import connect
        from tests.integration.nodes.test_control_connection import {agent}

        async def main():
            async with connect({str(node.data_dir)!r}) as mesh, mesh.serving({agent}()):
                print("serving", flush=True)
                await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    host = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env={**os.environ, **env}
    )
    try:
        _wait_line(host, b"serving")
        yield host
    finally:
        if host.poll() is None:
            host.kill()
        host.wait(10)
        if host.stdout is not None:
            host.stdout.close()


def _wait_line(host: subprocess.Popen[bytes], wanted: bytes) -> None:
    """Read the host's stdout (its log lines too) up to the line ``wanted``."""
    assert host.stdout is not None
    while (line := host.stdout.readline()) and line.strip() != wanted:
        pass
    assert line.strip() == wanted, f"the host exited before printing {wanted!r}"


def test_agents_of_a_killed_client_are_withdrawn_at_once(node: NodeProcess) -> None:
    with _hosting(node, "Echo") as host:
        assert "echo" in _services(node)
        host.kill()
        host.wait(10)
        started = time.monotonic()
        wait_for(lambda: "echo" not in _services(node), timeout=10, what="echo withdrawn")
        # The node saw the connection close: no waiting for the 10 s heartbeat timeout.
        assert time.monotonic() - started < 5.0

    async def call() -> None:
        async with connect(node.data_dir) as mesh:
            with pytest.raises(UnknownAgent):
                await mesh.request("echo", {"type": "echo"}, timeout=4)

    asyncio.run(call())
    assert node.alive()


async def test_a_request_whose_agent_process_dies_goes_on_to_another_replica(
    node: NodeProcess, mesh: LocalMesh
) -> None:
    other = mesh.add("other")
    async with connect(node.data_dir, name="caller") as caller:
        # Not idempotent: the lost agent had it, so it is not run again; a typed error at once.
        with _hosting(node, "Slow", SLOW_SECONDS="60", HOST_NAME="first") as first:
            request = asyncio.ensure_future(
                caller.request("slow", {"type": "work"}, timeout=30, idempotent=False)
            )
            await asyncio.to_thread(_wait_line, first, b"started")
            first.kill()
            with pytest.raises(AgentLost, match="not idempotent"):
                await asyncio.wait_for(request, 10)

        # Idempotent: retried on the replica on the other node, which answers.
        with _hosting(node, "Slow", SLOW_SECONDS="60", HOST_NAME="first") as first:
            request = asyncio.ensure_future(caller.request("slow", {"type": "work"}, timeout=30))
            await asyncio.to_thread(_wait_line, first, b"started")
            with _hosting(other, "Slow", SLOW_SECONDS="0", HOST_NAME="second"):
                await _until_hosted_twice(caller, "slow")
                first.kill()
                assert await asyncio.wait_for(request, 20) == {"host": "second"}
    status = wait_for(node.status, timeout=10, what="status")
    assert status["counters"]["requests"]["retried"] >= 1


async def test_a_graceful_stop_lets_the_calls_in_flight_answer(node: NodeProcess) -> None:
    Draining.started = asyncio.Event()
    async with connect(node.data_dir, name="caller") as caller, connect(node.data_dir) as host:
        async with host.serving(Draining()):
            request = asyncio.ensure_future(
                caller.request("draining", {"type": "work"}, timeout=20, idempotent=False)
            )
            await asyncio.wait_for(Draining.started.wait(), 10)
        # The agent is withdrawn (no new calls reach it), but the call it was serving is
        # answered: the host waits for its handlers and the node still routes their replies.
        assert "draining" not in _services(node)
        assert await asyncio.wait_for(request, 10) == {"done": True}


def test_the_sdk_works_on_uvloop(node: NodeProcess) -> None:
    """Applications often run uvloop; its transports are not asyncio.Transport subclasses."""
    script = textwrap.dedent(
        f"""
        import sys, uvloop
        sys.path.insert(0, {str(ROOT)!r})
        from llmnode.client.mesh import connect
        from tests.integration.nodes.test_control_connection import Echo

        async def main():
            async with connect({str(node.data_dir)!r}) as mesh, mesh.serving(Echo()):
                reply = await mesh.request("echo", {{"type": "echo", "n": 7}}, timeout=10)
                print("reply", reply["n"], flush=True)

        uvloop.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"reply 7" in result.stdout


async def _until_hosted_twice(mesh: Mesh, agent: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        peers = await mesh.peers()
        hosting = [p for p in peers if any(s.get("name") == agent for s in p.get("services", []))]
        if len(hosting) >= 2:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{agent!r} did not show up on two nodes")


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
