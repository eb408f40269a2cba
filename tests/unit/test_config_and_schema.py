"""Config precedence and validation; JSON Schema export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmnode.config import ENVIRONMENT, load_config
from llmnode.errors import ConfigError
from llmnode.schemas.export import write_schemas
from llmnode.schemas.messages import message_types


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('name = "from-file"\nlisten = "tcp://127.0.0.1:1"\nprobe_interval = 0.5\n')
    config = load_config(
        file,
        environ={"LLMNODE_NAME": "from-env", "LLMNODE_LISTEN": "tcp://127.0.0.1:2"},
        overrides={"name": "from-flag", "listen": None},
    )
    assert config.name == "from-flag"
    assert config.listen == "tcp://127.0.0.1:2"
    assert config.probe_interval == 0.5


def test_environment_lists_are_comma_separated() -> None:
    config = load_config(environ={"LLMNODE_JOIN": "a:1, b:2", "LLMNODE_NO_BEACON": "1"})
    assert config.join == ["a:1", "b:2"]
    assert config.beacon is False


def test_unknown_toml_field_is_one_readable_error(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('nmae = "typo"\n')
    with pytest.raises(ConfigError, match="nmae"):
        load_config(file, environ={})


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})


def test_non_positive_probe_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match="probe_interval"):
        load_config(environ={}, overrides={"probe_interval": 0})


def test_every_environment_variable_maps_to_a_config_field() -> None:
    from llmnode.schemas.config import NodeConfig

    fields = set(NodeConfig.__struct_fields__)
    assert set(ENVIRONMENT.values()) <= fields


def test_schema_export_writes_one_file_per_message_and_the_union(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    names = {path.name for path in written}
    assert "messages.json" in names
    assert "config.json" in names
    for cls in message_types():
        assert f"{cls.__name__}.json" in names
    union = json.loads((tmp_path / "messages.json").read_text())
    assert "anyOf" in union or "$ref" in union
