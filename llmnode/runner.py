"""The composition root: builds a node from its config and wires agents and models into it (I/O).

``llmnode start`` and ``llmnode demo`` both call :func:`run_node`. This is the one place that
imports both ``nodes/`` and ``agents/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.transport import Transport
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.errors import ConfigError, MeshError
from llmnode.log import get_logger
from llmnode.nodes.control import KEYRING_FILE
from llmnode.nodes.node import Node
from llmnode.nodes.service import Service
from llmnode.schemas.config import NodeConfig

log = get_logger(__name__)

IDENTITY_FILE = "identity.key"
GIL_SWITCH_INTERVAL_S = 0.0005
INCARNATION_FILE = "incarnation"


def ensure_data_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def load_or_create_identity(data_dir: Path) -> Identity:
    return Identity.load_or_create(ensure_data_dir(data_dir) / IDENTITY_FILE)


def load_keyring(data_dir: Path, mesh_key: str | None = None) -> MeshKeyRing:
    """The node's key ring; a mesh key given (flag or LLMNODE_MESH_KEY) is added, made primary."""
    path = data_dir / KEYRING_FILE
    mesh_key = mesh_key or os.environ.get("LLMNODE_MESH_KEY") or None
    ring: MeshKeyRing | None = MeshKeyRing.load(path) if path.exists() else None
    if mesh_key:
        key = MeshKeyRing.key_from_text(mesh_key.strip())
        if ring is None:
            ring = MeshKeyRing(key)
        elif key not in ring:
            ring.add(key)
            ring.use(key)
        elif ring.primary != key:
            ring.use(key)
        ring.save(path)
    if ring is None:
        raise ConfigError(
            f"no mesh key in {data_dir}: run `llmnode init` (new mesh) or set LLMNODE_MESH_KEY "
            "(join an existing one)"
        )
    return ring


def next_incarnation(data_dir: Path) -> int:
    """One more than the last run's, so a restarted node rejoins above its old tombstone."""
    path = data_dir / INCARNATION_FILE
    try:
        previous = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        previous = -1
    current = previous + 1
    path.write_text(str(current))
    return current


def default_advertise(listen: str) -> str | None:
    """What to tell peers when listening on every interface: this host's address."""
    host, _, port = listen.removeprefix("tcp://").rpartition(":")
    if host not in ("0.0.0.0", "*", ""):
        return None
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = "127.0.0.1"
    return f"tcp://{address}:{port}" if port != "0" else None


def build_transport(config: NodeConfig) -> Transport:
    advertise = config.advertise or default_advertise(config.listen)
    transport: Transport = ZmqTransport(config.listen, advertise)
    if config.fault_delay_ms > 0:
        from llmnode.bus.faults import DelayedTransport  # noqa: PLC0415

        transport = DelayedTransport(transport, config.fault_delay_ms / 1000.0)
    return transport


def build_model_services(config: NodeConfig) -> list[Service]:
    if not config.models:
        return []
    from llmnode.agents.model_service import ModelService  # noqa: PLC0415 - heavy imports
    from llmnode.agents.models.store import ModelStore  # noqa: PLC0415

    store = ModelStore(config.model_store or None)
    services: list[Service] = []
    for name in config.models:
        services.append(
            ModelService(
                store, name, slots=config.model_slots or None, queue_limit=config.model_queue_limit
            )
        )
    return services


async def run_node(config: NodeConfig, *, install_signals: bool = True) -> None:
    """Run a node (and its ``--agent`` agents) until SIGINT/SIGTERM, then leave gracefully."""
    # Runtime worker threads hand results back to the event loop and the loop hands requests to
    # them; with the default 5 ms GIL switch interval each hand-off can wait for the other thread's
    # slice. 0.5 ms cut the mesh's added latency of an embed call by a quarter (BENCHMARKS.md).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    data_dir = ensure_data_dir(Path(config.data_dir))
    identity = load_or_create_identity(data_dir)
    keyring = load_keyring(data_dir)
    node = Node(
        config,
        identity,
        keyring,
        build_transport(config),
        services=build_model_services(config),
        incarnation=next_incarnation(data_dir),
    )
    from llmnode.http.runtime import http_loops  # noqa: PLC0415

    node.loops += http_loops(node, config.http)
    loop = asyncio.get_running_loop()
    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _stopper(node, signum))
    agents_task: asyncio.Task[None] | None = None
    if config.agents:
        agents_task = asyncio.create_task(_run_agents(node, config.agents))
    try:
        await node.run()
    finally:
        if agents_task is not None:
            agents_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MeshError):
                await agents_task


def _stopper(node: Node, signum: int) -> Callable[[], None]:
    def stop() -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        node.stop()

    return stop


async def _run_agents(node: Node, specs: list[str]) -> None:
    """Host ``--agent pkg.module:Class`` agents in this process, attached to this node."""
    from llmnode.agents.host import AgentHost, load_agent_class  # noqa: PLC0415
    from llmnode.nodes.control_client import ControlClient  # noqa: PLC0415

    classes = [load_agent_class(spec) for spec in specs]
    await node.ready.wait()
    async with ControlClient(node.control.address, node.control.token) as client:
        host = AgentHost(client)
        await host.start(*(cls() for cls in classes))
        try:
            await asyncio.Event().wait()
        finally:
            await host.stop()
