"""The ``llmnode`` command line (Typer). Commands parse arguments and call into the library."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="llmnode: a peer-to-peer mesh for language models.")


def main() -> None:
    app()
