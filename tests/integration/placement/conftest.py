"""Fixtures for model transfer: nodes (a Bus and a ModelTransfer) stopped at teardown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llmnode.agents.models.store import ModelStore
from llmnode.agents.models.transfer import ModelTransfer
from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.transport import Transport
from llmnode.bus.zmq_transport import ZmqTransport
from tests.support.placement import Node, StartNode, pump


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """Start a Bus (zmq on 127.0.0.1 unless a transport is given) with a ModelTransfer."""
    started: list[Node] = []
    ring = MeshKeyRing.generate()

    async def start(store: ModelStore, transport: Transport | None = None, **options: Any) -> Node:
        bus = Bus(Identity.generate(), ring, transport or ZmqTransport("tcp://127.0.0.1:0"))
        await bus.start()
        transfer = ModelTransfer(store, bus.send, **options)
        tasks = [asyncio.create_task(pump(bus, transfer)), asyncio.create_task(transfer.run())]
        node = Node(bus, transfer, tasks)
        started.append(node)
        return node

    yield start
    for node in started:
        await node.stop()
