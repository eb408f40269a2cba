"""Mesh key ring: text form, rotation rules and the key file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmnode.bus.keyring import MeshKeyRing, key_id
from llmnode.errors import ConfigError


def test_key_text_round_trips_and_bad_text_is_config_error() -> None:
    key = MeshKeyRing.generate_key()
    text = MeshKeyRing.key_to_text(key)
    assert MeshKeyRing.from_text(text).primary == key
    assert MeshKeyRing.from_text(text + "=").primary == key  # padding optional
    for bad in ["", "!!!!", MeshKeyRing.key_to_text(b"short")]:
        with pytest.raises(ConfigError):
            MeshKeyRing.from_text(bad)


def test_from_text_list_makes_the_first_key_primary_and_accepts_the_rest() -> None:
    first, second = MeshKeyRing.generate_key(), MeshKeyRing.generate_key()
    ring = MeshKeyRing.from_text(
        f"{MeshKeyRing.key_to_text(first)},{MeshKeyRing.key_to_text(second)}"
    )
    assert ring.primary == first
    assert ring.keys == [first, second]
    assert MeshKeyRing.from_text(ring.to_text()).keys == ring.keys


def test_key_id_is_four_bytes_and_finds_the_key() -> None:
    ring = MeshKeyRing.generate()
    assert len(key_id(ring.primary)) == 4
    assert ring.by_id(key_id(ring.primary)) == ring.primary
    assert ring.by_id(b"\0\0\0\0") is None


def test_rotation_add_use_remove() -> None:
    ring = MeshKeyRing.generate()
    old, new = ring.primary, MeshKeyRing.generate_key()
    ring.add(new)
    assert ring.primary == old and new in ring
    ring.use(new)
    assert ring.primary == new and old in ring
    ring.remove(old)
    assert ring.keys == [new]
    assert ring.by_id(key_id(old)) is None


def test_use_requires_the_key_to_be_added_first() -> None:
    ring = MeshKeyRing.generate()
    with pytest.raises(ConfigError, match="add a mesh key"):
        ring.use(MeshKeyRing.generate_key())


def test_primary_cannot_be_removed() -> None:
    ring = MeshKeyRing.generate()
    with pytest.raises(ConfigError, match="primary"):
        ring.remove(ring.primary)
    assert len(ring) == 1


def test_saved_ring_loads_back_with_primary_first_and_mode_0600(tmp_path: Path) -> None:
    ring = MeshKeyRing.generate()
    ring.add(MeshKeyRing.generate_key())
    path = tmp_path / "mesh.keys"
    ring.save(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    loaded = MeshKeyRing.load(path)
    assert loaded.keys == ring.keys and loaded.primary == ring.primary


def test_ring_file_readable_by_group_or_truncated_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mesh.keys"
    MeshKeyRing.generate().save(path)
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="readable by group"):
        MeshKeyRing.load(path)
    os.chmod(path, 0o600)
    path.write_text(path.read_text()[:30])
    with pytest.raises(ConfigError):
        MeshKeyRing.load(path)
