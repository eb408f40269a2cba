"""``llmnode api-keys``: the Typer sub-app the CLI mounts (I/O: files, stdout).

Commands parse arguments and call :mod:`llmnode.http.api_keys`; errors exit non-zero with one line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from llmnode.errors import MeshError

api_keys_app = typer.Typer(
    no_args_is_help=True, help="HTTP API keys, valid on every node of the mesh."
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Node data directory [env LLMNODE_DATA_DIR; default ~/.local/share/llmnode].",
    ),
]


def _data_dir(data_dir: Path | None) -> Path:
    from llmnode.config import resolve_data_dir  # noqa: PLC0415

    return resolve_data_dir(data_dir)


def _fail(error: MeshError) -> typer.Exit:
    typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@api_keys_app.command("create")
def create(name: str, data_dir: DataDir = None) -> None:
    """Create a key and print it (once: only its hash is kept)."""
    from llmnode.http import api_keys  # noqa: PLC0415 (aiohttp: not for every command)

    try:
        key = api_keys.create(_data_dir(data_dir), name)
    except MeshError as error:
        raise _fail(error) from None
    typer.echo(key)


@api_keys_app.command("list")
def list_keys(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
) -> None:
    """The keys created on this node (names and hash prefixes, never the keys)."""
    from llmnode.http import api_keys  # noqa: PLC0415 (aiohttp: not for every command)

    try:
        keys = api_keys.load(_data_dir(data_dir))
    except MeshError as error:
        raise _fail(error) from None
    rows = [{"name": k.name, "hash": k.hash[:16], "created": k.created} for k in keys]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(str(row["created"]))))
        typer.echo(f"{row['name']:<24} sha256:{row['hash']}…  {created}")


@api_keys_app.command("revoke")
def revoke(name: str, data_dir: DataDir = None) -> None:
    """Revoke a key: every node refuses it within seconds."""
    from llmnode.http import api_keys  # noqa: PLC0415 (aiohttp: not for every command)

    try:
        api_keys.revoke(_data_dir(data_dir), name)
    except MeshError as error:
        raise _fail(error) from None
    typer.echo(f"revoked {name}")
