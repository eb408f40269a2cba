"""The ``init`` and ``keys`` commands: this node's identity and its mesh key ring (file I/O).

``init`` creates a new mesh (or joins one with ``--mesh-key``); ``keys add/use/remove`` rotate
the ring in three steps, telling a running node to reload it. The ring itself is bootstrapped by
:func:`llmnode.cli.runner.load_keyring`, the same function ``llmnode start`` uses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from llmnode.cli.common import DataDir, JsonFlag, fail
from llmnode.errors import MeshError


def init(
    data_dir: DataDir = None,
    mesh_key: Annotated[
        str | None,
        typer.Option(
            "--mesh-key",
            envvar="LLMNODE_MESH_KEY",
            help="Join this mesh (key from `llmnode init` elsewhere).",
        ),
    ] = None,
    print_mesh_key: Annotated[
        bool,
        typer.Option("--print-mesh-key", help="Only print a new mesh key (e.g. for a .env file)."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key ring.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create this node's identity and mesh key ring (a new mesh, or --mesh-key to join one)."""
    from llmnode.bus.keyring import MeshKeyRing  # noqa: PLC0415
    from llmnode.cli.runner import load_keyring, load_or_create_identity  # noqa: PLC0415
    from llmnode.config import resolve_data_dir  # noqa: PLC0415
    from llmnode.nodes.control.server import KEYRING_FILE  # noqa: PLC0415

    try:
        if print_mesh_key:
            typer.echo(MeshKeyRing.key_to_text(MeshKeyRing.generate_key()))
            return
        directory = resolve_data_dir(data_dir)
        identity = load_or_create_identity(directory)
        generated = not mesh_key and (force or not (directory / KEYRING_FILE).exists())
        ring = load_keyring(directory, mesh_key or "", create=True, replace=force)
    except MeshError as error:
        fail(str(error))
    key_text = MeshKeyRing.key_to_text(ring.primary)
    if as_json:
        typer.echo(
            json.dumps({"node_id": identity.name, "data_dir": str(directory), "mesh_key": key_text})
        )
        return
    typer.echo(f"node id:   {identity.name}")
    typer.echo(f"data dir:  {directory}")
    typer.echo(f"mesh key:  {key_text}")
    if generated:
        typer.echo("\nShare the mesh key with the other machines (keep it secret):")
        typer.echo("  LLMNODE_MESH_KEY=<key> llmnode start --join <this host>:7946")


keys_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Rotate the mesh key ring (add, use, retire).",
)


def _edit_ring(data_dir: Path | None, edit: Callable[[Any], None]) -> None:
    from llmnode.bus.keyring import MeshKeyRing  # noqa: PLC0415
    from llmnode.config import resolve_data_dir  # noqa: PLC0415
    from llmnode.nodes.control.server import KEYRING_FILE  # noqa: PLC0415

    path = resolve_data_dir(data_dir) / KEYRING_FILE
    try:
        ring = MeshKeyRing.load(path)
        edit(ring)
        ring.save(path)
    except MeshError as error:
        fail(str(error))
    try:
        asyncio.run(_reload_keys(data_dir))
    except MeshError:
        typer.echo("key ring updated; no node is running here (it is read at the next start)")
        return
    typer.echo("key ring updated; the running node uses it now")


async def _reload_keys(data_dir: Path | None) -> None:
    from llmnode.client.connection import ControlClient  # noqa: PLC0415
    from llmnode.schemas.control import CtlReloadKeys  # noqa: PLC0415

    async with ControlClient.from_data_dir(data_dir) as client:
        await client.call(CtlReloadKeys(id=client.next_id()))


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List the keys of the ring (primary first), by key id."""
    from llmnode.bus.keyring import MeshKeyRing, key_id  # noqa: PLC0415
    from llmnode.config import resolve_data_dir  # noqa: PLC0415
    from llmnode.nodes.control.server import KEYRING_FILE  # noqa: PLC0415

    try:
        ring = MeshKeyRing.load(resolve_data_dir(data_dir) / KEYRING_FILE)
    except MeshError as error:
        fail(str(error))
    for key in ring.keys:
        marker = "primary" if key == ring.primary else "accepted"
        typer.echo(f"{key_id(key).hex()}  {marker}")


@keys_app.command("add")
def keys_add(key: str, data_dir: DataDir = None) -> None:
    """Accept KEY as well (step 1 of a rotation, on every node)."""
    from llmnode.bus.keyring import MeshKeyRing  # noqa: PLC0415

    _edit_ring(data_dir, lambda ring: ring.add(MeshKeyRing.key_from_text(key)))


@keys_app.command("use")
def keys_use(key: str, data_dir: DataDir = None) -> None:
    """Make KEY the primary (step 2, once every node accepts it)."""
    from llmnode.bus.keyring import MeshKeyRing  # noqa: PLC0415

    _edit_ring(data_dir, lambda ring: ring.use(MeshKeyRing.key_from_text(key)))


@keys_app.command("remove")
def keys_remove(key: str, data_dir: DataDir = None) -> None:
    """Retire KEY (step 3, once every node uses the new primary)."""
    from llmnode.bus.keyring import MeshKeyRing  # noqa: PLC0415

    _edit_ring(data_dir, lambda ring: ring.remove(MeshKeyRing.key_from_text(key)))


def register(app: typer.Typer) -> None:
    """Add ``init`` and the ``keys`` group to ``app``."""
    app.command()(init)
    app.add_typer(keys_app, name="keys")
