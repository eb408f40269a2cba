"""The memory network (virtual clock, faults) and the memory transport (asyncio, real time)."""

from __future__ import annotations

import asyncio

import pytest

from llmnode.bus.memory import MemoryNetwork
from llmnode.bus.transport import Transport
from llmnode.errors import TransportError


def collect(network: MemoryNetwork[str], until: float) -> list[tuple[float, str, str]]:
    arrived: list[tuple[float, str, str]] = []
    network.run_until(
        until, lambda address, payload: arrived.append((network.now, address, payload))
    )
    return arrived


def test_frames_arrive_in_delivery_time_order_on_the_virtual_clock() -> None:
    network: MemoryNetwork[str] = MemoryNetwork(seed=1, delay=(0.1, 0.5))
    for index in range(20):
        network.send("a", "b", f"frame-{index}")
    arrived = collect(network, 1.0)
    times = [at for at, _, _ in arrived]
    assert len(arrived) == 20 and times == sorted(times)
    assert all(0.1 <= at <= 0.5 for at in times)
    assert network.now == 1.0


def test_frames_not_yet_due_wait_for_a_later_run() -> None:
    network: MemoryNetwork[str] = MemoryNetwork(seed=1, delay=(1.0, 1.0))
    network.send("a", "b", "late")
    assert collect(network, 0.5) == []
    assert network.next_due() == 1.0
    assert collect(network, 2.0) == [(1.0, "b", "late")]


def test_loss_drops_about_the_configured_fraction() -> None:
    network: MemoryNetwork[str] = MemoryNetwork(seed=2, loss=0.1)
    for _ in range(10_000):
        network.send("a", "b", "x")
    delivered = len(collect(network, 1.0))
    assert 8800 <= delivered <= 9200
    assert network.dropped["loss"] == 10_000 - delivered


def test_duplicate_delivers_some_frames_twice() -> None:
    network: MemoryNetwork[str] = MemoryNetwork(seed=3, duplicate=0.5)
    for _ in range(1000):
        network.send("a", "b", "x")
    assert 1400 <= len(collect(network, 1.0)) <= 1600


def test_partition_drops_both_directions_until_healed() -> None:
    network: MemoryNetwork[str] = MemoryNetwork(seed=4)
    network.partition({"a"}, {"b", "c"})
    network.send("a", "b", "1")
    network.send("c", "a", "2")
    network.send("b", "c", "3")  # same side: delivered
    assert [payload for _, _, payload in collect(network, 1.0)] == ["3"]
    network.heal()
    network.send("a", "b", "4")
    assert [payload for _, _, payload in collect(network, 2.0)] == ["4"]


def test_frames_to_a_new_destination_are_dropped_until_its_connection_is_up() -> None:
    network: MemoryNetwork[str] = MemoryNetwork(seed=6, connect_delay=0.3)
    network.connect("a", "c")  # learned c at 0.0: its connection starts now
    network.connect("a", "d", established=True)  # a finished handshake
    network.send("a", "b", "first")  # the first send starts b's connection
    network.send("a", "c", "early")
    network.send("a", "d", "handshaken")
    network.send("b", "a", "other way")  # each direction connects on its own
    assert [p for _, _, p in collect(network, 0.29)] == ["handshaken"]
    network.send("a", "b", "still connecting")
    collect(network, 0.3)
    network.send("a", "b", "up")
    network.send("a", "c", "up too")
    assert [p for _, _, p in collect(network, 1.0)] == ["up", "up too"]
    assert network.dropped["connecting"] == 4


def test_slow_address_delays_what_it_sends_and_receives() -> None:
    network: MemoryNetwork[str] = MemoryNetwork(seed=5, delay=(0.01, 0.01))
    network.slow("s", lambda rng: 1.0)
    network.send("a", "s", "in")
    network.send("s", "a", "out")
    network.send("a", "b", "other")
    arrived = {payload: at for at, _, payload in collect(network, 5.0)}
    assert arrived == {"other": 0.01, "in": 1.01, "out": 1.01}
    network.slow("s", None)
    network.send("a", "s", "fast again")
    assert collect(network, 6.0)[0][0] == pytest.approx(5.01)


def test_memory_transport_satisfies_the_transport_protocol() -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=6)
    transport: Transport = network.endpoint("mem://a")
    assert transport.address == "mem://a"


async def test_memory_transport_delivers_frames_in_real_time() -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=7, delay=(0.001, 0.002), realtime=True)
    alice, bob = network.endpoint("mem://alice"), network.endpoint("mem://bob")
    await alice.start()
    await bob.start()
    assert alice.send("mem://bob", b"hello")
    assert await asyncio.wait_for(bob.recv(), timeout=2.0) == b"hello"
    await alice.close()
    await bob.close()


async def test_memory_transport_over_the_virtual_clock_delivers_on_run_until() -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=8, delay=(0.5, 0.5))
    alice, bob = network.endpoint("mem://alice"), network.endpoint("mem://bob")
    alice.send("mem://bob", b"tick")
    network.run_until(0.4)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(bob.recv(), timeout=0.05)
    network.run_until(0.5)
    assert await asyncio.wait_for(bob.recv(), timeout=1.0) == b"tick"
    await alice.close()
    await bob.close()


async def test_closed_memory_transport_refuses_send_and_recv() -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=9, realtime=True)
    alice = network.endpoint("mem://alice")
    pending = asyncio.create_task(alice.recv())
    await asyncio.sleep(0)
    await alice.close()
    with pytest.raises(TransportError, match="closed"):
        await pending
    assert not alice.send("mem://bob", b"x")
    with pytest.raises(TransportError):
        await alice.recv()


def test_endpoint_address_cannot_be_taken_twice() -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=10)
    network.endpoint("mem://a")
    with pytest.raises(TransportError, match="in use"):
        network.endpoint("mem://a")


async def test_full_endpoint_queue_drops_and_counts() -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=11)
    sender = network.endpoint("mem://s")
    receiver = network.endpoint("mem://r", queue_limit=2)
    for _ in range(5):
        sender.send("mem://r", b"x")
    network.run_until(1.0)
    assert network.dropped["queue_full"] == 3
    await sender.close()
    await receiver.close()
