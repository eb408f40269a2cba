"""Admission before allocation: only mesh-key holders get a ZeroMQ connection (does socket I/O).

libzmq buffers a whole multipart message, and holds every accepted TCP connection, before any
byte reaches Python; so sealing alone cannot stop an outsider from exhausting memory or file
descriptors. Admission therefore happens inside libzmq, during the connection handshake:

- every inbox (ROUTER) is a CurveZMQ server with one published key pair
  (:func:`llmnode.bus.crypto.curve_server_keys`);
- every DEALER is a CurveZMQ client whose key pair is derived from the primary mesh key
  (:func:`llmnode.bus.crypto.curve_client_keys`): only a mesh-key holder can make it;
- a ZAP handler (pyzmq's :class:`~zmq.auth.asyncio.AsyncioAuthenticator`) accepts a client only
  if its public key is derived from a key in the live ring, so rotations apply to the next
  connection;
- ``HANDSHAKE_IVL`` closes a connection that has not finished its handshake within
  :data:`HANDSHAKE_TIMEOUT_MS`; before that, libzmq reads at most one handshake command.

A peer that fails admission is never a peer: nothing it sends reaches the pump. Refusals are
counted by reason (:data:`CONNECTION_REASONS`) from the inbox's socket monitor and logged at a
rate limit; a failed ``accept`` (out of file descriptors) is one of them, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from typing import Any, Final

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from llmnode.bus import crypto
from llmnode.bus.keyring import MeshKeyRing
from llmnode.errors import TransportError
from llmnode.log import RateLimitedLogger, get_logger

_log = get_logger(__name__)

HANDSHAKE_TIMEOUT_MS: Final = 5000
ZAP_DOMAIN: Final = "llmnode"
# monitor event -> counter name (connections refused, by reason)
CONNECTION_REASONS: Final[dict[int, str]] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "conn_refused_key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "conn_bad_handshake",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "conn_no_handshake",
    zmq.EVENT_ACCEPT_FAILED: "conn_accept_failed",
}
_SERVER_EVENTS: Final = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_ACCEPT_FAILED
    | zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
)
_CLIENT_EVENTS: Final = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED


class MeshKeyRefused(TransportError):
    """The node at an address refused our mesh key: none of the keys it holds matches ours."""

    code = "mesh_key_refused"


def raise_fd_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 16)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def configure_client(socket: zmq.Socket[Any], mesh_key: bytes) -> None:
    """Make ``socket`` a CurveZMQ client admitted by nodes that hold ``mesh_key``."""
    public, secret = crypto.curve_client_keys(mesh_key)
    socket.setsockopt(zmq.CURVE_SERVERKEY, crypto.curve_server_keys()[0])
    socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret)


class MeshKeyCredentials:
    """The ZAP callback: admits client keys derived from a key in the live ring."""

    def __init__(self, keyring: MeshKeyRing) -> None:
        self._keyring = keyring
        self._keys: list[bytes] = []
        self._allowed: frozenset[bytes] = frozenset()

    def callback(self, domain: str, key: bytes) -> bool:  # key: z85 text of the client key
        keys = self._keyring.keys
        if keys != self._keys:
            self._keys = keys
            self._allowed = frozenset(
                z85.encode(crypto.curve_client_keys(mesh_key)[0]) for mesh_key in keys
            )
        return key in self._allowed


class Admission:
    """The server side for one inbox: ZAP handler, CURVE options, refusal counters."""

    def __init__(self, keyring: MeshKeyRing) -> None:
        self.keyring = keyring
        self.refused: dict[str, int] = {}
        self.connections = 0  # accepted and not yet disconnected
        self._authenticator: AsyncioAuthenticator | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._log = RateLimitedLogger(_log)

    def start(self, context: zmq.asyncio.Context) -> None:
        """Install the ZAP handler on ``context`` (before any socket there binds)."""
        authenticator = AsyncioAuthenticator(context)
        authenticator.start()
        authenticator.configure_curve_callback(
            ZAP_DOMAIN, credentials_provider=MeshKeyCredentials(self.keyring)
        )
        self._authenticator = authenticator

    def configure_server(self, socket: zmq.asyncio.Socket) -> None:
        """CurveZMQ server options, the handshake deadline and the refusal monitor."""
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        socket.setsockopt(zmq.CURVE_SECRETKEY, crypto.curve_server_keys()[1])
        socket.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
        socket.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        monitor = socket.get_monitor_socket(_SERVER_EVENTS)
        self._monitor_task = asyncio.create_task(self._watch(monitor), name="bus_admission")

    async def _watch(self, monitor: Any) -> None:
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                kind = event["event"]
                if kind == zmq.EVENT_ACCEPTED:
                    self.connections += 1
                    continue
                if kind == zmq.EVENT_DISCONNECTED:
                    self.connections = max(0, self.connections - 1)
                    continue
                self.count(CONNECTION_REASONS[kind], event["value"])
        except (zmq.ZMQError, asyncio.CancelledError):
            pass
        finally:
            monitor.close(linger=0)

    def count(self, reason: str, value: int = 0) -> None:
        """Count one refused connection or message under ``reason``; log at a rate limit."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        detail = ""
        if reason == "conn_accept_failed" and value:
            detail = zmq.strerror(value)
        self._log.warning("connection_refused", key=reason, reason=reason, detail=detail)

    async def close(self) -> None:
        task, self._monitor_task = self._monitor_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None


class Watch:
    """A DEALER's handshake outcome, read from its monitor: refused, admitted, or not yet."""

    def __init__(self, dealer: zmq.Socket[Any]) -> None:
        self._monitor: Any = dealer.get_monitor_socket(_CLIENT_EVENTS)
        self._dealer = dealer
        self.refused = False
        self.admitted = False

    def poll(self) -> None:
        monitor = self._monitor
        while monitor is not None:
            try:
                event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            except (zmq.Again, zmq.ZMQError):
                return
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refused = True
            elif event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.admitted = True

    def close(self) -> None:
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._dealer.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
