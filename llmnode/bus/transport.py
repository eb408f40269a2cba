"""The transport seam: moves opaque frames between addresses (a Protocol, no I/O itself).

Two implementations share it: :class:`llmnode.bus.zmq_transport.ZmqTransport` (real sockets)
and :class:`llmnode.bus.memory.MemoryTransport` (in-process, virtual clock, fault injection).
Frames are already sealed when they get here; a transport never sees plaintext.
"""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """Delivers frames to addresses. ``send`` never blocks: a full queue returns False."""

    @property
    def address(self) -> str:
        """The address other nodes reach this one at (after :meth:`start`)."""
        ...

    async def start(self) -> None: ...

    def send(self, address: str, frame: bytes) -> bool:
        """Queue ``frame`` for ``address``; False when the peer's queue is full or closed."""
        ...

    def connect(self, address: str) -> None:
        """Open the way to ``address`` now, so the first frame sent there is not lost."""
        ...

    def disconnect(self, address: str) -> None:
        """Close the way to ``address`` (its node left or died); a later send reopens it."""
        ...

    async def recv(self) -> bytes:
        """The next frame that arrived for this transport."""
        ...

    async def close(self) -> None: ...
