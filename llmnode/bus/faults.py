"""Fault injection for real transports: delay every outgoing frame (no sockets of its own).

This kernel has no netem, so added latency for cluster tests comes from here: ``--fault-delay-ms``
wraps the node's transport in :class:`DelayedTransport`. Loss and partitions come from nftables.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llmnode.bus.transport import Transport


class DelayedTransport:
    """Wraps a transport; ``send`` hands the frame to the inner one ``delay`` seconds later."""

    def __init__(self, inner: Transport, delay: float) -> None:
        self._inner = inner
        self._delay = delay

    @property
    def address(self) -> str:
        return self._inner.address

    def __getattr__(self, name: str) -> Any:  # admission, counters, connect: the inner one's
        return getattr(self._inner, name)

    async def start(self) -> None:
        await self._inner.start()

    def send(self, address: str, frame: bytes) -> bool:
        asyncio.get_running_loop().call_later(self._delay, self._inner.send, address, frame)
        return True

    def connect(self, address: str) -> None:
        self._inner.connect(address)  # at once: the delayed first frame must find it open

    def disconnect(self, address: str) -> None:
        self._inner.disconnect(address)

    async def recv(self) -> bytes:
        return await self._inner.recv()

    async def close(self) -> None:
        await self._inner.close()
