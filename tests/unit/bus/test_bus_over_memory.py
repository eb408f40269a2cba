"""The Bus over the in-process MemoryTransport: same code path as zmq, with injected faults."""

from __future__ import annotations

import asyncio

from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.memory import MemoryNetwork
from llmnode.schemas.requests import OneWay


async def test_duplicated_frames_are_delivered_once_and_counted_as_replays() -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=1, duplicate=1.0, realtime=True)
    ring = MeshKeyRing.generate()
    first = Bus(Identity.generate(), ring, network.endpoint("a"))
    second = Bus(Identity.generate(), ring, network.endpoint("b"))
    async with first, second:
        assert await first.connect("b", timeout=2) == second.node_id
        for index in range(10):
            assert first.send(second.node_id, OneWay(service="s", payload=bytes([index])))
        received = [await asyncio.wait_for(second.receive(), 2) for _ in range(10)]
        await asyncio.sleep(0.05)
        assert [inbound.message.payload for inbound in received] == [bytes([i]) for i in range(10)]  # type: ignore[attr-defined]
        assert second.receive_nowait() is None
        assert second.rejections["replay"] >= 10
