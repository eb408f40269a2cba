"""The transport seam: every transport opens and closes the way to a peer the same way."""

from __future__ import annotations

import asyncio
import inspect

from llmnode.bus.bus import Bus
from llmnode.bus.faults import DelayedTransport
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.memory import MemoryNetwork, MemoryTransport
from llmnode.bus.transport import Transport
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.schemas.requests import OneWay


def test_every_transport_has_every_method_of_the_protocol() -> None:
    wanted = {name for name in vars(Transport) if not name.startswith("_")}
    assert {"connect", "disconnect", "send", "recv", "start", "close", "address"} <= wanted
    for implementation in (ZmqTransport, MemoryTransport, DelayedTransport):
        missing = {name for name in wanted if not hasattr(implementation, name)}
        assert not missing, f"{implementation.__name__} lacks {sorted(missing)}"
        for name in wanted - {"address"}:
            method = getattr(implementation, name)
            assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(
                getattr(Transport, name)
            ), f"{implementation.__name__}.{name}"


async def test_the_first_frame_through_the_fault_delay_transport_is_delivered() -> None:
    """Under ``--fault-delay-ms`` the first frame to each peer was dropped: the delayed send
    found no open connection (the wrapper had no ``connect``)."""
    ring = MeshKeyRing.generate()
    first = Bus(
        Identity.generate(), ring, DelayedTransport(ZmqTransport("tcp://127.0.0.1:0"), 0.02)
    )
    second = Bus(Identity.generate(), ring, ZmqTransport("tcp://127.0.0.1:0"))
    async with first, second:
        first.add_peer(second.node_id, second.address)
        assert first.send(second.node_id, OneWay(service="s", payload=b"first"))
        inbound = await asyncio.wait_for(second.receive(), 2.0)
        assert inbound.sender == first.node_id
        assert inbound.message == OneWay(service="s", payload=b"first")


async def test_memory_transport_connects_and_disconnects_like_the_others() -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=3, realtime=True)
    ring = MeshKeyRing.generate()
    first = Bus(Identity.generate(), ring, network.endpoint("a"))
    second = Bus(Identity.generate(), ring, network.endpoint("b"))
    async with first, second:
        first.add_peer(second.node_id, "b")
        assert first.send(second.node_id, OneWay(service="s", payload=b"x"))
        assert (await asyncio.wait_for(second.receive(), 2.0)).sender == first.node_id
        first.forget_peer(second.node_id)
        assert first.peer_address(second.node_id) is None
        assert not first.send(second.node_id, OneWay(service="s", payload=b"y"))
