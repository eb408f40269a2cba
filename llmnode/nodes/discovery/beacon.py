"""Zero-config LAN discovery with UDP beacons (I/O: one UDP socket).

Every few seconds a node broadcasts ``magic | key id | node id | address | tag`` on the LAN, where
``tag`` is a keyed BLAKE2b of the rest under the primary mesh key: only nodes holding a key of the
ring can announce themselves, and a listener learns nothing useful from a foreign beacon. A valid
beacon from an unknown node starts a join. Off with ``--no-beacon``. Where it listens and
announces follows ``--listen`` (:func:`llmnode.bus.lan.beacon_binding`); the format is in
docs/PROTOCOL.md, section 6.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from collections.abc import Callable

from llmnode.bus.bus import Bus
from llmnode.bus.keyring import key_id
from llmnode.bus.lan import BeaconBinding
from llmnode.log import RateLimitedLogger, get_logger

log = get_logger(__name__)
_MAGIC = b"LLMNODE1"
_TAG = 32


def _tag(key: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(body, key=key, digest_size=_TAG, person=b"llmnode-beacon").digest()


def encode_beacon(key: bytes, key_id: bytes, node: bytes, address: str) -> bytes:
    body = _MAGIC + key_id + node + address.encode()
    return body + _tag(key, body)


def decode_beacon(data: bytes, keys: dict[bytes, bytes]) -> tuple[bytes, str] | None:
    """``(node id, address)`` of a valid beacon under one of ``keys`` (by key id), else None."""
    if len(data) < len(_MAGIC) + 4 + 32 + _TAG or len(data) > 512 or not data.startswith(_MAGIC):
        return None
    body, tag = data[:-_TAG], data[-_TAG:]
    key = keys.get(body[8:12])
    if key is None or not hmac.compare_digest(_tag(key, body), tag):
        return None
    try:
        address = body[44:].decode()
    except UnicodeDecodeError:
        return None
    return body[12:44], address


class Beacon:
    def __init__(
        self,
        bus: Bus,
        port: int,
        on_peer: Callable[[bytes, str], None],
        on_reject: Callable[[str], None],
        *,
        interval: float = 5.0,
        broadcast: str = "255.255.255.255",
        binding: BeaconBinding | None = None,
    ) -> None:
        self._bus = bus
        self._port = port
        self._on_peer = on_peer
        self._on_reject = on_reject
        self._interval = interval
        self._binding = binding or BeaconBinding("", "", broadcast)
        self._broadcast = self._binding.broadcast
        self._rate_limited = RateLimitedLogger(log)

    def _socket(self, host: str | None = None, port: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        sock.bind(
            (
                self._binding.listen_host if host is None else host,
                self._port if port is None else port,
            )
        )
        return sock

    async def run(self) -> None:
        try:
            sock = self._socket()
            source = (
                self._socket(self._binding.source_host, 0) if self._binding.source_host else sock
            )
        except OSError as error:
            log.warning("beacon_disabled", port=self._port, reason=str(error))
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._announce(source, loop))
                group.create_task(self._listen(sock, loop))
        finally:
            sock.close()
            source.close()

    async def _announce(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            ring = self._bus.keyring
            frame = encode_beacon(
                ring.primary, ring.primary_id, self._bus.node_id, self._bus.address
            )
            try:
                await loop.sock_sendto(sock, frame, (self._broadcast, self._port))
            except OSError as error:
                self._rate_limited.warning("beacon_send_failed", "send", reason=str(error))
            await asyncio.sleep(self._interval)

    async def _listen(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            data, _ = await loop.sock_recvfrom(sock, 1024)
            ring = self._bus.keyring
            found = decode_beacon(data, {key_id(key): key for key in ring.keys})
            if found is None:  # another mesh's beacon, or garbage: counted by the node
                self._on_reject("bad_beacon")
                continue
            node, address = found
            if node != self._bus.node_id:
                self._on_peer(node, address)
