"""Node identity: generation, text form, and the 0600 secret file rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmnode.bus.identity import Identity, node_id_from_text, node_id_to_text
from llmnode.errors import ConfigError


def test_node_id_is_the_32_byte_public_key_printed_as_lowercase_base32() -> None:
    identity = Identity.generate()
    assert len(identity.node_id) == 32
    assert identity.name == identity.name.lower()
    assert "=" not in identity.name
    assert node_id_from_text(identity.name) == identity.node_id
    assert node_id_to_text(identity.node_id) == identity.name


def test_node_id_from_text_refuses_garbage_with_config_error() -> None:
    with pytest.raises(ConfigError):
        node_id_from_text("not base32 !!")
    with pytest.raises(ConfigError):
        node_id_from_text("aaaa")  # decodes, but not 32 bytes


def test_saved_identity_loads_back_identical_with_mode_0600(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "keys" / "node.key"
    identity.save(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert Identity.load(path).node_id == identity.node_id
    assert not [p for p in path.parent.iterdir() if p.name != "node.key"]  # no temp left over


def test_load_refuses_a_file_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Identity.load(path)


def test_load_refuses_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) - 12])
    with pytest.raises(ConfigError):
        Identity.load(path)


def test_load_refuses_a_foreign_or_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"\xff\xfe garbage")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError):
        Identity.load(path)
    path.write_text("something else\nAAAA\n")
    with pytest.raises(ConfigError, match="not an llmnode file"):
        Identity.load(path)


def test_load_of_a_missing_file_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Identity.load(tmp_path / "absent.key")


def test_load_or_create_creates_once_then_loads(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first = Identity.load_or_create(path)
    assert Identity.load_or_create(path) == first
