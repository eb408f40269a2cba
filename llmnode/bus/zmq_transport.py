"""The ZeroMQ transport: one ROUTER inbox, one DEALER per peer address (does network I/O).

The Zyre pattern: a node binds one ROUTER and connects one DEALER to each peer's ROUTER.
Frames only ever travel DEALER -> ROUTER, so DEALERs are send-only and replies come back
through the peer's own DEALER. Sockets are bounded everywhere:

- ROUTER: ROUTER_HANDOVER (a restarted peer at the same address takes over its routing id),
  RCVHWM, MAXMSGSIZE = MAX_FRAME_BYTES (libzmq drops an oversized frame and the connection
  that sent it before any of it reaches Python), linger 0.
- DEALER: SNDTIMEO 0, IMMEDIATE (nothing queues to a peer that is not connected), linger 0,
  SNDHWM. :meth:`ZmqTransport.send` returns False on a full or unconnected queue: a signal to
  the caller, never a hang. Idle DEALERs beyond ``max_peers`` are closed, least recent first.

With a key ring (:meth:`ZmqTransport.use_keyring`, which :class:`~llmnode.bus.bus.Bus` calls),
every socket is admitted by :mod:`llmnode.bus.admission`: the inbox only accepts connections
from mesh-key holders, and refused connections and multipart messages are counted by reason in
:attr:`ZmqTransport.rejections`.

zmq errors are translated here: a bad listen address is a :class:`ConfigError` with one line.
"""

from __future__ import annotations

import socket as stdlib_socket
from collections import OrderedDict, deque
from typing import Any

import zmq
import zmq.asyncio

from llmnode.bus.admission import Admission, Watch, configure_client, raise_fd_limit
from llmnode.bus.keyring import MeshKeyRing
from llmnode.errors import ConfigError, TransportError
from llmnode.log import RateLimitedLogger, get_logger
from llmnode.schemas.base import MAX_FRAME_BYTES

_log = get_logger(__name__)
_SCHEMES = ("tcp://", "ipc://", "inproc://")
_DRAIN_LIMIT = 512  # frames taken per wakeup of the inbox


def check_address(address: str) -> str:
    """``address`` if it looks like a zmq endpoint we can dial, else ConfigError."""
    if not isinstance(address, str) or not address.startswith(_SCHEMES) or len(address) > 255:
        raise ConfigError(f"not a transport address: {address!r} (expected tcp://HOST:PORT)")
    if address.startswith("tcp://"):
        host, separator, port = address[len("tcp://") :].rpartition(":")
        if not separator or not host or not (port.isdigit() or port == "*"):
            raise ConfigError(f"not a transport address: {address!r} (expected tcp://HOST:PORT)")
    return address


def _reachable(endpoint: str) -> str:
    """Replace a wildcard bind host with this machine's address, so peers can dial it."""
    for wildcard in ("tcp://0.0.0.0:", "tcp://[::]:", "tcp://*:"):
        if endpoint.startswith(wildcard):
            try:
                host = stdlib_socket.gethostbyname(stdlib_socket.gethostname())
            except OSError:
                host = "127.0.0.1"
            return f"tcp://{host}:{endpoint[len(wildcard) :]}"
    return endpoint


class ZmqTransport:
    """Moves sealed frames between nodes over zmq (see the module docstring).

    ``listen`` is the bind endpoint (port 0 or ``*`` picks a free port); ``advertise``, when
    given, is the address reported to peers (NAT, containers). asyncio only, one event loop.
    """

    def __init__(
        self,
        listen: str = "tcp://127.0.0.1:0",
        advertise: str | None = None,
        high_water_mark: int = 1000,
        *,
        max_peers: int = 256,
        keyring: MeshKeyRing | None = None,
    ) -> None:
        self._listen = check_address(listen)
        self._advertise = None if advertise is None else check_address(advertise)
        self._high_water_mark = high_water_mark
        self._max_peers = max_peers
        self._context: zmq.asyncio.Context | None = None
        self._sync_context: zmq.Context[Any] | None = None
        self._inbox: zmq.asyncio.Socket | None = None
        self._inbox_sync: zmq.Socket[Any] | None = None
        self._pending: deque[bytes] = deque()
        self._dealers: OrderedDict[str, zmq.Socket[Any]] = OrderedDict()
        self._dealer_keys: dict[str, bytes] = {}
        self._watches: dict[str, Watch] = {}
        self._admission = None if keyring is None else Admission(keyring)
        self._address = ""
        self._routing_id = b""
        self._failures = RateLimitedLogger(_log)
        self.dropped_malformed = 0

    @property
    def address(self) -> str:
        if not self._address:
            raise TransportError("the transport has not started")
        return self._address

    def use_keyring(self, keyring: MeshKeyRing) -> None:
        """Admit only holders of a key in ``keyring`` (live); call before :meth:`start`."""
        if self._context is not None:
            raise TransportError("use_keyring must be called before the transport starts")
        self._admission = Admission(keyring)

    @property
    def rejections(self) -> dict[str, int]:
        """Connections and messages refused before any frame reached Python, by reason."""
        counts = {} if self._admission is None else dict(self._admission.refused)
        if self.dropped_malformed:
            counts["multipart"] = self.dropped_malformed
        return counts

    @property
    def connections(self) -> int:
        """Inbound connections open now (counted when admission is on, else 0)."""
        return 0 if self._admission is None else self._admission.connections

    async def start(self) -> None:
        if self._context is not None:
            return
        listen = self._listen
        if listen.startswith("tcp://") and listen.endswith(":0"):
            listen = listen[:-2] + ":*"
        self._context = zmq.asyncio.Context()
        self._sync_context = zmq.Context.shadow(self._context.underlying)
        if self._admission is not None:
            raise_fd_limit()
            self._admission.start(self._context)
        inbox = self._context.socket(zmq.ROUTER)
        try:
            if self._admission is not None:
                self._admission.configure_server(inbox)
            inbox.setsockopt(zmq.LINGER, 0)
            inbox.setsockopt(zmq.ROUTER_HANDOVER, 1)
            inbox.setsockopt(zmq.RCVHWM, self._high_water_mark)
            inbox.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
            inbox.bind(listen)
            endpoint = inbox.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as error:
            inbox.close(linger=0)
            if self._admission is not None:
                await self._admission.close()
            self._context.term()
            self._context = None
            raise ConfigError(f"cannot listen on {self._listen}: {error.strerror}") from error
        self._inbox = inbox
        self._inbox_sync = zmq.Socket.shadow(inbox.underlying)
        self._address = self._advertise or _reachable(endpoint)
        # Our DEALERs name themselves by our address, so a restarted node at the same address
        # hands over its old routing id on the peer's ROUTER instead of being refused.
        self._routing_id = self._address.encode("utf-8")[:255]
        _log.debug("transport_started", listen=endpoint, address=self._address)

    def _dealer(self, address: str) -> zmq.Socket[Any] | None:
        dealer: zmq.Socket[Any] | None = self._dealers.get(address)
        if dealer is not None:
            self._dealers.move_to_end(address)
            return dealer
        if self._sync_context is None:
            return None
        dealer = self._sync_context.socket(zmq.DEALER)
        try:
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.SNDTIMEO, 0)
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            dealer.setsockopt(zmq.SNDHWM, self._high_water_mark)
            dealer.setsockopt(zmq.RCVHWM, 1)  # nothing is ever sent back on this socket
            dealer.setsockopt(zmq.ROUTING_ID, self._routing_id)
            if self._admission is not None:
                mesh_key = self._admission.keyring.primary
                configure_client(dealer, mesh_key)
                self._dealer_keys[address] = mesh_key
            dealer.connect(check_address(address))
        except (zmq.ZMQError, ConfigError) as error:
            dealer.close(linger=0)
            self._failures.warning(
                "peer_address_refused", key=address, address=address, error=str(error)
            )
            return None
        self._dealers[address] = dealer
        while len(self._dealers) > self._max_peers:
            oldest = next(iter(self._dealers))
            self.disconnect(oldest)
        return dealer

    def send(self, address: str, frame: bytes) -> bool:
        """Queue ``frame`` for ``address``; False if its queue is full, unconnected or closed."""
        dealer = self._dealer(address)
        if dealer is None:
            return False
        try:
            dealer.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
        except zmq.Again:
            if self._stale(address):  # made under a mesh key no longer primary: remake it
                self.disconnect(address)
                return self.send(address, frame)
            return False
        except zmq.ZMQError as error:
            self._failures.warning(
                "send_failed", key=address, address=address, error=error.strerror
            )
            return False
        return True

    def connect(self, address: str) -> None:
        """Open the DEALER to ``address`` now, so the first send finds it connected."""
        self._dealer(address)

    def _stale(self, address: str) -> bool:
        admission = self._admission
        key = self._dealer_keys.get(address)
        return admission is not None and key is not None and key != admission.keyring.primary

    def disconnect(self, address: str) -> None:
        self._dealer_keys.pop(address, None)
        watch = self._watches.pop(address, None)
        if watch is not None:
            watch.close()
        dealer = self._dealers.pop(address, None)
        if dealer is not None:
            dealer.close(linger=0)

    def watch(self, address: str) -> None:
        """Start recording whether ``address`` admits our key (for a handshake)."""
        dealer = self._dealer(address)
        if dealer is not None and self._admission is not None and address not in self._watches:
            self._watches[address] = Watch(dealer)

    def refused(self, address: str) -> bool:
        """Whether ``address`` refused our mesh key since :meth:`watch` (and never admitted it)."""
        watch = self._watches.get(address)
        if watch is None:
            return False
        watch.poll()
        return watch.refused and not watch.admitted

    def unwatch(self, address: str) -> None:
        watch = self._watches.pop(address, None)
        if watch is not None:
            watch.close()

    async def recv(self) -> bytes:
        """The next frame that arrived; drains every ready frame per wakeup."""
        pending = self._pending
        if pending:
            return pending.popleft()
        inbox, inbox_sync = self._inbox, self._inbox_sync
        if inbox is None or inbox_sync is None:
            raise TransportError("the transport is not running")
        while True:
            try:
                parts = await inbox.recv_multipart(copy=True)
            except zmq.ZMQError as error:
                raise TransportError(f"inbox failed: {error.strerror}") from error
            self._take(parts)
            for _ in range(_DRAIN_LIMIT):
                try:
                    parts = inbox_sync.recv_multipart(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                except zmq.ZMQError as error:
                    raise TransportError(f"inbox failed: {error.strerror}") from error
                self._take(parts)
            if pending:
                return pending.popleft()

    def _take(self, parts: list[bytes]) -> None:
        if len(parts) == 2:  # [routing id, frame]
            self._pending.append(parts[1])
        else:
            self.dropped_malformed += 1

    @property
    def peer_sockets(self) -> int:
        return len(self._dealers)

    async def close(self) -> None:
        for address in list(self._dealers):
            self.disconnect(address)
        if self._admission is not None:
            await self._admission.close()
        if self._inbox is not None:
            self._inbox.close(linger=0)
            self._inbox = None
            self._inbox_sync = None
        if self._context is not None:
            self._context.term()
            self._context = None
            self._sync_context = None
        self._pending.clear()
