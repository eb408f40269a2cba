"""Outsiders against a live node process: no memory or descriptors held for them, all counted.

An outsider (no mesh key) floods a real echo node over real TCP on 127.0.0.1 while a mesh
member keeps sending echo requests; every request must be answered, the node's RSS and open
descriptors must stay under the bounds below, and each refused connection must be counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from llmnode.bus.admission import HANDSHAKE_TIMEOUT_MS, configure_client
from llmnode.bus.keyring import MeshKeyRing

pytestmark = pytest.mark.slow

RSS_GROWTH_BOUND = 64 * 1024 * 1024  # the attack below sends 256 MiB
IDLE_FD_BOUND = 128  # open descriptors once the handshake deadline has passed


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def keep_pinging(client: Any, stop: asyncio.Event) -> int:
    count = 0
    while not stop.is_set() or count < 20:
        payload = count.to_bytes(8, "big")
        assert (await client.call("echo", payload)).data == payload
        count += 1
    return count


def send_many_parts(address: str, mesh_key: bytes | None, parts: int) -> None:
    """One multipart message of ``parts`` x 1 MiB, from a plain or a wrong-key CURVE DEALER."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    if mesh_key is not None:
        configure_client(dealer, mesh_key)
    # Bounded: when the node refuses the handshake before all parts are queued, libzmq ends
    # the connection for good (a protocol error is not retried) and a blocking send would wait
    # forever for a peer (this hung the test in about 1 run of 20).
    dealer.setsockopt(zmq.SNDTIMEO, 3000)
    dealer.connect(address)
    chunk = zmq.Frame(bytes(1024 * 1024))
    with contextlib.suppress(zmq.Again):  # refused before the message was even queued: fine
        dealer.send_multipart([chunk] * parts, copy=False)
    time.sleep(1.5)  # libzmq keeps trying to deliver it; the node must refuse every try
    dealer.close()
    context.term()


async def wait_for_counts(client: Any, expected: dict[str, int]) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while True:
        rejections: dict[str, int] = (await client.counters())["rejections"]
        if all(rejections.get(k, 0) >= n for k, n in expected.items()):
            return rejections
        if time.monotonic() > deadline:
            return rejections
        await asyncio.sleep(0.1)


async def test_a_many_part_message_from_an_outsider_is_never_buffered(
    start_echo: Callable[..., Any], make_client: Callable[..., Awaitable[Any]]
) -> None:
    ring = MeshKeyRing.generate()
    node = start_echo(ring.to_text())
    client = await make_client(node)
    rss_before = rss_bytes(node.process.pid)
    stop = asyncio.Event()
    pinger = asyncio.create_task(keep_pinging(client, stop))
    peak = rss_before
    for mesh_key in (None, MeshKeyRing.generate_key()):  # no CURVE at all; CURVE, wrong key
        attack = asyncio.create_task(
            asyncio.to_thread(send_many_parts, node.address, mesh_key, 256)
        )
        while not attack.done():
            peak = max(peak, rss_bytes(node.process.pid))
            await asyncio.sleep(0.02)
        await attack
    stop.set()
    answered = await pinger
    counts = await wait_for_counts(client, {"conn_refused_key": 1})
    assert peak - rss_before < RSS_GROWTH_BOUND, (peak - rss_before) / 2**20
    # the plain DEALER offers the NULL mechanism: libzmq ends it without detail
    assert counts.get("conn_no_handshake", 0) + counts.get("conn_bad_handshake", 0) >= 1, counts
    assert counts.get("conn_refused_key", 0) >= 1, counts
    assert answered >= 20
    assert node.process.poll() is None


async def test_idle_connections_are_closed_and_counted_without_tracebacks(
    start_echo: Callable[..., Any], make_client: Callable[..., Awaitable[Any]]
) -> None:
    ring = MeshKeyRing.generate()
    node = start_echo(ring.to_text(), fd_limit=1024)
    client = await make_client(node)
    host, port = node.address.removeprefix("tcp://").rsplit(":", 1)
    stop = asyncio.Event()
    pinger = asyncio.create_task(keep_pinging(client, stop))
    idle: list[socket.socket] = []
    try:
        for _ in range(1500):  # more than the node's 1,024 descriptors
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect((host, int(port)))
            idle.append(sock)
            if len(idle) % 100 == 0:
                await asyncio.sleep(0.01)
        # the first ~1,000 are accepted at once, the rest when those close: two deadlines
        deadline = time.monotonic() + 3 * HANDSHAKE_TIMEOUT_MS / 1000 + 2.0
        fds_peak = fds_after = open_fds(node.process.pid)
        while fds_after >= IDLE_FD_BOUND and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            fds_after = open_fds(node.process.pid)
            fds_peak = max(fds_peak, fds_after)
        stop.set()
        answered = await pinger
        # a newcomer can still join while the outsider keeps its sockets open
        newcomer = await make_client(node)
        assert (await newcomer.call("echo", b"hi")).data == b"hi"
    finally:
        for sock in idle:
            sock.close()
    counts = await wait_for_counts(client, {"conn_no_handshake": 500})
    assert fds_after < IDLE_FD_BOUND, (fds_after, fds_peak)
    assert counts.get("conn_no_handshake", 0) >= 500, counts
    assert answered >= 20
    assert "Traceback" not in node.log()
    assert node.process.poll() is None
