"""Model folders being received from peers, kept between attempts so a pull resumes (does I/O).

A pull writes into ``ROOT/.partial-NAME/`` (the store's listing skips dot folders, and its stale
clean-up leaves these alone, since they are meant to outlive the process). The folder holds the
manifest being fetched; a pull of another manifest of the same model starts it over. A lock file
beside it (``flock``) keeps two processes sharing a store from writing it at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from llmnode.agents.models.store import MANIFEST, ModelStore
from llmnode.errors import ModelError

PARTIAL_PREFIX = ".partial-"


def safe_path(path: str) -> bool:
    """Whether a path from a peer's manifest stays inside the model folder."""
    pure = PurePosixPath(path)
    return (
        bool(path)
        and not pure.is_absolute()
        and ".." not in pure.parts
        and path != MANIFEST
        and "\\" not in path
    )


@contextlib.contextmanager
def partial_lock(store: ModelStore, model: str) -> Iterator[None]:
    """Hold the pull lock of ``model`` in ``store``; ModelError when another process has it."""
    lock_path = store.root / f"{PARTIAL_PREFIX}{model}.lock"
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ModelError(f"another process is pulling {model!r} into this store") from error
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def prepare_partial(store: ModelStore, model: str, manifest_data: bytes) -> Path:
    """The partial folder for this manifest: what it holds is kept if it is the same one."""
    folder = store.root / f"{PARTIAL_PREFIX}{model}"
    existing = folder / MANIFEST
    if folder.exists() and not (existing.is_file() and existing.read_bytes() == manifest_data):
        shutil.rmtree(folder)
    folder.mkdir(exist_ok=True)
    existing.write_bytes(manifest_data)
    return folder


def read_range(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def hash_prefix(path: Path, digest: Any) -> None:
    """Feed the bytes already in ``path`` to ``digest`` (a hashlib object)."""
    with path.open("rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)


def append(handle: IO[bytes], digest: Any, data: bytes) -> None:
    handle.write(data)
    handle.flush()  # durable at install (ModelStore fsyncs the tree before renaming it)
    digest.update(data)
