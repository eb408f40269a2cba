"""The node's HTTP API keys: a 0600 file of names and sha256 hashes in its data dir (does I/O).

``llmnode api-keys create NAME`` makes a key, prints it once and keeps only its hash here; the
running node re-reads this file (:func:`watch`) and puts the hashes in its signed state record,
so every node of the mesh accepts the key within seconds. Revoking removes the line; the next
record drops the hash everywhere.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmnode.bus.identity import read_secret_file, write_secret_file
from llmnode.errors import ConfigError
from llmnode.http.app import KEY_PREFIX, key_hash

API_KEYS_FILE = "api_keys"
HEADER = "# llmnode http api keys v1"
WATCH_INTERVAL_S = 0.5
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    hash: str
    created: float


def load(data_dir: Path) -> list[ApiKey]:
    path = data_dir / API_KEYS_FILE
    if not path.exists():
        return []
    keys = []
    for line in read_secret_file(path, HEADER):
        try:
            name, digest, created = line.split()
            keys.append(ApiKey(name, digest, float(created)))
        except ValueError:
            raise ConfigError(f"{path} is corrupt: {line[:40]!r}") from None
    return keys


def _save(data_dir: Path, keys: list[ApiKey]) -> None:
    lines = [HEADER, *(f"{key.name} {key.hash} {key.created:.0f}" for key in keys)]
    write_secret_file(data_dir / API_KEYS_FILE, "\n".join(lines) + "\n")


def create(data_dir: Path, name: str) -> str:
    """A new key named ``name``; the key itself is returned once and never stored."""
    if not _NAME.match(name):
        raise ConfigError(f"key name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    keys = load(data_dir)
    if any(key.name == name for key in keys):
        raise ConfigError(f"a key named {name!r} exists already; revoke it first")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    _save(data_dir, [*keys, ApiKey(name, key_hash(key), time.time())])
    return key


def revoke(data_dir: Path, name: str) -> None:
    keys = load(data_dir)
    kept = [key for key in keys if key.name != name]
    if len(kept) == len(keys):
        raise ConfigError(
            f"no key named {name!r} on this node (revoke it on the node that made it)"
        )
    _save(data_dir, kept)


async def watch(data_dir: Path, publish: Callable[[list[str]], None]) -> None:
    """Publish the hashes of this node's keys now and whenever the file changes."""
    path = data_dir / API_KEYS_FILE
    seen: float | None = -1.0
    while True:
        try:
            changed: float | None = path.stat().st_mtime
        except FileNotFoundError:
            changed = None
        if changed != seen:
            seen = changed
            publish(sorted(key.hash for key in load(data_dir)))
        await asyncio.sleep(WATCH_INTERVAL_S)
