"""Deployment records on disk: written privately and atomically, read back verified, and a bad
file refused with one logged line and a count, never a crash."""

from __future__ import annotations

import stat
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from llmnode.bus.identity import Identity
from llmnode.config import DEPLOYMENTS_FILE
from llmnode.nodes.placement.deployments import issue
from llmnode.nodes.placement.stored import FORMAT, StoredDeployments, read, write
from llmnode.schemas.placement import Deployment

ALICE, BOB = Identity.generate(), Identity.generate()
SMOLLM, MINILM = "smollm2-135m-instruct", "all-minilm-l6-v2"


def stored(path: Path) -> tuple[StoredDeployments, Counter[str]]:
    refused: Counter[str] = Counter()
    deployments = StoredDeployments(path, lambda reason: refused.update([reason]))
    return deployments, refused


def test_every_change_is_written_0600_and_a_new_process_reads_the_same_deployments(
    tmp_path: Path,
) -> None:
    path = tmp_path / DEPLOYMENTS_FILE
    first, _ = stored(path)
    first.merge([issue(ALICE, 5, Deployment(model=SMOLLM, replicas=2, footprint_mb=700))])
    first.merge([issue(BOB, 7, Deployment(model=MINILM, replicas=1, footprint_mb=90))])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary, renamed

    again, refused = stored(path)
    assert again.restore() == 2
    assert again.current() == first.current()
    assert sorted(r.version for r in again.records()) == [5, 7]
    assert not refused


def test_restored_records_merge_with_gossip_by_newest_version(tmp_path: Path) -> None:
    path = tmp_path / DEPLOYMENTS_FILE
    write(path, [issue(ALICE, 5, Deployment(model=SMOLLM, replicas=2))])
    deployments, _ = stored(path)
    deployments.merge([issue(BOB, 9, Deployment(model=SMOLLM, replicas=3))])  # gossip, newer
    assert deployments.restore() == 0  # the file's older version loses
    assert deployments.current()[SMOLLM].replicas == 3
    assert [r.version for r in read(path)] == [9]  # and the newer one was written


def test_no_file_is_no_deployments(tmp_path: Path) -> None:
    deployments, refused = stored(tmp_path / DEPLOYMENTS_FILE)
    assert deployments.restore() == 0 and len(deployments) == 0 and not refused


def _tampered(path: Path) -> None:
    """A record's version raised by hand: its signature no longer covers it."""
    raw = msgspec.json.decode(path.read_bytes())
    raw["records"][0][2] += 1
    path.write_bytes(msgspec.json.encode(raw))


def _forged(path: Path) -> None:
    """Another payload (10 replicas) under the original signature."""
    raw = msgspec.json.decode(path.read_bytes())
    good = issue(BOB, 1, Deployment(model=SMOLLM, replicas=10))
    raw["records"][0][3] = msgspec.json.decode(msgspec.json.encode(good))[3]
    path.write_bytes(msgspec.json.encode(raw))


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]), "bad_file"),
        (lambda path: path.write_bytes(b""), "bad_file"),
        (lambda path: path.write_bytes(b"\xff\x00not json"), "bad_file"),
        (
            lambda path: path.write_bytes(path.read_bytes().replace(FORMAT.encode(), b"other/v9")),
            "bad_format",
        ),
        (_tampered, "bad_signature"),
        (_forged, "bad_signature"),
        (lambda path: (path.unlink(), path.mkdir()), "unreadable"),
    ],
    ids=["truncated", "empty", "garbage", "format", "tampered", "forged", "directory"],
)
def test_a_spoiled_file_is_refused_with_one_line_and_a_count_and_nothing_is_applied(
    tmp_path: Path, spoil: object, reason: str
) -> None:
    path = tmp_path / DEPLOYMENTS_FILE
    write(
        path,
        [
            issue(ALICE, 5, Deployment(model=SMOLLM, replicas=2)),
            issue(ALICE, 6, Deployment(model=MINILM, replicas=1)),
        ],
    )
    spoil(path)  # type: ignore[operator]
    deployments, refused = stored(path)
    with capture_logs() as logs:
        assert deployments.restore() == 0
    assert len(deployments) == 0  # not even the records that were still good
    assert refused == Counter({reason: 1})
    assert [(e["event"], e["reason"]) for e in logs] == [("deployments_file_refused", reason)]


def test_a_file_that_cannot_be_written_is_logged_and_the_deployment_kept_in_memory(
    tmp_path: Path,
) -> None:
    path = tmp_path / DEPLOYMENTS_FILE
    path.mkdir()  # the rename onto it fails, even for root
    deployments, _ = stored(path)
    with capture_logs() as logs:
        changed = deployments.merge([issue(ALICE, 5, Deployment(model=SMOLLM, replicas=2))])
    assert [d.model for d in changed] == [SMOLLM]
    assert deployments.current()[SMOLLM].replicas == 2
    assert [e["event"] for e in logs] == ["deployments_save_failed"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_temporary_left_by_a_kill_mid_write_is_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / DEPLOYMENTS_FILE
    write(path, [issue(ALICE, 5, Deployment(model=SMOLLM, replicas=2))])
    leftover = tmp_path / f".{DEPLOYMENTS_FILE}.12345.tmp"
    leftover.write_bytes(b'{"format": "llmnode-depl')
    deployments, refused = stored(path)
    assert deployments.restore() == 1 and not refused
    assert not leftover.exists()
