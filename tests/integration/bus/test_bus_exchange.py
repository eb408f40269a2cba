"""Two processes exchanging messages over real Bus instances on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from llmnode.bus.admission import MeshKeyRefused
from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.schemas.requests import Request, Result

MARKER = b"PLAINTEXT-MARKER-7f3a9c"
MSGPACK_KEYS = [b"payload", b"service", b"deadline", b"Request", b"Result", b"type", b"echo"]


@pytest.mark.slow
async def test_ten_thousand_requests_get_every_reply_in_order(
    start_echo: Callable[..., Any], make_client: Callable[..., Awaitable[Any]]
) -> None:
    node = start_echo(MeshKeyRing.key_to_text(MeshKeyRing.generate_key()))
    client = await make_client(node)
    total, window = 10_000, 64
    slots = asyncio.Semaphore(window)
    futures = []
    for counter in range(total):
        await slots.acquire()
        future = client.submit("echo", counter.to_bytes(8, "big"))
        future.add_done_callback(lambda _: slots.release())
        futures.append(future)
    results = await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert [int.from_bytes(r.data, "big") for r in results] == list(range(total))
    arrivals = [int.from_bytes(m.data, "big") for m in client.arrivals if isinstance(m, Result)]
    assert arrivals == list(range(total))  # in order, none lost, none duplicated
    assert client.bus.rejections == {}
    counters = await client.counters()
    assert counters["rejections"] == {}


async def test_no_plaintext_marker_or_msgpack_key_appears_on_the_wire(
    start_echo: Callable[..., Any],
    make_client: Callable[..., Awaitable[Any]],
    recording_transport: type[Any],
) -> None:
    node = start_echo(MeshKeyRing.key_to_text(MeshKeyRing.generate_key()))
    transport = recording_transport()
    client = await make_client(node, transport=transport)
    for _ in range(20):
        result = await client.call("echo", MARKER * 3)
        assert MARKER in result.data  # the marker really travelled, both ways
    frames = transport.sent_frames + transport.received_frames
    assert len(transport.sent_frames) >= 21 and len(transport.received_frames) >= 21
    for frame in frames:
        assert MARKER not in frame
        for key in MSGPACK_KEYS:
            assert key not in frame


async def test_handshake_teaches_both_sides_each_others_key_and_address() -> None:
    ring = MeshKeyRing.generate()
    first = Bus(Identity.generate(), ring, ZmqTransport())
    second = Bus(Identity.generate(), ring, ZmqTransport())
    async with first, second:
        assert await first.connect(second.address) == second.node_id
        assert first.peer_address(second.node_id) == second.address
        assert second.peer_address(first.node_id) == first.address
        request = Request(id=b"r" * 16, service="s", method="m", payload=b"p", deadline=0.0)
        assert second.send(first.node_id, request)
        inbound = await asyncio.wait_for(first.receive(), 5)
        assert inbound.sender == second.node_id and inbound.message == request


async def test_connect_without_the_mesh_key_is_refused_at_once_and_counted() -> None:
    member = Bus(Identity.generate(), MeshKeyRing.generate(), ZmqTransport())
    outsider = Bus(Identity.generate(), MeshKeyRing.generate(), ZmqTransport())
    async with member, outsider:
        # admission refuses the connection, so the joiner learns it (not "no answer")
        with pytest.raises(MeshKeyRefused, match="refused our mesh key"):
            await outsider.connect(member.address, timeout=30)
        assert member.rejections == {"conn_refused_key": member.rejections["conn_refused_key"]}
        assert member.peer_address(outsider.node_id) is None


async def test_send_to_an_unknown_peer_returns_false_and_is_counted() -> None:
    bus = Bus(Identity.generate(), MeshKeyRing.generate(), ZmqTransport())
    async with bus:
        request = Request(id=b"r" * 16, service="s", method="m", payload=b"", deadline=0.0)
        assert bus.send(b"u" * 32, request) is False
        assert bus.stats["send_unknown_peer"] == 1


async def test_forgotten_peer_is_unknown_and_its_socket_closed() -> None:
    ring = MeshKeyRing.generate()
    transport = ZmqTransport()
    first = Bus(Identity.generate(), ring, transport)
    second = Bus(Identity.generate(), ring, ZmqTransport())
    async with first, second:
        await first.connect(second.address)
        assert transport.peer_sockets == 1
        first.forget_peer(second.node_id)
        assert first.peer_address(second.node_id) is None
        assert transport.peer_sockets == 0
        request = Request(id=b"r" * 16, service="s", method="m", payload=b"", deadline=0.0)
        assert first.send(second.node_id, request) is False
