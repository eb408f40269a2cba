"""The ``start``, ``status`` and ``peers`` commands: run a node, and ask the one running here.

``start`` parses its flags into a :class:`~llmnode.schemas.config.NodeConfig` (over the config
file and the environment) and hands it to :func:`llmnode.cli.runner.run_node`; ``status`` and
``peers`` ask the local node through its control socket (I/O: processes, sockets, terminal).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from llmnode.cli.common import DataDir, JsonFlag, fail, run
from llmnode.errors import MeshError


def start(
    data_dir: DataDir = None,
    name: Annotated[
        str | None, typer.Option(help="Node name shown to peers [env LLMNODE_NAME].")
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(help="Bus address to bind [default tcp://0.0.0.0:7946; env LLMNODE_LISTEN]."),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(help="Address peers should use (NAT, containers) [env LLMNODE_ADVERTISE]."),
    ] = None,
    join: Annotated[
        list[str] | None,
        typer.Option(
            "--join", help="Seed HOST:PORT to join (repeatable; DNS names work) [env LLMNODE_JOIN]."
        ),
    ] = None,
    no_beacon: Annotated[
        bool, typer.Option("--no-beacon", help="Disable LAN UDP beacons.")
    ] = False,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Serve this model from the store (repeatable)."),
    ] = None,
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", help="Host this agent, pkg.module:Class (repeatable)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML config file [env LLMNODE_CONFIG].")
    ] = None,
    control: Annotated[
        str | None,
        typer.Option(
            help="Control socket: ipc://PATH or tcp://127.0.0.1:PORT [default: ipc, data dir]."
        ),
    ] = None,
    mesh_key: Annotated[
        str | None,
        typer.Option(
            "--mesh-key", envvar="LLMNODE_MESH_KEY", help="Mesh key (added to the ring and used)."
        ),
    ] = None,
    model_store: Annotated[
        str | None,
        typer.Option("--model-store", help="Model store directory [env LLMNODE_MODEL_STORE]."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    log_json: Annotated[
        bool | None, typer.Option("--log-json/--log-pretty", help="Force JSON or pretty logs.")
    ] = None,
    probe_interval: Annotated[
        float | None,
        typer.Option(
            help="SWIM probe interval in seconds; every membership timing scales with it."
        ),
    ] = None,
    fault_delay_ms: Annotated[
        float | None,
        typer.Option(help="Fault injection: delay every frame this node sends by N ms."),
    ] = None,
    fault_slow_ms: Annotated[
        float | None,
        typer.Option(help="Fault injection: delay each chunk and result this node serves by N ms."),
    ] = None,
    hedge: Annotated[
        bool,
        typer.Option(
            "--hedge", help="Also send a slow idempotent request to a second node; first wins."
        ),
    ] = False,
    model_slots: Annotated[int | None, typer.Option(help="Parallel streams per model.")] = None,
    model_queue_limit: Annotated[
        int | None,
        typer.Option(help="Waiting requests per model beyond which the node answers Busy."),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(help="OpenAI API HOST:PORT, or off [default 127.0.0.1:7949 if free]."),
    ] = None,
) -> None:
    """Run a node until SIGINT/SIGTERM, then leave the mesh gracefully."""
    from llmnode import log  # noqa: PLC0415
    from llmnode.cli.runner import (  # noqa: PLC0415
        ensure_data_dir,
        load_agents,
        load_keyring,
        run_node,
    )
    from llmnode.config import load_config, resolve_data_dir  # noqa: PLC0415

    overrides: dict[str, Any] = {
        "data_dir": str(data_dir) if data_dir else None,
        "name": name,
        "listen": listen,
        "advertise": advertise,
        "join": join or [],
        "beacon": False if no_beacon else None,
        "models": model or [],
        "agents": agent or [],
        "control": control,
        "model_store": model_store,
        "log_level": log_level,
        "log_json": log_json,
        "probe_interval": probe_interval,
        "fault_delay_ms": fault_delay_ms,
        "fault_slow_ms": fault_slow_ms,
        "model_slots": model_slots,
        "model_queue_limit": model_queue_limit,
        "hedge": True if hedge else None,
        "http": http,
    }
    try:
        settings = load_config(config, overrides=overrides)
    except MeshError as error:
        fail(str(error))
    try:
        load_agents(settings.agents)  # before the node starts: a wrong spec is a usage error
    except MeshError as error:
        fail(str(error), code=2)
    try:
        log.configure(settings.log_level, json=settings.log_json)
        directory = ensure_data_dir(resolve_data_dir(settings.data_dir))
        load_keyring(directory, mesh_key)
    except MeshError as error:
        fail(str(error))
    run(run_node(settings))


async def _control_call(data_dir: Path | None, kind: str) -> Any:
    from llmnode.client.connection import ControlClient  # noqa: PLC0415
    from llmnode.schemas.control import CtlPeers, CtlStatus  # noqa: PLC0415

    async with ControlClient.from_data_dir(data_dir) as client:
        message = CtlStatus(id=0) if kind == "status" else CtlPeers(id=0)
        reply = await client.call(message)
        return msgspec.msgpack.decode(reply.data)


def _to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def status(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """This node: id, uptime, resources, services, load, rejections. Exit 0 if it runs."""
    data = run(_control_call(data_dir, "status"))
    if as_json:
        typer.echo(json.dumps(_to_builtins(data), indent=2))
        return
    resources = data.get("resources", {})
    gpus = resources.get("gpus", [])
    typer.echo(f"node      {data['name']}  ({data['node_id']})")
    typer.echo(
        f"address   {data['address']}   uptime {data['uptime_s']} s   "
        f"incarnation {data.get('incarnation')}"
    )
    gpu_text = (
        ", ".join(f"{g['name']} {g['memory_free_mb']}/{g['memory_total_mb']} MiB" for g in gpus)
        or "none"
    )
    typer.echo(
        f"resources {resources.get('cpu_cores')} cores, {resources.get('ram_free_mb')}/"
        f"{resources.get('ram_total_mb')} MiB RAM free, GPUs: {gpu_text}"
    )
    typer.echo(f"members   {data.get('members_alive')} alive")
    for service in data.get("services", []):
        load = service.get("load", {})
        typer.echo(
            f"service   {service['name']:<32} queue {load.get('queue_depth', 0):>3}  in-flight "
            f"{load.get('in_flight', 0):>3}  {load.get('ewma_service_ms', 0):.0f} ms  "
            f"served {load.get('served', 0)}"
        )
    for agent_name, agent in data.get("agents", {}).items():
        failure = f"  last error: {agent['last_error']}" if agent.get("last_error") else ""
        typer.echo(
            f"agent     {agent_name:<32} {agent['state']:<10} restarts {agent['restarts']}{failure}"
        )
    counters = data.get("counters", {})
    requests = counters.get("requests", {})
    typer.echo("requests  " + "  ".join(f"{k} {v}" for k, v in requests.items()))
    rejections = counters.get("rejections", {})
    typer.echo(
        "rejected  " + ("  ".join(f"{k} {v}" for k, v in sorted(rejections.items())) or "none")
    )


def peers(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Members of the mesh as this node sees them: state, incarnation, GPUs, free memory, load."""
    rows = run(_control_call(data_dir, "peers"))
    if as_json:
        typer.echo(json.dumps(_to_builtins(rows), indent=2))
        return
    from rich.console import Console  # noqa: PLC0415

    console = Console()
    if not console.is_terminal:  # piped or redirected: as wide as the rows, so nothing is cut
        console = Console(width=UNBOUNDED_WIDTH)
    console.print(peers_table(rows))


UNBOUNDED_WIDTH = 10_000


def peers_table(rows: list[dict[str, Any]]) -> Any:
    """The ``peers`` table (a rich Table): cells that do not fit wrap onto more lines (full
    addresses and model names, one service a line), never cut off; ``node`` is the id's first 12
    characters, enough for ``name@node``."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(box=None)
    for column in ("node", "name", "state", "inc", "address", "gpus", "free MiB", "load", "heard"):
        short = column in ("node", "state", "inc", "free MiB", "heard")  # narrowed last
        table.add_column(column, overflow="fold", no_wrap=short, min_width=4 if short else None)
    for row in rows:
        load = "\n".join(
            f"{name}: {load_text(v)}"
            for name, v in row.get("load", {}).items()
            if name != "subscriptions"
        )
        heard = (
            "self"
            if row.get("self")
            else (f"{row['last_heard_s']}s" if row.get("last_heard_s") is not None else "-")
        )
        table.add_row(
            row["node_id"][:12],
            row.get("name", ""),
            row["state"],
            str(row["incarnation"]),
            row.get("address", ""),
            ",".join(row.get("gpus", [])) or "cpu",
            str(row.get("free_memory_mb", "")),
            load or "-",
            heard,
        )
    return table


def load_text(load: dict[str, Any]) -> str:
    """One service's load in the ``peers`` table: queue, in flight and how old that is, or
    "load not known" (load is not gossiped: a node knows a peer's only from replies and load
    reports); then the gossiped service time."""
    age = load.get("age_s")
    if age is None:
        live = "load not known"
    else:
        live = f"q{load['queue']} f{load['in_flight']}" + (f" {age:g}s ago" if age else "")
    return f"{live} ~{load['service_ms']}ms"


def register(app: typer.Typer) -> None:
    """Add ``start``, ``status`` and ``peers`` to ``app``."""
    app.command()(start)
    app.command()(status)
    app.command()(peers)
