"""`llmnode api-keys` (the CLI's own Typer app), and the rule that a node never serves HTTP off
loopback while the mesh has no key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from llmnode.cli.main import app
from llmnode.errors import ConfigError
from llmnode.http.api_keys import API_KEYS_FILE
from llmnode.http.app import KEY_PREFIX, key_hash
from llmnode.http.runtime import http_loops
from tests.support.inprocess import in_process_mesh


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["api-keys", *args])


def test_a_key_is_printed_once_kept_as_a_hash_0600_listed_and_revoked(tmp_path: Path) -> None:
    made = cli("create", "laptop", "--data-dir", str(tmp_path))
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith(KEY_PREFIX)
    kept = tmp_path / API_KEYS_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert key not in kept.read_text() and key_hash(key) in kept.read_text()
    listed = json.loads(cli("list", "--json", "--data-dir", str(tmp_path)).stdout)
    assert [row["name"] for row in listed] == ["laptop"]
    assert listed[0]["hash"] == key_hash(key)[:16]
    assert cli("revoke", "laptop", "--data-dir", str(tmp_path)).exit_code == 0
    assert json.loads(cli("list", "--json", "--data-dir", str(tmp_path)).stdout) == []
    again = cli("revoke", "laptop", "--data-dir", str(tmp_path))
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [
        "error: no key named 'laptop' on this node (revoke it on the node that made it)"
    ]


async def test_serving_http_off_loopback_without_a_key_is_refused_with_one_line(
    tmp_path: Path,
) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        node = await mesh.start()
        _, run_server = http_loops(node, "0.0.0.0:0")
        with pytest.raises(ConfigError) as caught:
            await run_server()
        assert str(caught.value) == (
            "refusing to serve HTTP on 0.0.0.0 without an API key: run `llmnode api-keys create "
            "NAME` first, or bind to 127.0.0.1"
        )
