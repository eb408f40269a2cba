"""Who reads a transport: the consumer itself when it is alone, a pump task otherwise (pure
asyncio, no I/O of its own).

A message read by a pump task reaches its consumer one task switch later than one the consumer
reads itself (the pump wakes, queues it, the consumer wakes), and a message round trip pays that
on both sides: about 50 µs of a bus round trip here (BENCHMARKS.md, Bus). So a lone ``receive()``
reads the transport itself. The pump reads whenever no consumer does, so handshakes are answered
before anyone receives and after everyone stopped, and for several consumers at once (one reader
at a time: a transport's ``recv`` is not shared). Frames that ``handle`` turns into nothing (a
handshake, a rejected frame) never reach a consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from llmnode.errors import TransportError
from llmnode.log import get_logger

_log = get_logger(__name__)

T = TypeVar("T")


class Reader(Generic[T]):
    """``receive()`` the next ``handle(frame)`` that is not None, from ``recv()`` frames."""

    def __init__(
        self, recv: Callable[[], Awaitable[bytes]], handle: Callable[[bytes], T | None], limit: int
    ) -> None:
        self._recv = recv
        self._handle = handle
        self._inbox: asyncio.Queue[T | None] = asyncio.Queue(maxsize=limit)
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self._direct = False  # a receive() is reading the transport itself
        self._pump_reading = False  # the pump is waiting in recv()
        self._yield_to_consumer = False  # the pump parks after its frame: a consumer wants it
        self._queued = 0  # receive() calls waiting on the inbox
        self._parked: asyncio.Future[None] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def consumer_reads(self) -> bool:
        """Whether a consumer is reading the transport itself now (for tests)."""
        return self._direct and not self._pump_reading

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name="bus_pump")

    async def stop(self) -> None:
        """Stop the pump; consumers waiting on the inbox get TransportError. A consumer reading
        the transport itself gets one when the transport closes."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _ in range(self._queued):
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(None)

    async def receive(self) -> T:
        if self.failure is not None:
            raise TransportError(f"the bus stopped: {self.failure}") from self.failure
        if self._task is None:
            raise TransportError("the bus is not started")
        inbox = self._inbox
        if not inbox.empty():
            return self._unwrap(inbox.get_nowait())
        if not (self._direct or self._pump_reading or self._queued):
            return await self._receive_directly()
        if self._pump_reading and not self._direct and not self._queued:
            self._yield_to_consumer = True  # after its next message, the transport is ours
        self._queued += 1
        if not self._direct:
            self._wake_pump()  # someone must read for the consumers on the inbox
        try:
            return self._unwrap(await inbox.get())
        finally:
            self._queued -= 1
            asyncio.get_running_loop().call_soon(self._wake_pump)  # as after a direct read

    def receive_nowait(self) -> T | None:
        try:
            item = self._inbox.get_nowait()
        except asyncio.QueueEmpty:
            return None
        return self._unwrap(item)

    async def _receive_directly(self) -> T:
        self._direct = True
        try:
            # Yield once per message, as a consumer fed through the pump did, so a consumer
            # whose frames are ready when it asks cannot keep the node's other tasks (the
            # ZAP handler of admission among them) waiting. Measured without it: admission
            # answered an outsider's handshake late often enough that a race in
            # test_bus_admission.py's attacker showed in 1 run of 7 instead of 1 of 20. Still
            # cheaper than the pump's two task switches: bus RTT p50 349-358 vs 396-405 us.
            await asyncio.sleep(0)
            while True:
                try:
                    frame = await self._recv()
                except Exception as error:
                    self.failure = error
                    raise TransportError(f"the bus stopped: {error}") from error
                item = self._handle(frame)
                if item is not None:
                    return item
        finally:
            self._direct = False
            # Deferred: a consumer that comes straight back (a receive loop) reads on, and the
            # pump takes over only if none did.
            asyncio.get_running_loop().call_soon(self._wake_pump)

    def _wake_pump(self) -> None:
        parked = self._parked
        if parked is not None and not self._direct and not parked.done():
            parked.set_result(None)

    def _unwrap(self, item: T | None) -> T:
        if item is None:
            if self.failure is None:
                raise TransportError("the bus closed")
            raise TransportError(f"the bus stopped: {self.failure}") from self.failure
        return item

    async def _pump(self) -> None:
        inbox = self._inbox
        loop = asyncio.get_running_loop()
        try:
            while True:
                # Park while a consumer reads the transport, or once the one consumer waiting
                # on the inbox has its message (it reads the transport itself from its next
                # receive on). A frame that gave nothing (a handshake) does not count.
                handed_over = not inbox.empty() and self._queued == 1
                if self._direct or (self._yield_to_consumer and handed_over):
                    self._yield_to_consumer = False
                    self._parked = loop.create_future()
                    try:
                        await self._parked
                    finally:
                        self._parked = None
                    continue
                self._pump_reading = True
                try:
                    frame = await self._recv()
                finally:
                    self._pump_reading = False
                item = self._handle(frame)
                if item is not None:
                    if inbox.full():  # back-pressure: wait, so the transport's queues fill
                        await inbox.put(item)
                    else:
                        inbox.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # surfaced to receive(), never silent
            self.failure = error
            _log.error("bus_pump_failed", error=str(error), error_type=type(error).__name__)
            with contextlib.suppress(asyncio.QueueFull):
                inbox.put_nowait(None)
