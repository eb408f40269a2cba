"""Nothing a node does blocks its event loop: resolving seeds, joining, serving, gossiping."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmnode.nodes.discovery.seeds import seed_address
from tests.support.inprocess import EchoService, in_process_mesh

STALL_LIMIT_S = 0.1  # generous for a loaded 2-core CI machine; a blocking call here is seconds


@contextmanager
def loop_lag_monitor() -> Iterator[list[float]]:
    """Samples how late a 5 ms timer fires; yields the list of lags (seconds)."""
    lags: list[float] = []

    async def sample() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)

    task = asyncio.get_running_loop().create_task(sample())
    try:
        yield lags
    finally:
        task.cancel()


async def test_a_slow_resolver_does_not_stall_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The join loop resolved seeds with a blocking getaddrinfo: a 1 s resolver stopped the
    node's acks for 1 s, long enough to be suspected."""
    real = socket.getaddrinfo

    def slow_getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return real("127.0.0.1", *args[1:], **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    with loop_lag_monitor() as lags:
        address = await seed_address("seed.example:7946")
    assert address == "tcp://127.0.0.1:7946"
    assert lags, "the loop kept running while the name resolved"
    assert max(lags) < STALL_LIMIT_S


@pytest.mark.timeout(60)
async def test_joining_serving_and_gossiping_never_stall_the_loop(tmp_path: Path) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        with loop_lag_monitor() as lags:
            entry = await mesh.start()
            await mesh.start([EchoService()])
            await mesh.start([EchoService()])
            await mesh.converge("echo")
            replies = await asyncio.gather(
                *(entry.router.call("echo", "request", bytes([i]), timeout=10) for i in range(50))
            )
            await asyncio.sleep(1.0)  # a few gossip and probe rounds
        assert replies == [bytes([i]) for i in range(50)]
        assert len(lags) > 100
        assert max(lags) < STALL_LIMIT_S, f"the loop stalled {max(lags) * 1000:.0f} ms"
