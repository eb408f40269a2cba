"""The mesh key ring: symmetric keys that admit a node to the mesh (file I/O in load/save).

One primary key seals outgoing frames; every key in the ring is accepted on incoming ones, so a
running mesh rotates without dropping traffic: add the new key on every node, make it primary
on every node, then remove the old one. Frames name their key by a 4-byte id (a hash).

Text form (``LLMNODE_MESH_KEY``, ``--mesh-key``): urlsafe base64 of 32 bytes; a comma-separated
list names several keys, the first being primary.
"""

from __future__ import annotations

from pathlib import Path

from llmnode.bus import crypto
from llmnode.bus.identity import (
    decode_key_text,
    encode_key_text,
    read_secret_file,
    write_secret_file,
)
from llmnode.errors import ConfigError

_KEYRING_HEADER = "llmnode-mesh-keys-v1"


def key_id(key: bytes) -> bytes:
    """The 4-byte id frames carry to name the mesh key that sealed them."""
    return crypto.key_id(key)


class MeshKeyRing:
    """Mesh keys by id: ``primary`` seals, all are accepted; changes apply to the next frame."""

    __slots__ = ("_by_id", "_primary")

    def __init__(self, primary: bytes, *others: bytes) -> None:
        self._by_id: dict[bytes, bytes] = {}
        self._primary = self._check(primary)
        self.add(primary)
        for key in others:
            self.add(key)

    @staticmethod
    def _check(key: bytes) -> bytes:
        if not isinstance(key, bytes) or len(key) != crypto.MESH_KEY_BYTES:
            raise ConfigError(f"a mesh key is {crypto.MESH_KEY_BYTES} bytes")
        return key

    @classmethod
    def generate(cls) -> MeshKeyRing:
        return cls(cls.generate_key())

    @staticmethod
    def generate_key() -> bytes:
        # A key whose text starts with "-" reads as a flag on command lines: draw again.
        while True:
            key = crypto.random_bytes(crypto.MESH_KEY_BYTES)
            if not MeshKeyRing.key_to_text(key).startswith("-"):
                return key

    @staticmethod
    def key_id(key: bytes) -> bytes:
        """The 4-byte id frames carry for ``key`` (same as the module's :func:`key_id`)."""
        return crypto.key_id(key)

    @staticmethod
    def key_to_text(key: bytes) -> str:
        return encode_key_text(key)

    @staticmethod
    def key_from_text(text: str) -> bytes:
        return decode_key_text(text, crypto.MESH_KEY_BYTES, "the mesh key")

    @classmethod
    def from_text(cls, text: str) -> MeshKeyRing:
        """A ring from one key's text, or a comma-separated list (first is primary)."""
        parts = [part for part in text.split(",") if part.strip()]
        if not parts:
            raise ConfigError("the mesh key is empty")
        keys = [cls.key_from_text(part) for part in parts]
        return cls(keys[0], *keys[1:])

    def to_text(self) -> str:
        """The whole ring as text, primary first (what :meth:`from_text` reads)."""
        return ",".join(encode_key_text(key) for key in self.keys)

    def add(self, key: bytes) -> None:
        """Accept ``key`` on incoming frames (idempotent)."""
        identifier = key_id(self._check(key))
        existing = self._by_id.get(identifier)
        if existing is not None and existing != key:
            raise ConfigError("two mesh keys share a key id; generate another key")
        self._by_id[identifier] = key

    def use(self, key: bytes) -> None:
        """Seal outgoing frames with ``key``, which must already be in the ring."""
        if self._by_id.get(key_id(self._check(key))) != key:
            raise ConfigError("add a mesh key to the ring before making it primary")
        self._primary = key

    def remove(self, key: bytes) -> None:
        """Stop accepting ``key``. The primary cannot be removed (make another primary first)."""
        if key == self._primary:
            raise ConfigError("cannot remove the primary mesh key; make another key primary first")
        identifier = key_id(self._check(key))
        if self._by_id.get(identifier) == key:
            del self._by_id[identifier]

    def follow(self, other: MeshKeyRing) -> None:
        """Become equal to ``other`` in place: add its new keys, switch to its primary, retire
        keys it no longer lists (frames under any key of either ring stay valid meanwhile)."""
        for key in other.keys:
            self.add(key)
        self.use(other.primary)
        for key in self.keys:
            if key not in other:
                self.remove(key)

    @property
    def primary(self) -> bytes:
        return self._primary

    @property
    def primary_id(self) -> bytes:
        return key_id(self._primary)

    @property
    def keys(self) -> list[bytes]:
        """Every accepted key, primary first."""
        return [self._primary, *(key for key in self._by_id.values() if key != self._primary)]

    def by_id(self, identifier: bytes) -> bytes | None:
        """The accepted key with this id, or None."""
        return self._by_id.get(identifier)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and key in self._by_id.values()

    def __len__(self) -> int:
        return len(self._by_id)

    @classmethod
    def load(cls, path: Path | str) -> MeshKeyRing:
        lines = read_secret_file(path, _KEYRING_HEADER)
        if not lines:
            raise ConfigError(f"{path} is corrupt or truncated (no keys)")
        keys = [decode_key_text(line, crypto.MESH_KEY_BYTES, f"a key in {path}") for line in lines]
        return cls(keys[0], *keys[1:])

    def save(self, path: Path | str) -> None:
        body = "\n".join(encode_key_text(key) for key in self.keys)
        write_secret_file(path, f"{_KEYRING_HEADER}\n{body}\n")

    def __repr__(self) -> str:
        return f"MeshKeyRing(primary_id={self.primary_id.hex()}, keys={len(self)})"
