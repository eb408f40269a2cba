"""The node's local control socket, for the CLI, the SDK and attached agents (does I/O).

A Unix socket (``ipc://<data dir>/control.sock``, mode 0600: only the node's owner can connect)
or a loopback TCP port, framed as :mod:`llmnode.nodes.control.wire` describes. Every connection
must first present the token from ``<data dir>/control.token`` (mode 0600), which a loopback TCP
address needs since any local user can connect to it. A connection that presents a wrong token,
sends a malformed frame or says nothing for ``AUTH_TIMEOUT_S`` is counted and closed, never
answered; an undecodable message is counted and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from llmnode.bus.identity import write_secret_file
from llmnode.errors import ConfigError, Rejected
from llmnode.log import RateLimitedLogger, get_logger
from llmnode.nodes.control.wire import FrameReader, frame, parse_address
from llmnode.schemas import messages
from llmnode.schemas.base import WireMessage

log = get_logger(__name__)

Handler = Callable[[bytes, WireMessage], Awaitable[None] | None]
KEYRING_FILE = "mesh.keys"  # the node's mesh key ring, in its data dir
AUTH_TIMEOUT_S = 5.0  # a connection must present the token within this
INBOX_LIMIT = 10_000  # decoded messages waiting for the handler; beyond it, reading pauses
SEND_BUFFER_LIMIT = 64 * 1024 * 1024  # bytes queued to one client that stopped reading: drop


def control_address(data_dir: Path, configured: str = "") -> str:
    if configured:
        return configured
    return f"ipc://{data_dir / 'control.sock'}"


class _Connection(asyncio.Protocol):
    """One client connection: authenticates, then hands decoded messages to the server."""

    def __init__(self, server: ControlServer, ident: bytes) -> None:
        self.server = server
        self.ident = ident
        self.transport: asyncio.Transport | None = None
        self.authenticated = False
        self._reader = FrameReader()
        self._auth_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)
        self._auth_timer = asyncio.get_running_loop().call_later(AUTH_TIMEOUT_S, self._auth_late)

    def _auth_late(self) -> None:
        if not self.authenticated:
            self.server.reject("no_token", 0)
            self.close()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except Rejected as error:
            self.server.reject(error.reason, len(data))
            self.close()
            return
        for body in frames:
            if self.transport is None:
                return
            if not self.authenticated:
                if not hmac.compare_digest(body, self.server.token_bytes):
                    self.server.reject("bad_token", len(body))
                    self.close()
                    return
                self.authenticated = True
                if self._auth_timer is not None:
                    self._auth_timer.cancel()
                self.server.connections[self.ident] = self
                continue
            self.server.received(self, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self.server.connections.pop(self.ident, None) is not None:
            self.server.disconnected(self.ident)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ControlServer:
    """Answers local clients. ``handler(client, message)`` runs for every valid message, in
    arrival order, as soon as it is read; it answers with :meth:`send` (any number of times, e.g.
    streams). When it returns an awaitable, later messages wait until that is done.
    ``on_disconnect(client)`` runs when an authenticated client's connection closes."""

    def __init__(
        self,
        data_dir: Path,
        address: str,
        handler: Handler,
        on_disconnect: Callable[[bytes], None] | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._requested = address
        self._handler = handler
        self._on_disconnect = on_disconnect
        self._server: asyncio.Server | None = None
        # Messages read while the handler is busy with an awaitable (in order), and the
        # awaitables themselves (first element None).
        self._inbox: asyncio.Queue[tuple[_Connection | None, Any]] = asyncio.Queue()
        self._busy = False
        self._paused: set[_Connection] = set()
        self._idents = itertools.count(1)
        self.connections: dict[bytes, _Connection] = {}
        self.token = secrets.token_urlsafe(32)
        self.token_bytes = self.token.encode()
        self.address = ""
        self.rejections: Counter[str] = Counter()
        self._rate_limited = RateLimitedLogger(log)

    def _connection(self) -> _Connection:
        return _Connection(self, next(self._idents).to_bytes(8, "big"))

    async def start(self) -> None:
        address = parse_address(self._requested)
        loop = asyncio.get_running_loop()
        try:
            if address.is_unix:
                _remove(address.path)  # a stale socket from a crashed node
                old_umask = os.umask(0o177)
                try:
                    self._server = await loop.create_unix_server(self._connection, address.path)
                finally:
                    os.umask(old_umask)
                os.chmod(address.path, 0o600)
                self.address = address.text
            else:
                self._server = await loop.create_server(
                    self._connection, address.host, address.port
                )
                port = self._server.sockets[0].getsockname()[1]
                host = f"[{address.host}]" if ":" in address.host else address.host
                self.address = f"tcp://{host}:{port}"
        except OSError as error:
            raise ConfigError(
                f"cannot bind the control socket {self._requested}: {error.strerror or error}"
            ) from error
        write_secret_file(self._data_dir / "control.token", self.token)
        write_secret_file(self._data_dir / "control.address", self.address)

    def received(self, connection: _Connection, body: bytes) -> None:
        try:
            message = messages.decode(body)
        except Rejected as error:
            self.reject(error.reason, len(body))
            return
        if self._busy:
            self._inbox.put_nowait((connection, message))
            if self._inbox.qsize() >= INBOX_LIMIT and connection.transport is not None:
                connection.transport.pause_reading()
                self._paused.add(connection)
            return
        pending = self._dispatch(connection.ident, message)
        if pending is not None:
            self._busy = True
            self._inbox.put_nowait((None, pending))

    def _dispatch(self, client: bytes, message: WireMessage) -> Awaitable[None] | None:
        try:
            return self._handler(client, message)
        except Exception as error:  # a bug must not take the control socket down
            log.exception(
                "control_handler_failed", message=type(message).__name__, error=str(error)
            )
            return None

    async def serve(self) -> None:
        """Finish the handler's awaitables, and the messages that arrived meanwhile, in order."""
        assert self._server is not None, "start() first"
        while True:
            connection, item = await self._inbox.get()
            if self._paused and self._inbox.qsize() < INBOX_LIMIT // 2:
                for paused in self._paused:
                    if paused.transport is not None:
                        paused.transport.resume_reading()
                self._paused.clear()
            pending = item if connection is None else self._dispatch(connection.ident, item)
            if pending is not None:
                try:
                    await pending
                except Exception as error:
                    log.exception("control_handler_failed", error=str(error))
            if self._inbox.empty():
                self._busy = False

    def send(self, client: bytes, message: WireMessage) -> bool:
        """Queue ``message`` to ``client``; False if it is gone or stopped reading."""
        connection = self.connections.get(client)
        transport = connection.transport if connection is not None else None
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            self.reject("client_not_reading", 0)
            return False
        transport.write(frame(messages.encode(message)))
        return True

    def disconnected(self, client: bytes) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect(client)

    def reject(self, reason: str, size: int) -> None:
        self.rejections[reason] += 1
        self._rate_limited.warning("control_frame_rejected", reason, reason=reason, size=size)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self.connections.values()):
            connection.close()
        for name in ("control.address", "control.token"):
            _remove(str(self._data_dir / name))
        if self.address.startswith("ipc://"):
            _remove(self.address.removeprefix("ipc://"))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
