"""An in-process network with fault injection, and the memory transport (no real I/O).

:class:`MemoryNetwork` moves payloads between string addresses with injectable loss, delay,
duplication, partitions, per-address slow-downs and connection set-up (frames to a destination
a source has only just started sending to are dropped, as a ZeroMQ DEALER with IMMEDIATE drops
them until its connection is up). It is generic over the payload: bytes for
the bus (through :class:`MemoryTransport`, which satisfies
:class:`llmnode.bus.transport.Transport`), message objects for the fast membership simulation.

Two clocks:
- virtual (default): frames wait in a heap ordered by delivery time; :meth:`MemoryNetwork.run_until`
  advances :attr:`MemoryNetwork.now` and delivers them in time order, synchronously.
- real (``realtime=True``): for asyncio tests of the real bus; each frame is delivered into its
  endpoint's asyncio queue after its delay with ``loop.call_later``.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from llmnode.errors import TransportError

T = TypeVar("T")
DelayFunction = Callable[[random.Random], float]

DEFAULT_QUEUE_LIMIT = 10_000


class MemoryNetwork(Generic[T]):
    """A lossy, delaying, partitionable network between addresses, on a virtual clock."""

    def __init__(
        self,
        *,
        seed: int,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        duplicate: float = 0.0,
        connect_delay: float = 0.0,
        realtime: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        #: Seconds after a source's first frame to a destination during which its frames to
        #: that destination are dropped (counted as "connecting"); 0: connected at once.
        self.connect_delay = connect_delay
        self._first_sent: dict[tuple[str, str], float] = {}
        self.loss = loss
        self.delay = delay
        self.duplicate = duplicate
        self.realtime = realtime
        self.now = 0.0
        self.dropped: Counter[str] = Counter()
        self.sent = 0
        self._heap: list[tuple[float, int, str, T]] = []
        self._counter = 0
        self._partitions: list[tuple[frozenset[str], frozenset[str]]] = []
        self._slow: dict[str, DelayFunction] = {}
        self._endpoints: dict[str, MemoryTransport] = {}

    # ---- faults ----------------------------------------------------------------------------

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Drop every frame between an address of ``side_a`` and one of ``side_b``."""
        self._partitions.append((frozenset(side_a), frozenset(side_b)))

    def heal(self) -> None:
        """Remove every partition."""
        self._partitions.clear()

    def slow(self, address: str, extra_delay: DelayFunction | None) -> None:
        """Delay every frame ``address`` sends or receives by ``extra_delay(rng)`` seconds
        (None removes the slow-down)."""
        if extra_delay is None:
            self._slow.pop(address, None)
        else:
            self._slow[address] = extra_delay

    def connect(self, source: str, destination: str, *, established: bool = False) -> None:
        """``source`` starts connecting to ``destination`` now (as the bus's ``add_peer`` opens
        a DEALER early), or has a connection already (``established``: a finished handshake).
        Only matters with :attr:`connect_delay`; a first send connects too."""
        if self.connect_delay:
            at = -float("inf") if established else self.now
            first = self._first_sent.setdefault((source, destination), at)
            if established and first > at:
                self._first_sent[source, destination] = at

    def _partitioned(self, source: str, destination: str) -> bool:
        for side_a, side_b in self._partitions:
            if (source in side_a and destination in side_b) or (
                source in side_b and destination in side_a
            ):
                return True
        return False

    def _delays(self, source: str, destination: str) -> list[float]:
        """The delays of the copies of one frame that will arrive (empty: it is lost)."""
        if self._partitions and self._partitioned(source, destination):
            self.dropped["partition"] += 1
            return []
        if self.connect_delay:
            first = self._first_sent.setdefault((source, destination), self.now)
            if self.now < first + self.connect_delay:
                self.dropped["connecting"] += 1
                return []
        copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
        delays: list[float] = []
        low, high = self.delay
        for _ in range(copies):
            if self.loss and self.rng.random() < self.loss:
                self.dropped["loss"] += 1
                continue
            delay = low if low == high else self.rng.uniform(low, high)
            if self._slow:
                slow_source = self._slow.get(source)
                slow_destination = self._slow.get(destination)
                if slow_source is not None:
                    delay += slow_source(self.rng)
                if slow_destination is not None:
                    delay += slow_destination(self.rng)
            delays.append(delay)
        return delays

    # ---- moving payloads -------------------------------------------------------------------

    def send(self, source: str, destination: str, payload: T) -> None:
        """Put ``payload`` on the wire from ``source`` to ``destination`` (it may be lost)."""
        self.sent += 1
        for delay in self._delays(source, destination):
            if self.realtime:
                self._deliver_later(destination, payload, delay)
            else:
                self._counter += 1
                heapq.heappush(self._heap, (self.now + delay, self._counter, destination, payload))

    def next_due(self) -> float | None:
        """When the earliest frame in flight arrives (None: nothing in flight)."""
        return self._heap[0][0] if self._heap else None

    def run_until(self, until: float, deliver: Callable[[str, T], None] | None = None) -> None:
        """Deliver, in time order, every frame due by ``until``, advancing :attr:`now`.
        ``deliver(address, payload)`` gets each one (default: the endpoint's queue). Frames
        that ``deliver`` sends while running are delivered too if they fall due in time."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            due, _, address, payload = heapq.heappop(heap)
            self.now = max(self.now, due)
            if deliver is not None:
                deliver(address, payload)
            else:
                self._to_endpoint(address, payload)
        self.now = max(self.now, until)

    # ---- endpoints (bytes only) ------------------------------------------------------------

    def endpoint(
        self: MemoryNetwork[bytes], address: str, queue_limit: int = DEFAULT_QUEUE_LIMIT
    ) -> MemoryTransport:
        """A :class:`MemoryTransport` at ``address`` on this network."""
        if address in self._endpoints:
            raise TransportError(f"address already in use: {address}")
        transport = MemoryTransport(self, address, queue_limit)
        self._endpoints[address] = transport
        return transport

    def _forget(self, address: str) -> None:
        self._endpoints.pop(address, None)

    def _to_endpoint(self, address: str, payload: T) -> None:
        endpoint = self._endpoints.get(address)
        if endpoint is None or not isinstance(payload, bytes):
            self.dropped["no_endpoint"] += 1
            return
        endpoint.arrive(payload)

    def _deliver_later(self, address: str, payload: T, delay: float) -> None:
        loop = asyncio.get_running_loop()
        if delay <= 0:
            loop.call_soon(self._to_endpoint, address, payload)
        else:
            loop.call_later(delay, self._to_endpoint, address, payload)


class MemoryTransport:
    """A :class:`~llmnode.bus.transport.Transport` on a :class:`MemoryNetwork` of bytes.

    Arriving frames wait in an asyncio queue of ``queue_limit`` frames; when it is full they
    are dropped and counted (``network.dropped["queue_full"]``), as a full zmq queue would.
    """

    def __init__(
        self,
        network: MemoryNetwork[bytes],
        address: str,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
    ) -> None:
        self._network = network
        self._address = address
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queue_limit = queue_limit
        self._closed = False

    @property
    def address(self) -> str:
        return self._address

    async def start(self) -> None:
        if self._closed:
            raise TransportError(f"transport closed: {self._address}")

    def send(self, address: str, frame: bytes) -> bool:
        if self._closed:
            return False
        self._network.send(self._address, address, frame)
        return True

    def connect(self, address: str) -> None:
        """Nothing to open: the network reaches every endpoint."""

    def disconnect(self, address: str) -> None:
        """Nothing to close."""

    def arrive(self, frame: bytes) -> None:
        """Called by the network: a frame reached this endpoint."""
        if self._closed:
            self._network.dropped["closed"] += 1
        elif self._queue.qsize() >= self._queue_limit:
            self._network.dropped["queue_full"] += 1
        else:
            self._queue.put_nowait(frame)

    async def recv(self) -> bytes:
        if self._closed:
            raise TransportError(f"transport closed: {self._address}")
        frame = await self._queue.get()
        if frame is None:
            raise TransportError(f"transport closed: {self._address}")
        return frame

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._network._forget(self._address)
        self._queue.put_nowait(None)  # wake a pending recv
