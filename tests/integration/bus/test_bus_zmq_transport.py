"""ZmqTransport on real loopback sockets: addresses, ordering, and non-blocking sends."""

from __future__ import annotations

import asyncio

import pytest
import zmq

from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.errors import ConfigError


async def test_port_zero_binds_a_real_port_and_reports_it() -> None:
    transport = ZmqTransport("tcp://127.0.0.1:0")
    await transport.start()
    try:
        host, port = transport.address.removeprefix("tcp://").rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
    finally:
        await transport.close()


async def test_advertise_overrides_the_reported_address() -> None:
    transport = ZmqTransport("tcp://127.0.0.1:0", advertise="tcp://node-a.example:7000")
    await transport.start()
    try:
        assert transport.address == "tcp://node-a.example:7000"
    finally:
        await transport.close()


@pytest.mark.parametrize("address", ["nonsense", "tcp://no-port", "udp://1.2.3.4:5"])
def test_malformed_listen_address_is_a_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="not a transport address"):
        ZmqTransport(address)


async def test_listen_address_in_use_is_a_one_line_config_error() -> None:
    first = ZmqTransport()
    await first.start()
    try:
        second = ZmqTransport(first.address)
        with pytest.raises(ConfigError, match="cannot listen") as caught:
            await second.start()
        assert "\n" not in str(caught.value)
    finally:
        await first.close()


async def test_frames_from_one_peer_arrive_in_order() -> None:
    sender, receiver = ZmqTransport(), ZmqTransport()
    await sender.start()
    await receiver.start()
    try:
        sender.connect(receiver.address)
        frames = [index.to_bytes(4, "big") * 10 for index in range(2000)]
        sent = 0
        while sent < len(frames):
            if sender.send(receiver.address, frames[sent]):
                sent += 1
            else:
                await asyncio.sleep(0.001)
        received = [await asyncio.wait_for(receiver.recv(), 5) for _ in frames]
        assert received == frames
    finally:
        await sender.close()
        await receiver.close()


async def test_send_to_an_address_nobody_listens_on_returns_false_at_once() -> None:
    transport = ZmqTransport()
    await transport.start()
    try:
        assert transport.send("tcp://127.0.0.1:1", b"frame") is False
    finally:
        await transport.close()


async def test_send_to_a_peer_that_stops_reading_returns_false_instead_of_blocking() -> None:
    context = zmq.Context()
    stalled = context.socket(zmq.ROUTER)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.setsockopt(zmq.RCVHWM, 1)
    port = stalled.bind_to_random_port("tcp://127.0.0.1")
    transport = ZmqTransport(high_water_mark=4)
    await transport.start()
    try:
        address = f"tcp://127.0.0.1:{port}"
        transport.connect(address)
        frame = bytes(256 * 1024)
        results = []
        for _ in range(2000):
            results.append(transport.send(address, frame))
            if not results[-1] and any(results):
                break
            await asyncio.sleep(0)
        assert any(results) and not results[-1]
    finally:
        await transport.close()
        stalled.close()
        context.term()


async def test_peer_sockets_beyond_the_cap_are_closed_least_recent_first() -> None:
    transport = ZmqTransport(max_peers=2)
    await transport.start()
    try:
        for port in (1, 2, 3):
            transport.send(f"tcp://127.0.0.1:{port}", b"x")
        assert transport.peer_sockets == 2
    finally:
        await transport.close()
