"""Mesh key rotation across a running pair of processes, with traffic flowing throughout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from llmnode.bus.keyring import MeshKeyRing, key_id


async def keep_pinging(client: Any, stop: asyncio.Event, lane: int) -> int:
    count = 0
    while not stop.is_set():
        payload = lane.to_bytes(2, "big") + count.to_bytes(8, "big")
        result = await client.call("echo", payload)  # fails the test if a reply is lost
        assert result.data == payload
        count += 1
    return count


async def test_rotating_the_mesh_key_on_both_sides_loses_no_message(
    start_echo: Callable[..., Any],
    make_client: Callable[..., Awaitable[Any]],
    recording_transport: type[Any],
) -> None:
    ring = MeshKeyRing.generate()
    old = ring.primary
    node = start_echo(ring.to_text())
    transport = recording_transport()
    client = await make_client(node, keyring=ring, transport=transport)
    stop = asyncio.Event()
    pingers = [asyncio.create_task(keep_pinging(client, stop, lane)) for lane in range(4)]
    new = MeshKeyRing.generate_key()

    await asyncio.sleep(0.1)
    await client.call("keyring", new, method="add")  # 1. every node accepts the new key
    ring.add(new)
    await asyncio.sleep(0.1)
    ring.use(new)  # 2. every node seals with it (frames under the old key still in flight)
    await client.call("keyring", new, method="use")
    await asyncio.sleep(0.1)
    ring.remove(old)  # 3. every node retires the old key
    await client.call("keyring", old, method="remove")
    await asyncio.sleep(0.1)
    stop.set()
    answered = await asyncio.gather(*pingers)

    assert all(count > 5 for count in answered)
    assert client.bus.rejections == {}
    assert (await client.counters())["rejections"] == {}
    last_frames = transport.sent_frames[-5:] + transport.received_frames[-5:]
    assert {frame[4:8] for frame in last_frames} == {key_id(new)}
    assert ring.keys == [new]
