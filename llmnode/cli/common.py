"""What every ``llmnode`` command shares: one-line errors, running a coroutine, common options.

Every :class:`~llmnode.errors.MeshError` ends a command with one readable line on stderr and a
non-zero exit status; no library traceback reaches the user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from llmnode.errors import MeshError

T = TypeVar("T")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Node data directory [env LLMNODE_DATA_DIR; default $XDG_DATA_HOME/llmnode, "
        "else ~/.local/share/llmnode].",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command: ``error: message`` on stderr, exit status ``code``."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C


def guard(action: Callable[[], T]) -> T:
    """Call ``action``; a MeshError ends the command with one line (status 1), Ctrl-C with the
    line ``interrupted`` (status 130), never a traceback."""
    try:
        return action()
    except MeshError as error:
        fail(str(error))
    except KeyboardInterrupt:
        typer.secho("\ninterrupted", err=True)
        raise typer.Exit(INTERRUPTED) from None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` under :func:`guard`."""
    return guard(lambda: asyncio.run(coroutine))
