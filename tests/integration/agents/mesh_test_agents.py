"""Agents the integration tests run inside real ``llmnode start --agent`` processes.

Not a test module: nodes import it as ``mesh_test_agents`` (the tests put this folder on their
``PYTHONPATH``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

import msgspec

from llmnode.agents.agent import Agent, Context, handler, subscribe


class Ping(msgspec.Struct):
    text: str


class Pong(msgspec.Struct):
    text: str
    node_id: str
    caller: str
    caller_node: str


class Relay(msgspec.Struct):
    """Ask ``to`` with a Ping, and tell ``notify`` (one-way) that it happened."""

    to: str
    notify: str
    text: str


class Recorder(Agent):
    """Replies to Ping, records one-way messages and "news" publications, relays, fails."""

    name = "recorder"

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    @handler
    async def ping(self, message: Ping, ctx: Context) -> Pong:
        return Pong(
            text=message.text, node_id=ctx.node_id, caller=ctx.caller, caller_node=ctx.caller_node
        )

    @handler
    async def relay(self, message: Relay, ctx: Context) -> Pong:
        pong = await ctx.request(message.to, Ping(text=message.text), reply_type=Pong, timeout=10)
        await ctx.send(message.notify, {"type": "note", "text": message.text, "from": ctx.node_id})
        return pong

    @handler("note")
    async def note(self, message: dict[str, Any], ctx: Context) -> None:
        self.received.append({"kind": "note", "caller": ctx.caller, **message})

    @subscribe("news")
    async def news(self, message: dict[str, Any], ctx: Context) -> None:
        self.received.append({"kind": "news", **message})

    @handler("dump")
    async def dump(self, message: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"node_id": ctx.node_id, "received": self.received}

    @handler("boom")
    async def boom(self, message: dict[str, Any]) -> None:
        raise ValueError("the handler was told to fail")


class Worker(Agent):
    """A replicated agent that takes a little time per request and says where it ran."""

    name = "worker"
    slots: ClassVar[int] = 4

    @handler("work")
    async def work(self, message: dict[str, Any], ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(float(message.get("seconds", 0.05)))
        return {"n": message.get("n"), "node_id": ctx.node_id}


class Guarded(Agent):
    """Only the node ids in $GUARDED_ALLOW may call it."""

    name = "guarded"
    allow: ClassVar[list[str]] = [
        node for node in os.environ.get("GUARDED_ALLOW", "nobody").split(",") if node
    ]

    @handler("secret")
    async def secret(self, message: dict[str, Any]) -> str:
        return "the secret"
