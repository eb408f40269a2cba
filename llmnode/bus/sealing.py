"""Frame sealing: bytes in, a signed and encrypted frame out, and back (pure, no I/O).

A frame is::

    header (92 bytes) || nonce (24) || ciphertext (body + 16-byte tag) || signature (64)

    header = magic "LN" | version u8 | kind u8 | mesh key id (4) | sender (32) | recipient (32)
             | epoch u32 | sequence u64 | timestamp ms u64          (network byte order)

The body is encrypted with XChaCha20-Poly1305 under the pair key of sender and recipient
(which folds in the mesh key; see :mod:`llmnode.bus.crypto`), with the header as associated
data. Hello frames go to nodes we only know by address: their recipient is zeros and their key
comes from the mesh key alone. The sender's Ed25519 signature covers everything before it, and
the sender field is its public key, so any receiver can verify with no lookup.

:meth:`Sealer.open` runs the cheap checks first (size, version, recipient, key id, timestamp
window, allowlist, replay window) and only then the signature verify and the decryption; the
replay window records a frame only once both succeeded. Every refusal is a
:class:`~llmnode.errors.Rejected` whose ``reason`` is one of :data:`REASONS`.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from llmnode.bus import crypto
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.replay import DEFAULT_WIDTH, ReplayWindows
from llmnode.errors import CryptoError, ProtocolError, Rejected
from llmnode.schemas.base import MAX_FRAME_BYTES, NODE_ID_BYTES, PROTOCOL_VERSION

MAGIC: Final = b"LN"
DATA: Final = 1
HELLO: Final = 2
KINDS: Final = frozenset({DATA, HELLO})

HEADER = struct.Struct("!2sBB4s32s32sIQQ")
HEADER_BYTES: Final = HEADER.size  # 92
OVERHEAD: Final = HEADER_BYTES + crypto.NONCE_BYTES + crypto.TAG_BYTES + crypto.SIGNATURE_BYTES
MAX_BODY_BYTES: Final = MAX_FRAME_BYTES - OVERHEAD
NO_RECIPIENT: Final = bytes(NODE_ID_BYTES)
MAX_EPOCH: Final = 0xFFFFFFFF

# Stable rejection reasons; the bus counts them under these names.
REASONS: Final = (
    "too_short",
    "too_large",
    "bad_version",
    "malformed",
    "wrong_recipient",
    "unknown_key",
    "stale",
    "future",
    "unknown_sender",
    "replay",
    "bad_signature",
    "decrypt_failed",
    "invalid_message",
)

_PAIR_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Opened:
    """A frame that passed every check: who sent it, when, and its decrypted body."""

    sender: bytes
    epoch: int
    seq: int
    timestamp: float  # the sender's clock, unix seconds
    kind: int
    body: bytes


class Sealer:
    """Seals frames from one identity and opens frames addressed to it.

    ``keyring`` is live (rotations apply to the next frame); ``epoch`` names this run of the
    node (a newer epoch from a sender replaces its replay window); ``allowlist``, when given,
    admits only those node ids. Not thread-safe: one event loop owns it.
    """

    def __init__(
        self,
        identity: Identity,
        keyring: MeshKeyRing,
        epoch: int,
        *,
        first_sequence: int = 0,
        timestamp_window_s: float = 60.0,
        allowlist: Collection[bytes] | None = None,
        replay_width: int = DEFAULT_WIDTH,
    ) -> None:
        if not 0 <= epoch <= MAX_EPOCH:
            raise ValueError("epoch must fit in 32 bits")
        self._identity = identity
        self._public = identity.node_id
        self._secret = identity.secret_key
        self.keyring = keyring
        self.epoch = epoch
        self._sequence = first_sequence
        self.timestamp_window_s = timestamp_window_s
        self.allowlist: frozenset[bytes] | None = (
            None if allowlist is None else frozenset(allowlist)
        )
        self._replay = ReplayWindows(replay_width)
        self._pair_keys: dict[tuple[bytes, bytes], bytes] = {}
        self._hello_keys: dict[bytes, bytes] = {}
        self._primary: bytes = b""
        self._primary_id: bytes = b""

    @property
    def node_id(self) -> bytes:
        return self._public

    @property
    def sequence(self) -> int:
        """The sequence number of the last frame sealed."""
        return self._sequence

    def _pair_key(self, peer: bytes, mesh_key: bytes) -> bytes:
        cache_key = (peer, mesh_key)
        key = self._pair_keys.get(cache_key)
        if key is None:
            if len(self._pair_keys) >= _PAIR_CACHE_LIMIT:
                self._pair_keys.clear()
            key = crypto.pair_key(self._secret, peer, mesh_key)
            self._pair_keys[cache_key] = key
        return key

    def forget(self, peer: bytes) -> None:
        """Drop what is kept per ``peer`` (its replay window, its pair keys): it left the mesh
        long ago. Safe because membership forgets a node only after its tombstone timeout,
        longer than the timestamp window, so any frame of its that is replayed later is refused
        as too old."""
        self._replay.forget(peer)
        for cache_key in [cache_key for cache_key in self._pair_keys if cache_key[0] == peer]:
            del self._pair_keys[cache_key]

    @property
    def tracked_senders(self) -> int:
        """Senders with a replay window (bounded by the members not yet forgotten)."""
        return len(self._replay)

    def _hello_key(self, mesh_key: bytes) -> bytes:
        key = self._hello_keys.get(mesh_key)
        if key is None:
            key = self._hello_keys[mesh_key] = crypto.hello_key(mesh_key)
        return key

    def seal(self, recipient: bytes, body: bytes, now: float, kind: int = DATA) -> bytes:
        """A frame carrying ``body`` to ``recipient`` (ignored for hello frames).

        Raises ProtocolError if the body is too large, CryptoError if ``recipient`` is not a
        valid node key.
        """
        if len(body) > MAX_BODY_BYTES:
            raise ProtocolError(f"message of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        mesh_key = self.keyring.primary
        if mesh_key is not self._primary:
            self._primary = mesh_key
            self._primary_id = crypto.key_id(mesh_key)
        if kind == HELLO:
            recipient = NO_RECIPIENT
            key = self._hello_key(mesh_key)
        elif kind == DATA:
            if len(recipient) != NODE_ID_BYTES:
                raise CryptoError("a recipient is a 32-byte node id")
            key = self._pair_key(recipient, mesh_key)
        else:
            raise ValueError(f"unknown frame kind {kind}")
        self._sequence += 1
        header = HEADER.pack(
            MAGIC,
            PROTOCOL_VERSION,
            kind,
            self._primary_id,
            self._public,
            recipient,
            self.epoch,
            self._sequence,
            int(now * 1000),
        )
        nonce = crypto.random_bytes(crypto.NONCE_BYTES)
        signed = header + nonce + crypto.encrypt(body, header, nonce, key)
        return signed + crypto.sign(signed, self._secret)

    def open(self, frame: bytes, now: float) -> Opened:
        """Check, verify and decrypt a frame; :class:`Rejected` (with a reason) otherwise."""
        size = len(frame)
        if size > MAX_FRAME_BYTES:
            raise Rejected("too_large", f"{size} bytes")
        if size < OVERHEAD:
            raise Rejected("too_short", f"{size} bytes")
        (magic, version, kind, identifier, sender, recipient, epoch, sequence, stamp) = (
            HEADER.unpack_from(frame)
        )
        if magic != MAGIC or version != PROTOCOL_VERSION:
            raise Rejected("bad_version", f"version {version}")
        if kind == DATA:
            if recipient != self._public:
                raise Rejected("wrong_recipient")
        elif kind == HELLO:
            if recipient != NO_RECIPIENT:
                raise Rejected("wrong_recipient")
        else:
            raise Rejected("malformed", f"frame kind {kind}")
        mesh_key = self.keyring.by_id(identifier)
        if mesh_key is None:
            raise Rejected("unknown_key", identifier.hex())
        timestamp = stamp / 1000.0
        if timestamp < now - self.timestamp_window_s:
            raise Rejected("stale", f"{now - timestamp:.1f} s old")
        if timestamp > now + self.timestamp_window_s:
            raise Rejected("future", f"{timestamp - now:.1f} s ahead")
        if self.allowlist is not None and sender not in self.allowlist:
            raise Rejected("unknown_sender")
        if not self._replay.check(sender, epoch, sequence):
            raise Rejected("replay", f"epoch {epoch} sequence {sequence}")
        frame = bytes(frame)  # a no-op for bytes; libsodium's bindings want bytes
        signed_end = size - crypto.SIGNATURE_BYTES
        if not crypto.verify(frame[:signed_end], frame[signed_end:], sender):
            raise Rejected("bad_signature")
        try:
            key = self._hello_key(mesh_key) if kind == HELLO else self._pair_key(sender, mesh_key)
            body = crypto.decrypt(
                frame[HEADER_BYTES + crypto.NONCE_BYTES : signed_end],
                frame[:HEADER_BYTES],
                frame[HEADER_BYTES : HEADER_BYTES + crypto.NONCE_BYTES],
                key,
            )
        except CryptoError as error:
            raise Rejected("decrypt_failed") from error
        if not self._replay.accept(sender, epoch, sequence):
            raise Rejected("replay", f"epoch {epoch} sequence {sequence}")
        return Opened(sender, epoch, sequence, timestamp, kind, body)
