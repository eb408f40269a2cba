"""Who reads the transport: a lone receive() reads it itself, the pump whenever no consumer does,
and any number of consumers together get every message exactly once (MemoryTransport and zmq)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.memory import MemoryNetwork
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.errors import TransportError
from llmnode.schemas.requests import OneWay


def _pair() -> tuple[Bus, Bus, MemoryNetwork[bytes], MeshKeyRing]:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=3, realtime=True)
    ring = MeshKeyRing.generate()
    first = Bus(Identity.generate(), ring, network.endpoint("a"))
    second = Bus(Identity.generate(), ring, network.endpoint("b"))
    return first, second, network, ring


def _payloads(received: list[object]) -> list[bytes]:
    return [inbound.message.payload for inbound in received]  # type: ignore[attr-defined]


async def test_a_bus_that_stopped_receiving_still_answers_handshakes() -> None:
    first, second, network, ring = _pair()
    third = Bus(Identity.generate(), ring, network.endpoint("c"))
    async with first, second, third:
        await first.connect("b", timeout=2)
        assert first.send(second.node_id, OneWay(service="s", payload=b"1"))
        await asyncio.wait_for(second.receive(), 2)  # read by second's consumer itself
        # Nobody receives on second from now on: its pump must read, or this handshake hangs.
        assert await third.connect("b", timeout=2) == second.node_id
        assert first.send(second.node_id, OneWay(service="s", payload=b"2"))
        assert _payloads([await asyncio.wait_for(second.receive(), 2)]) == [b"2"]


async def test_a_receive_that_times_out_loses_nothing() -> None:
    first, second, _, _ = _pair()
    async with first, second:
        await first.connect("b", timeout=2)
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(second.receive(), 0.02)
        for index in range(20):
            assert first.send(second.node_id, OneWay(service="s", payload=bytes([index])))
        received = [await asyncio.wait_for(second.receive(), 2) for _ in range(20)]
        assert _payloads(received) == [bytes([index]) for index in range(20)]


async def test_several_consumers_share_every_message_exactly_once() -> None:
    first, second, _, _ = _pair()
    count = 300
    async with first, second:
        await first.connect("b", timeout=2)
        got: list[list[bytes]] = [[], [], []]

        async def consume(into: list[bytes]) -> None:
            while True:
                into.append((await second.receive()).message.payload)  # type: ignore[attr-defined]

        consumers = [asyncio.create_task(consume(into)) for into in got]
        for index in range(count):
            assert first.send(second.node_id, OneWay(service="s", payload=index.to_bytes(2)))
            if index % 7 == 0:
                await asyncio.sleep(0)  # interleave: consumers come and go mid-stream
        for _ in range(200):
            if sum(map(len, got)) >= count:
                break
            await asyncio.sleep(0.01)
        for task in consumers:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*consumers)
        delivered = sorted(int.from_bytes(p) for into in got for p in into)
        assert delivered == list(range(count))
        assert sum(1 for into in got if into) >= 2  # more than one consumer was served


async def test_one_consumer_after_several_reads_the_transport_itself_again() -> None:
    first, second, _, _ = _pair()
    async with first, second:
        await first.connect("b", timeout=2)
        a = asyncio.create_task(second.receive())
        b = asyncio.create_task(second.receive())
        await asyncio.sleep(0.01)
        for index in range(2):
            assert first.send(second.node_id, OneWay(service="s", payload=bytes([index])))
        assert sorted(_payloads(await asyncio.gather(a, b))) == [b"\x00", b"\x01"]
        received = 0

        async def receive_loop() -> None:  # as the node's: back into receive() at once
            nonlocal received
            while True:
                await second.receive()
                received += 1

        consumer = asyncio.create_task(receive_loop())
        waiting_directly = []
        for index in range(20):
            assert first.send(second.node_id, OneWay(service="s", payload=bytes([index])))
            await asyncio.sleep(0.005)  # delivered; the consumer waits for the next
            waiting_directly.append(second._reader.consumer_reads)
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        assert received == 20
        # after the first message or two, the consumer reads the transport itself
        assert all(waiting_directly[2:]), waiting_directly


@pytest.mark.parametrize("kind", ["memory", "zmq"])
async def test_closing_the_bus_ends_a_waiting_receive_with_a_transport_error(kind: str) -> None:
    ring = MeshKeyRing.generate()
    if kind == "memory":
        network: MemoryNetwork[bytes] = MemoryNetwork(seed=5, realtime=True)
        bus = Bus(Identity.generate(), ring, network.endpoint("a"))
    else:
        bus = Bus(Identity.generate(), ring, ZmqTransport("tcp://127.0.0.1:0"))
    await bus.start()
    waiting = asyncio.create_task(bus.receive())
    await asyncio.sleep(0.02)
    await bus.close()
    with pytest.raises(TransportError):
        await asyncio.wait_for(waiting, 2)
