"""The secure message bus: typed messages to node ids, sealed over a transport (does I/O).

:class:`Bus` joins the pure parts (:class:`~llmnode.bus.sealing.Sealer`, the schema codec)
to a :class:`~llmnode.bus.transport.Transport`:

- ``send(node_id, message)`` encodes, seals to the peer and queues it; it never raises and
  never waits: False means unknown peer, full queue or a message that cannot be sent.
- frames are read (by a lone ``receive()`` itself, else by a pump task: :mod:`llmnode.bus.reader`),
  opened and decoded; handshakes are answered here, the rest go to ``receive()``. Bad input is
  counted by reason in ``rejections``, logged at a rate limit and skipped; it never stops
  reading. When the application does not keep up, the pump waits, so back-pressure reaches the
  transport's bounded queues instead of memory.
- ``connect(address)`` is the handshake: a Hello in a hello frame (mesh key only) to an address,
  answered by a HelloAck in a data frame; both sides then know each other's key and address.
  A transport with admission (:mod:`llmnode.bus.admission`) gets the key ring at start, and a
  node that refuses our mesh key ends ``connect`` at once with
  :class:`~llmnode.bus.admission.MeshKeyRefused`.

Thread-unsafe: one asyncio event loop owns a bus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import msgspec

from llmnode.bus import crypto
from llmnode.bus.admission import MeshKeyRefused
from llmnode.bus.identity import Identity, node_id_to_text
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.reader import Reader
from llmnode.bus.sealing import HELLO, MAX_EPOCH, NO_RECIPIENT, Sealer
from llmnode.bus.transport import Transport
from llmnode.errors import MeshError, Rejected, TransportError
from llmnode.log import RateLimitedLogger, get_logger
from llmnode.schemas.base import PROTOCOL_VERSION, WireMessage
from llmnode.schemas.handshake import Hello, HelloAck
from llmnode.schemas.messages import decode, encode

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message that arrived, with the node that sent it (proved by its signature)."""

    sender: bytes
    message: WireMessage
    received_at: float


class Bus:
    """Signed and encrypted messages between nodes (see the module docstring)."""

    def __init__(
        self,
        identity: Identity,
        keyring: MeshKeyRing,
        transport: Transport,
        *,
        epoch: int | None = None,
        clock: Callable[[], float] = time.time,
        allowlist: Collection[bytes] | None = None,
        timestamp_window_s: float = 60.0,
        name: str | None = None,
        inbox_limit: int = 10_000,
    ) -> None:
        self._identity = identity
        self._transport = transport
        self._clock = clock
        self.name = name if name is not None else identity.name[:12]
        if epoch is None:
            epoch = int(clock()) & MAX_EPOCH
        # Sequence numbers start at the wall clock in microseconds, so a node restarted within
        # the same second (same epoch) still sends numbers above any it sent before.
        self._sealer = Sealer(
            identity,
            keyring,
            epoch,
            first_sequence=time.time_ns() // 1000,
            timestamp_window_s=timestamp_window_s,
            allowlist=allowlist,
        )
        self._peers: dict[bytes, str] = {}
        self._handshakes: dict[bytes, asyncio.Future[bytes]] = {}
        self._reader: Reader[Inbound] = Reader(
            transport.recv, lambda frame: self._handle(frame, self._clock()), inbox_limit
        )
        self._rejections: dict[str, int] = {}
        self._stats: dict[str, int] = {
            "sent": 0,
            "bytes_sent": 0,  # sealed frames, as handed to the transport
            "received": 0,
            "send_failed": 0,
            "send_unknown_peer": 0,
            "rejected": 0,
            "hellos_received": 0,
            "hello_acks_received": 0,
        }
        # [frames, bytes] by message class, sent and received (see ``traffic``): cheap to count
        self.count_traffic = True  # False: not counted (a node's ``metrics = false``)
        self._sent: dict[type, list[int]] = {}
        self._received: dict[type, list[int]] = {}
        self._rejection_log = RateLimitedLogger(_log)

    # -- properties -------------------------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        return self._identity.node_id

    @property
    def address(self) -> str:
        return self._transport.address

    @property
    def epoch(self) -> int:
        return self._sealer.epoch

    @property
    def keyring(self) -> MeshKeyRing:
        """The live key ring: rotations on it apply to the next frame sealed or opened."""
        return self._sealer.keyring

    @property
    def allowlist(self) -> frozenset[bytes] | None:
        return self._sealer.allowlist

    @allowlist.setter
    def allowlist(self, node_ids: Collection[bytes] | None) -> None:
        self._sealer.allowlist = None if node_ids is None else frozenset(node_ids)

    @property
    def rejections(self) -> dict[str, int]:
        """Frames refused so far, by reason, with the transport's refused connections."""
        counts = dict(self._rejections)
        counts.update(getattr(self._transport, "rejections", {}))
        return counts

    def traffic(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(frames, bytes) of sealed frames, by ("sent" | "received", message type name)."""
        return {
            (direction, kind.__name__): (counts[0], counts[1])
            for direction, table in (("sent", self._sent), ("received", self._received))
            for kind, counts in table.items()
        }

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    @property
    def peers(self) -> dict[bytes, str]:
        return dict(self._peers)

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._reader.started:
            return
        use_keyring = getattr(self._transport, "use_keyring", None)
        if use_keyring is not None:
            use_keyring(self._sealer.keyring)
        await self._transport.start()
        self._reader.start()
        _log.debug("bus_started", address=self.address, epoch=self.epoch)

    async def close(self) -> None:
        await self._reader.stop()
        for future in self._handshakes.values():
            if not future.done():
                future.set_exception(TransportError("the bus closed"))
        self._handshakes.clear()
        await self._transport.close()  # a consumer reading it directly gets its TransportError

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- peers ------------------------------------------------------------------------------

    def add_peer(self, node_id: bytes, address: str) -> None:
        """Send to ``node_id`` at ``address`` from now on (membership calls this)."""
        if self._peers.get(node_id) == address:
            return
        self._peers[node_id] = address
        self._transport.connect(address)  # open it early, so the first send finds it up

    def forget_peer(self, node_id: bytes) -> None:
        """Stop sending to ``node_id`` (it left or died); its connection is closed."""
        address = self._peers.pop(node_id, None)
        if address is not None and address not in self._peers.values():
            self._transport.disconnect(address)
        self._sealer.forget(node_id)

    @property
    def tracked_senders(self) -> int:
        """Senders whose replay window is kept: bounded by the members not yet forgotten."""
        return self._sealer.tracked_senders

    def peer_address(self, node_id: bytes) -> str | None:
        return self._peers.get(node_id)

    # -- sending ----------------------------------------------------------------------------

    def send(self, node_id: bytes, message: WireMessage) -> bool:
        """Seal ``message`` to ``node_id`` and queue it. Never raises, never waits."""
        address = self._peers.get(node_id)
        if address is None:
            self._stats["send_unknown_peer"] += 1
            return False
        try:
            frame = self._sealer.seal(node_id, encode(message), self._clock())
        except (MeshError, msgspec.MsgspecError, TypeError, ValueError, OverflowError) as error:
            self._stats["send_failed"] += 1
            self._rejection_log.warning(
                "send_refused",
                key="send_refused",
                peer=node_id_to_text(node_id)[:12],
                error=str(error)[:200],
            )
            return False
        if self._transport.send(address, frame):
            self._stats["sent"] += 1
            self._stats["bytes_sent"] += len(frame)
            if self.count_traffic:
                counts = self._sent.get(type(message))
                if counts is None:
                    counts = self._sent[type(message)] = [0, 0]
                counts[0] += 1
                counts[1] += len(frame)
            return True
        self._stats["send_failed"] += 1
        return False

    async def connect(self, address: str, timeout: float = 5.0) -> bytes:
        """Handshake with the node at ``address``; its node id. TransportError on timeout."""
        loop = asyncio.get_running_loop()
        nonce = crypto.random_bytes(16)
        future: asyncio.Future[bytes] = loop.create_future()
        self._handshakes[nonce] = future
        body = encode(Hello(address=self.address, nonce=nonce, name=self.name))
        self._transport.connect(address)
        watch = getattr(self._transport, "watch", None)
        refused = getattr(self._transport, "refused", None)
        if watch is not None:
            watch(address)
        deadline = loop.time() + timeout
        interval = 0.01
        try:
            while True:
                frame = self._sealer.seal(NO_RECIPIENT, body, self._clock(), HELLO)
                self._transport.send(address, frame)
                remaining = deadline - loop.time()
                if refused is not None and refused(address):
                    raise MeshKeyRefused(
                        f"{address} refused our mesh key: none of the keys it holds matches ours"
                    )
                if remaining <= 0:
                    raise TransportError(f"no answer from {address} within {timeout:g} s")
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(interval, remaining))
                except TimeoutError:
                    interval = min(interval * 2, 0.25)
        finally:
            unwatch = getattr(self._transport, "unwatch", None)
            if unwatch is not None:
                unwatch(address)
            self._handshakes.pop(nonce, None)
            if not future.done():
                future.cancel()

    # -- receiving --------------------------------------------------------------------------

    async def receive(self) -> Inbound:
        """The next message from a peer. Bad frames never surface here; they are counted."""
        return await self._reader.receive()

    def receive_nowait(self) -> Inbound | None:
        """A message that already arrived, or None (for draining in batches)."""
        return self._reader.receive_nowait()

    def _handle(self, frame: bytes, now: float) -> Inbound | None:
        sealer = self._sealer
        try:
            opened = sealer.open(frame, now)
            message = decode(opened.body)
        except Rejected as rejection:
            self._reject(rejection)
            return None
        if opened.kind == HELLO:
            if isinstance(message, Hello):
                self._on_hello(opened.sender, message)
            else:
                self._reject(Rejected("invalid_message", "a hello frame must carry a Hello"))
            return None
        if isinstance(message, HelloAck):
            self._on_hello_ack(opened.sender, message)
            return None
        if isinstance(message, Hello):
            self._reject(Rejected("invalid_message", "a Hello must travel in a hello frame"))
            return None
        self._stats["received"] += 1
        if self.count_traffic:
            counts = self._received.get(type(message))
            if counts is None:
                counts = self._received[type(message)] = [0, 0]
            counts[0] += 1
            counts[1] += len(frame)
        return Inbound(opened.sender, message, now)

    def _reject(self, rejection: Rejected) -> None:
        reason = rejection.reason
        self._rejections[reason] = self._rejections.get(reason, 0) + 1
        self._stats["rejected"] += 1
        self._rejection_log.warning(
            "frame_rejected", key=reason, reason=reason, detail=rejection.detail
        )

    def _on_hello(self, sender: bytes, hello: Hello) -> None:
        self._stats["hellos_received"] += 1
        if hello.version != PROTOCOL_VERSION:
            self._reject(Rejected("bad_version", f"hello version {hello.version}"))
            return
        self.add_peer(sender, hello.address)
        self.send(sender, HelloAck(address=self.address, nonce=hello.nonce, name=self.name))
        _log.debug("hello_received", peer=node_id_to_text(sender)[:12], address=hello.address)

    def _on_hello_ack(self, sender: bytes, ack: HelloAck) -> None:
        self._stats["hello_acks_received"] += 1
        future = self._handshakes.get(ack.nonce)
        if future is None or future.done():
            return  # a late answer to a handshake already finished: harmless
        self.add_peer(sender, ack.address)
        future.set_result(sender)

    def describe(self) -> dict[str, Any]:
        """A summary for status output and logs."""
        return {
            "node_id": self._identity.name,
            "address": self.address,
            "epoch": self.epoch,
            "peers": len(self._peers),
            "stats": self.stats,
            "rejections": self.rejections,
        }
