"""``llmnode models deploy, undeploy, deployments``: the desired models (I/O: control socket).

Each command asks the node running here through its control socket (the SDK's
:class:`~llmnode.client.admin.NodeAdmin`); the node signs the deployment record and gossips it, and
every node places it alike. Bad input is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from llmnode.cli.common import DataDir, JsonFlag, fail, run


def _ask(data_dir: Any, action: str, *args: Any, **kwargs: Any) -> Any:
    from llmnode.client.mesh import connect  # noqa: PLC0415

    async def ask() -> Any:
        async with connect(data_dir) as mesh:
            return await getattr(mesh, action)(*args, **kwargs)

    return run(ask())


def _line(row: dict[str, Any]) -> str:
    wanted = "auto" if row["auto"] else str(row["replicas"])
    state = "" if row["deployed"] else "  (undeployed)"
    return (
        f"{row['model']:32} {wanted:>8} {row['footprint_mb']:>8} "
        f"{','.join(row['serving']) or '-':24} {','.join(row['assigned']) or '-'}"
        + (f"  ({row['unplaced']} unplaced: no node has the memory)" if row["unplaced"] else "")
        + state
    )


def deploy(
    model: Annotated[str, typer.Argument(help="the model's name (in some node's store)")],
    replicas: Annotated[
        int | None, typer.Option("--replicas", help="replicas on distinct nodes")
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="replicas follow demand (at least one)")
    ] = False,
    max_replicas: Annotated[int, typer.Option(help="with --auto: the most replicas")] = 8,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Serve a model on the mesh: the nodes place its replicas by memory, fetch it from a peer."""
    if auto == (replicas is not None):
        fail("give --replicas N or --auto (one of the two)", code=2)
    count = 1 if replicas is None else replicas
    row = _ask(data_dir, "deploy", model, count, auto=auto, max_replicas=max_replicas)
    typer.echo(json.dumps(row) if as_json else f"deployed {model}: {_line(row).strip()}")


def undeploy(
    model: Annotated[str, typer.Argument(help="the deployed model")],
    data_dir: DataDir = None,
) -> None:
    """Stop serving a model through placement (replicas started with --model stay)."""
    _ask(data_dir, "undeploy", model)
    typer.echo(f"undeployed {model}")


def deployments(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """The mesh's deployments: replicas wanted, where they are served and assigned."""
    rows: list[dict[str, Any]] = _ask(data_dir, "deployments")
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no deployments; try `llmnode models deploy NAME --replicas 2`")
        return
    typer.echo(f"{'MODEL':32} {'REPLICAS':>8} {'MIB':>8} {'SERVING':24} ASSIGNED")
    for row in rows:
        typer.echo(_line(row))


def register(models_app: typer.Typer) -> None:
    models_app.command()(deploy)
    models_app.command()(undeploy)
    models_app.command()(deployments)
