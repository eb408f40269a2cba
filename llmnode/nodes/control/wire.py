"""Framing and addresses of the local control socket (no I/O).

The control socket is a stream (a Unix socket, or loopback TCP) carrying frames: a 4-byte
big-endian length, then that many bytes. The first frame a client sends is the node's control
token; every later frame, both ways, is one msgpack ``Ctl*`` message.

A plain stream instead of a ZeroMQ socket: the control socket has exactly one peer per
connection, needs no reconnection or routing logic, and without ZeroMQ's I/O threads a local
round trip wakes two threads instead of six (which matters on small machines; see
``benchmarks/agents.py``). A closed connection is also seen at once by both sides.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from llmnode.errors import ConfigError, Rejected
from llmnode.schemas.base import MAX_FRAME_BYTES

_LENGTH = struct.Struct("!I")
HEADER_BYTES = _LENGTH.size


@dataclass(frozen=True)
class ControlAddress:
    """``ipc://PATH`` (a Unix socket) or ``tcp://HOST:PORT`` (loopback only; port 0: any)."""

    text: str
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def is_unix(self) -> bool:
        return bool(self.path)


def parse_address(text: str) -> ControlAddress:
    """Parse a control address; raises :class:`ConfigError` for anything not local."""
    if text.startswith("ipc://"):
        path = text.removeprefix("ipc://")
        if not path:
            raise ConfigError(f"the control address {text!r} has no path")
        if len(path.encode()) > 107:
            raise ConfigError(f"the control socket path is too long for a Unix socket: {path}")
        return ControlAddress(text=text, path=path)
    if text.startswith("tcp://"):
        rest = text.removeprefix("tcp://")
        host, separator, port_text = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not separator or not port_text.isdigit() or int(port_text) > 65535:
            raise ConfigError(f"the control address {text!r} needs a port: tcp://127.0.0.1:PORT")
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ConfigError(f"the control socket must be local (ipc or loopback): {text}")
        return ControlAddress(text=text, host=host, port=int(port_text))
    raise ConfigError(f"the control address must be ipc://PATH or tcp://127.0.0.1:PORT: {text!r}")


def frame(body: bytes) -> bytes:
    """One frame: the length header, then ``body``."""
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Splits a byte stream into frames. :meth:`feed` raises :class:`Rejected` (reason
    ``bad_framing`` or ``too_large``) for an empty or oversized frame: the stream cannot be
    trusted after it."""

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        end = len(buffer)
        while end - offset >= HEADER_BYTES:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length == 0:
                raise Rejected("bad_framing", "empty control frame")
            if length > self._limit:
                raise Rejected("too_large", f"control frame of {length} bytes")
            if end - offset - HEADER_BYTES < length:
                break
            start = offset + HEADER_BYTES
            frames.append(bytes(buffer[start : start + length]))
            offset = start + length
        if offset:
            del buffer[:offset]
        return frames
