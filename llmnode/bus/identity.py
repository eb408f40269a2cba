"""Node identity: an Ed25519 key pair whose public key is the node id (file I/O in load/save).

The node id prints as lower-case base32 without padding (52 characters). Secret files are
written atomically with mode 0600 and refused when group or others can read them, or when they
are corrupt or truncated. :func:`read_secret_file` / :func:`write_secret_file` are shared with
the mesh key ring.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from pathlib import Path

from llmnode.bus import crypto
from llmnode.errors import ConfigError
from llmnode.schemas.base import NODE_ID_BYTES

_IDENTITY_HEADER = "llmnode-identity-v1"


def node_id_to_text(node_id: bytes) -> str:
    """Lower-case base32 without padding: how node ids appear to people and in configs."""
    return base64.b32encode(node_id).decode("ascii").rstrip("=").lower()


def node_id_from_text(text: str) -> bytes:
    """Parse a node id printed by :func:`node_id_to_text`; ConfigError if it is not one."""
    cleaned = text.strip().upper()
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        node_id = base64.b32decode(padded)
    except (binascii.Error, ValueError) as error:
        raise ConfigError(f"not a node id: {text!r}") from error
    if len(node_id) != NODE_ID_BYTES:
        raise ConfigError(f"not a node id: {text!r} (decodes to {len(node_id)} bytes, not 32)")
    return node_id


def write_secret_file(path: Path | str, text: str) -> None:
    """Write ``text`` atomically to ``path`` with mode 0600 (temporary file, fsync, rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
            os.write(descriptor, text.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise ConfigError(f"cannot write {target}: {error.strerror or error}") from error


def read_secret_file(path: Path | str, header: str) -> list[str]:
    """The non-empty lines after ``header`` in a secret file, refusing unsafe or foreign files."""
    source = Path(path)
    try:
        descriptor = os.open(source, os.O_RDONLY)
    except OSError as error:
        raise ConfigError(f"cannot read {source}: {error.strerror or error}") from error
    try:
        mode = os.fstat(descriptor).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{source} is readable by group or others (mode {stat.S_IMODE(mode):o}); "
                f"run: chmod 600 {source}"
            )
        raw = os.read(descriptor, 64 * 1024)
    except OSError as error:
        raise ConfigError(f"cannot read {source}: {error.strerror or error}") from error
    finally:
        os.close(descriptor)
    try:
        lines = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as error:
        raise ConfigError(f"{source} is corrupt (not text)") from error
    if not lines or lines[0] != header:
        raise ConfigError(f"{source} is not an llmnode file of this kind (expected {header})")
    return lines[1:]


def decode_key_text(text: str, size: int, what: str) -> bytes:
    """Urlsafe base64 (padding optional) of exactly ``size`` bytes, or ConfigError."""
    cleaned = text.strip()
    try:
        key = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError) as error:
        raise ConfigError(f"{what} is not urlsafe base64") from error
    if len(key) != size:
        raise ConfigError(f"{what} must be {size} bytes, got {len(key)}")
    return key


def encode_key_text(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


class Identity:
    """A node's Ed25519 key pair. ``node_id`` (the public key) names the node on the mesh."""

    __slots__ = ("_public", "_secret")

    def __init__(self, seed: bytes) -> None:
        self._public, self._secret = crypto.signing_key_pair(seed)

    @classmethod
    def generate(cls) -> Identity:
        return cls(crypto.random_bytes(crypto.SEED_BYTES))

    @classmethod
    def load(cls, path: Path | str) -> Identity:
        lines = read_secret_file(path, _IDENTITY_HEADER)
        if len(lines) != 1:
            raise ConfigError(f"{path} is corrupt or truncated (expected one key line)")
        return cls(decode_key_text(lines[0], crypto.SEED_BYTES, f"the key in {path}"))

    @classmethod
    def load_or_create(cls, path: Path | str) -> Identity:
        """Load the identity at ``path``, or generate and save one if the file does not exist."""
        if Path(path).exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity

    def save(self, path: Path | str) -> None:
        seed = crypto.seed_of(self._secret)
        write_secret_file(path, f"{_IDENTITY_HEADER}\n{encode_key_text(seed)}\n")

    @property
    def node_id(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return self._public

    @property
    def name(self) -> str:
        """The node id as lower-case base32 without padding."""
        return node_id_to_text(self._public)

    @property
    def secret_key(self) -> bytes:
        """The 64-byte libsodium secret key (for the sealer only; never log it)."""
        return self._secret

    def __repr__(self) -> str:
        return f"Identity({self.name[:12]}…)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other._public == self._public

    def __hash__(self) -> int:
        return hash(self._public)
