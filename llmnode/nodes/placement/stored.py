"""Deployment records kept in the node's data dir, so deployments survive restarts (file I/O).

:class:`StoredDeployments` is :class:`~llmnode.nodes.placement.deployments.Deployments` that
writes every change to ``DATA_DIR/deployments.json`` (:data:`llmnode.config.DEPLOYMENTS_FILE`)
and reads it back at start. The file holds the signed records exactly as they travel, so
loading one is the same act as taking a gossip frame: each record's origin signature is
verified and the newest version per model wins (:meth:`Deployments.merge`). If every node of
the mesh restarts, each comes back with the deployments it knew, and gossip reconciles them.

Writes are atomic and private (temporary file, fsync, rename, mode 0600: the shared
:func:`~llmnode.bus.identity.write_secret_file`), so a node killed mid-write leaves the old file
or the new one, never half of one. A file that is unreadable, truncated, not of this format, or
holding a record whose signature does not verify is refused as a whole: one logged line,
counted by reason, and the node starts with the deployments gossip brings. It never crashes
the node; the next change overwrites the refused file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from llmnode.bus.identity import write_secret_file
from llmnode.errors import ConfigError, Rejected
from llmnode.log import get_logger
from llmnode.nodes.placement.deployments import Deployments
from llmnode.schemas.placement import Deployment, SignedDeployment

log = get_logger(__name__)

FORMAT = "llmnode-deployments/v1"
# The bound on what a start reads: about 20,000 records of a typical 400 bytes in JSON (records
# are not counted against MAX_DEPLOYMENTS, a bound per gossip frame, so a file this node wrote
# is never refused for holding more).
MAX_FILE_BYTES = 8 * 1024 * 1024


class DeploymentsFile(msgspec.Struct, frozen=True, kw_only=True):
    """The file's content: the format name, then the records as they travel."""

    format: str
    records: list[SignedDeployment]


def write(path: Path, records: Iterable[SignedDeployment]) -> None:
    """Write ``records`` to ``path`` atomically, mode 0600; ConfigError if it cannot."""
    content = DeploymentsFile(format=FORMAT, records=list(records))
    write_secret_file(path, msgspec.json.encode(content).decode("ascii") + "\n")


def read(path: Path) -> list[SignedDeployment]:
    """The records in ``path`` ([] when there is none), not yet verified. A file that cannot be
    read or decoded raises :class:`Rejected` with the reason (``unreadable``, ``too_large``,
    ``bad_file``, ``bad_format``)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise Rejected("unreadable", error.strerror or str(error)) from error
    if len(raw) > MAX_FILE_BYTES:
        raise Rejected("too_large", f"over {MAX_FILE_BYTES} bytes")
    try:
        content = msgspec.json.decode(raw, type=DeploymentsFile)
    except msgspec.DecodeError as error:  # truncated, not JSON, a field out of its limits
        raise Rejected("bad_file", str(error)[:200]) from error
    if content.format != FORMAT:
        raise Rejected("bad_format", f"{content.format[:40]!r}, expected {FORMAT!r}")
    return content.records


def remove_temporaries(path: Path) -> None:
    """Delete temporary files a node killed mid-write left beside ``path`` (``.NAME.PID.tmp``)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            leftover.unlink()
        except OSError:
            continue
        log.info("deployments_temporary_removed", path=str(leftover))


class StoredDeployments(Deployments):
    """Deployments written to ``path`` on every change; :meth:`restore` reads them back.

    ``refused`` is called with the reason when the file is refused (the node counts it with its
    other rejections)."""

    def __init__(self, path: Path, refused: Callable[[str], None] = lambda _reason: None) -> None:
        super().__init__()
        self.path, self._refused = path, refused

    def restore(self) -> int:
        """Merge the records of the file, verified; how many deployments it changed.
        A bad file changes nothing and is refused with one log line."""
        remove_temporaries(self.path)
        try:
            changed = super().merge(read(self.path))  # verifies every record before applying
        except Rejected as error:
            self._refused(error.reason)
            log.warning(
                "deployments_file_refused",
                path=str(self.path),
                reason=error.reason,
                detail=error.detail[:200],
            )
            return 0
        if changed:
            log.info("deployments_restored", path=str(self.path), models=len(changed))
        return len(changed)

    def merge(self, incoming: Iterable[SignedDeployment]) -> list[Deployment]:
        changed = super().merge(incoming)
        if changed:
            self.save()
        return changed

    def save(self) -> bool:
        """Write every record now; False (logged) when the file cannot be written: the
        deployments stay in memory and in gossip, and the next change tries again."""
        try:
            write(self.path, self.records())
        except (ConfigError, OSError) as error:  # OSError: the data dir itself is gone
            log.error("deployments_save_failed", path=str(self.path), error=str(error))
            return False
        return True
