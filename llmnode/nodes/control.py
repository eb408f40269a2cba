"""The node's local control socket: a ZeroMQ ROUTER for the CLI, the SDK and attached agents (I/O).

Authenticated two ways: the ipc socket file is mode 0600 (only the node's owner can connect), and
every frame carries the token from ``<data dir>/control.token`` (mode 0600), which a loopback TCP
control address needs. Frames that fail either check are counted and dropped, never answered.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import zmq
import zmq.asyncio

from llmnode.bus.identity import write_secret_file
from llmnode.errors import ConfigError, Rejected
from llmnode.log import RateLimitedLogger, get_logger
from llmnode.schemas import messages
from llmnode.schemas.base import MAX_FRAME_BYTES, WireMessage

log = get_logger(__name__)

Handler = Callable[[bytes, WireMessage], Awaitable[None]]
KEYRING_FILE = "mesh.keys"  # the node's mesh key ring, in its data dir


def control_address(data_dir: Path, configured: str = "") -> str:
    if configured:
        return configured
    return f"ipc://{data_dir / 'control.sock'}"


class ControlServer:
    """ROUTER socket answering local clients. ``handler(client, message)`` runs for every valid
    frame; it answers with :meth:`send` (any number of times, e.g. streams)."""

    def __init__(self, data_dir: Path, address: str, handler: Handler) -> None:
        self._data_dir = data_dir
        self._requested = address
        self._handler = handler
        self._context = zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket | None = None
        self.token = secrets.token_urlsafe(32)
        self.address = ""
        self.rejections: Counter[str] = Counter()
        self._rate_limited = RateLimitedLogger(log)

    def start(self) -> None:
        if self._requested.startswith("tcp://") and not self._requested.startswith(
            ("tcp://127.", "tcp://localhost", "tcp://[::1]")
        ):
            raise ConfigError(
                f"the control socket must be local (ipc or loopback): {self._requested}"
            )
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        socket.setsockopt(zmq.SNDHWM, 10_000)
        path: Path | None = None
        if self._requested.startswith("ipc://"):
            path = Path(self._requested.removeprefix("ipc://"))
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale socket from a crashed node
        old_umask = os.umask(0o177)
        try:
            if self._requested.endswith(":0"):
                port = socket.bind_to_random_port(self._requested.rsplit(":", 1)[0])
                self.address = f"{self._requested.rsplit(':', 1)[0]}:{port}"
            else:
                socket.bind(self._requested)
                self.address = self._requested
        except zmq.ZMQError as error:
            socket.close(0)
            raise ConfigError(
                f"cannot bind the control socket {self._requested}: {error}"
            ) from error
        finally:
            os.umask(old_umask)
        if path is not None:
            os.chmod(path, 0o600)
        self._socket = socket
        write_secret_file(self._data_dir / "control.token", self.token)
        write_secret_file(self._data_dir / "control.address", self.address)

    async def serve(self) -> None:
        assert self._socket is not None, "start() first"
        token = self.token.encode()
        while True:
            frames = await self._socket.recv_multipart(copy=True)
            if len(frames) != 3:
                self._reject("bad_framing", len(frames))
                continue
            client, presented, body = frames
            if not hmac.compare_digest(presented, token):
                self._reject("bad_token", len(body))
                continue
            try:
                message = messages.decode(body)
            except Rejected as error:
                self._reject(error.reason, len(body))
                continue
            await self._handler(client, message)

    def send(self, client: bytes, message: WireMessage) -> bool:
        if self._socket is None:
            return False
        try:
            self._socket.send_multipart([client, messages.encode(message)], flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError:
            return False
        return True

    def _reject(self, reason: str, size: int) -> None:
        self.rejections[reason] += 1
        self._rate_limited.warning("control_frame_rejected", reason, reason=reason, size=size)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        for name in ("control.address", "control.token"):
            with contextlib.suppress(FileNotFoundError):
                (self._data_dir / name).unlink()
        if self.address.startswith("ipc://"):
            with contextlib.suppress(FileNotFoundError):
                Path(self.address.removeprefix("ipc://")).unlink()
