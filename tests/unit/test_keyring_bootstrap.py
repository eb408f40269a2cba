"""The mesh key ring is bootstrapped by one function, for ``llmnode init`` and ``start`` alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmnode.bus.keyring import MeshKeyRing
from llmnode.cli.runner import load_keyring
from llmnode.errors import ConfigError
from llmnode.nodes.control.server import KEYRING_FILE


@pytest.fixture(autouse=True)
def _no_mesh_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMNODE_MESH_KEY", raising=False)


def test_start_without_a_ring_or_a_key_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `llmnode init`"):
        load_keyring(tmp_path)
    assert not (tmp_path / KEYRING_FILE).exists()


def test_init_creates_a_new_mesh_that_start_then_uses(tmp_path: Path) -> None:
    created = load_keyring(tmp_path, create=True)
    assert load_keyring(tmp_path).primary == created.primary
    assert load_keyring(tmp_path, create=True).primary == created.primary  # kept, not replaced


def test_a_mesh_key_joins_the_ring_as_primary_keeping_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = load_keyring(tmp_path, create=True).primary
    new = MeshKeyRing.generate_key()
    monkeypatch.setenv("LLMNODE_MESH_KEY", MeshKeyRing.key_to_text(new))
    ring = load_keyring(tmp_path)
    assert ring.primary == new and old in ring
    assert MeshKeyRing.load(tmp_path / KEYRING_FILE).primary == new


def test_replace_makes_a_new_ring(tmp_path: Path) -> None:
    old = load_keyring(tmp_path, create=True).primary
    given = MeshKeyRing.generate_key()
    ring = load_keyring(tmp_path, MeshKeyRing.key_to_text(given), replace=True)
    assert ring.keys == [given] and old not in ring
    fresh = load_keyring(tmp_path, create=True, replace=True)
    assert fresh.primary not in (old, given)
