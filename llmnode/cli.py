"""The ``llmnode`` command line (Typer): parse arguments into a config, call the library.

Every :class:`~llmnode.errors.MeshError` ends the command with one readable line on stderr and a
non-zero exit status; no library traceback reaches the user.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer

from llmnode import __version__
from llmnode.errors import MeshError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="llmnode: a peer-to-peer mesh for serving language models and running agents.",
)
T = TypeVar("T")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Node data directory [env LLMNODE_DATA_DIR; default ~/.local/share/llmnode].",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coroutine)
    except MeshError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise AssertionError("unreachable")


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


# -- init ---------------------------------------------------------------------------------------


@app.command()
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
    from llmnode.config import resolve_data_dir  # noqa: PLC0415
    from llmnode.nodes.control import KEYRING_FILE  # noqa: PLC0415
    from llmnode.runner import load_or_create_identity  # noqa: PLC0415

    try:
        if print_mesh_key:
            typer.echo(MeshKeyRing.key_to_text(MeshKeyRing.generate_key()))
            return
        directory = resolve_data_dir(data_dir)
        identity = load_or_create_identity(directory)
        ring_path = directory / KEYRING_FILE
        if ring_path.exists() and not force and not mesh_key:
            ring = MeshKeyRing.load(ring_path)
            created = False
        else:
            if ring_path.exists() and not force and mesh_key:
                ring = MeshKeyRing.load(ring_path)
                key = MeshKeyRing.key_from_text(mesh_key)
                if key not in ring:
                    ring.add(key)
                ring.use(key)
            else:
                ring = (
                    MeshKeyRing(MeshKeyRing.key_from_text(mesh_key))
                    if mesh_key
                    else MeshKeyRing.generate()
                )
            ring.save(ring_path)
            created = True
    except MeshError as error:
        _fail(str(error))
    key_text = MeshKeyRing.key_to_text(ring.primary)
    if as_json:
        typer.echo(
            json.dumps({"node_id": identity.name, "data_dir": str(directory), "mesh_key": key_text})
        )
        return
    typer.echo(f"node id:   {identity.name}")
    typer.echo(f"data dir:  {directory}")
    typer.echo(f"mesh key:  {key_text}")
    if created and not mesh_key:
        typer.echo("\nShare the mesh key with the other machines (keep it secret):")
        typer.echo("  LLMNODE_MESH_KEY=<key> llmnode start --join <this host>:7946")


# -- keys ---------------------------------------------------------------------------------------

keys_app = typer.Typer(no_args_is_help=True, help="Rotate the mesh key ring (add, use, retire).")
app.add_typer(keys_app, name="keys")


def _edit_ring(data_dir: Path | None, edit: Callable[[Any], None]) -> None:
    from llmnode.bus.keyring import MeshKeyRing  # noqa: PLC0415
    from llmnode.config import resolve_data_dir  # noqa: PLC0415
    from llmnode.nodes.control import KEYRING_FILE  # noqa: PLC0415

    path = resolve_data_dir(data_dir) / KEYRING_FILE
    try:
        ring = MeshKeyRing.load(path)
        edit(ring)
        ring.save(path)
    except MeshError as error:
        _fail(str(error))
    try:
        _run_quiet(_reload_keys(data_dir))
    except MeshError:
        typer.echo("key ring updated; no node is running here (it is read at the next start)")
        return
    typer.echo("key ring updated; the running node uses it now")


async def _reload_keys(data_dir: Path | None) -> None:
    from llmnode.nodes.control_client import ControlClient  # noqa: PLC0415
    from llmnode.schemas.control import CtlReloadKeys  # noqa: PLC0415

    async with ControlClient.from_data_dir(data_dir) as client:
        await client.call(CtlReloadKeys(id=client.next_id()))


def _run_quiet(coroutine: Coroutine[Any, Any, T]) -> T:
    """Like _run, but MeshError propagates to the caller instead of ending the command."""
    return asyncio.run(coroutine)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List the keys of the ring (primary first), by key id."""
    from llmnode.bus.keyring import MeshKeyRing, key_id  # noqa: PLC0415
    from llmnode.config import resolve_data_dir  # noqa: PLC0415
    from llmnode.nodes.control import KEYRING_FILE  # noqa: PLC0415

    try:
        ring = MeshKeyRing.load(resolve_data_dir(data_dir) / KEYRING_FILE)
    except MeshError as error:
        _fail(str(error))
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


# -- start --------------------------------------------------------------------------------------


@app.command()
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
    from llmnode.config import load_config, resolve_data_dir  # noqa: PLC0415
    from llmnode.runner import load_keyring, run_node  # noqa: PLC0415

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
        log.configure(settings.log_level, json=settings.log_json)
        directory = resolve_data_dir(settings.data_dir)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        load_keyring(directory, mesh_key)
    except MeshError as error:
        _fail(str(error))
    _run(run_node(settings))


# -- status / peers -----------------------------------------------------------------------------


async def _control_call(data_dir: Path | None, kind: str) -> Any:
    from llmnode.nodes.control_client import ControlClient  # noqa: PLC0415
    from llmnode.schemas.control import CtlPeers, CtlStatus  # noqa: PLC0415

    async with ControlClient.from_data_dir(data_dir) as client:
        message = CtlStatus(id=0) if kind == "status" else CtlPeers(id=0)
        reply = await client.call(message)
        return msgspec.msgpack.decode(reply.data)


def _to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


@app.command()
def status(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """This node: id, uptime, resources, services, load, rejections. Exit 0 if it runs."""
    data = _run(_control_call(data_dir, "status"))
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
    counters = data.get("counters", {})
    requests = counters.get("requests", {})
    typer.echo("requests  " + "  ".join(f"{k} {v}" for k, v in requests.items()))
    rejections = counters.get("rejections", {})
    typer.echo(
        "rejected  " + ("  ".join(f"{k} {v}" for k, v in sorted(rejections.items())) or "none")
    )


@app.command()
def peers(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Members of the mesh as this node sees them: state, incarnation, GPUs, free memory, load."""
    rows = _run(_control_call(data_dir, "peers"))
    if as_json:
        typer.echo(json.dumps(_to_builtins(rows), indent=2))
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(box=None)
    for column in ("node", "name", "state", "inc", "address", "gpus", "free MiB", "load", "heard"):
        table.add_column(column)
    for row in rows:
        load = ", ".join(
            f"{name}: q{v['queue']} f{v['in_flight']} {v['service_ms']}ms"
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
    Console().print(table)


# -- schema -------------------------------------------------------------------------------------


@app.command()
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
        _fail(str(error))
    typer.echo(f"wrote {len(written)} schema files to {out}")


def main() -> None:
    try:
        app()
    except MeshError as error:  # pragma: no cover - commands translate their own
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(1)


def _mount() -> None:
    """Sub-apps from agents/ (models, agent commands, demo)."""
    from llmnode.agents.models.cli import app as models_app  # noqa: PLC0415

    app.add_typer(models_app, name="models", help="Pull, export, list and remove models.")
    from llmnode.http.cli import api_keys_app  # noqa: PLC0415

    app.add_typer(api_keys_app, name="api-keys")
    from llmnode.agents import commands  # noqa: PLC0415

    commands.register(app)
    try:
        from llmnode import demo  # noqa: PLC0415
    except ImportError:  # pragma: no cover - during development only
        return
    demo.register(app)


_mount()
