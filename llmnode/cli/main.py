"""The ``llmnode`` command line (Typer): the root app, ``--version``, ``schema``, the sub-commands.

Each command parses its arguments into a config object and calls the library; the commands live
by subject: :mod:`~llmnode.cli.keys` (init, keys), :mod:`~llmnode.cli.node` (start, status,
peers), :mod:`~llmnode.cli.agents` (send, request, chat, embed), :mod:`~llmnode.cli.demo`,
:mod:`~llmnode.cli.receipts` (receipt verify), and the models' commands. Every MeshError ends a
command with one readable line (:mod:`.common`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from llmnode._version import __version__
from llmnode.cli.common import fail
from llmnode.errors import MeshError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    # Markdown, not rich markup: "[env LLMNODE_LISTEN]" in a help text is shown, not eaten.
    rich_markup_mode="markdown",
    help="llmnode: a peer-to-peer mesh for serving language models and running agents.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmnode {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """llmnode: a peer-to-peer mesh for serving language models and running agents."""


def schema(
    out: Annotated[Path, typer.Option("--out", help="Directory for the JSON Schema files.")] = Path(
        "schema"
    ),
) -> None:
    """Write JSON Schema files of every wire message and the config, for other languages."""
    from llmnode.schemas.export import write_schemas  # noqa: PLC0415

    try:
        written = write_schemas(out)
    except MeshError as error:
        fail(str(error))
    typer.echo(f"wrote {len(written)} schema files to {out}")


def main() -> None:
    try:
        app()
    except MeshError as error:  # pragma: no cover - commands translate their own
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(1)


def _mount() -> None:
    """The commands, in the order ``llmnode --help`` lists them."""
    from llmnode.agents.models.cli import app as models_app  # noqa: PLC0415
    from llmnode.cli import agents, deploy, keys, node, top  # noqa: PLC0415

    keys.register(app)
    node.register(app)
    app.command()(top.top)
    app.command()(schema)
    deploy.register(models_app)
    app.add_typer(
        models_app, name="models", help="Pull, export, list and remove models; deploy them."
    )
    agents.register(app)
    from llmnode.http.cli import api_keys_app  # noqa: PLC0415

    app.add_typer(api_keys_app, name="api-keys")
    from llmnode.cli.receipts import receipt_app  # noqa: PLC0415

    app.add_typer(receipt_app, name="receipt")
    try:
        from llmnode.cli import demo  # noqa: PLC0415
    except ImportError:  # pragma: no cover - during development only
        return
    demo.register(app)


_mount()
