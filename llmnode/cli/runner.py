"""The composition root: builds a node from its config and wires agents and models into it (I/O).

``llmnode start`` and ``llmnode demo`` both call :func:`run_node`. This is the one place that
imports both ``nodes/`` and ``agents/``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llmnode.bus.identity import Identity, write_secret_file
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.transport import Transport
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.config import DEPLOYMENTS_FILE, lock_data_dir
from llmnode.errors import ConfigError
from llmnode.log import get_logger
from llmnode.nodes.control.server import KEYRING_FILE
from llmnode.nodes.node import Node
from llmnode.nodes.placement.autoscale import AutoscalePolicy
from llmnode.nodes.placement.host import NodePlacement
from llmnode.nodes.requests.receipts import ReceiptSigner
from llmnode.nodes.requests.service import Service
from llmnode.schemas.config import NodeConfig

if TYPE_CHECKING:
    from llmnode.agents.agent import Agent
    from llmnode.agents.supervisor import AgentSupervisor

log = get_logger(__name__)

IDENTITY_FILE = "identity.key"
GIL_SWITCH_INTERVAL_S = 0.0005
INCARNATION_FILE = "incarnation"
DATA_DIR_MODE = 0o700


def ensure_data_dir(path: Path) -> Path:
    """The data dir, created or (if others could read it) narrowed to mode 0700: it holds keys."""
    path.mkdir(parents=True, exist_ok=True, mode=DATA_DIR_MODE)
    try:
        if stat.S_IMODE(path.stat().st_mode) & ~DATA_DIR_MODE:
            path.chmod(DATA_DIR_MODE)
    except OSError as error:
        raise ConfigError(f"cannot make {path} private: {error.strerror or error}") from error
    return path


def load_or_create_identity(data_dir: Path) -> Identity:
    return Identity.load_or_create(ensure_data_dir(data_dir) / IDENTITY_FILE)


def load_keyring(
    data_dir: Path, mesh_key: str | None = None, *, create: bool = False, replace: bool = False
) -> MeshKeyRing:
    """The node's key ring, the one place it is bootstrapped (``llmnode init`` and ``start``).

    A mesh key given (argument or ``LLMNODE_MESH_KEY``) is added and made primary (with
    ``replace``, it is the whole ring). Without one, an existing ring is used; with ``create``
    (``init``) a missing (or, with ``replace``, any) ring is replaced by a new mesh's key;
    otherwise a missing ring is a ConfigError that says how to get one."""
    path = data_dir / KEYRING_FILE
    mesh_key = mesh_key or os.environ.get("LLMNODE_MESH_KEY") or None
    ring = MeshKeyRing.load(path) if path.exists() and not replace else None
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
    elif ring is None and create:
        ring = MeshKeyRing.generate()
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
    write_secret_file(path, str(current))  # 0600 like every file here, and atomic
    return current


def build_transport(config: NodeConfig) -> Transport:
    # Listening on every interface, the transport advertises this host's address itself.
    transport: Transport = ZmqTransport(config.listen, config.advertise or None)
    if config.fault_delay_ms > 0:
        from llmnode.bus.faults import DelayedTransport  # noqa: PLC0415

        transport = DelayedTransport(transport, config.fault_delay_ms / 1000.0)
    return transport


def build_model_services(config: NodeConfig, signer: ReceiptSigner | None = None) -> list[Service]:
    if not config.models:
        return []
    from llmnode.agents.model_service import ModelService  # noqa: PLC0415 - heavy imports
    from llmnode.agents.models.store import ModelStore  # noqa: PLC0415

    store = ModelStore(config.model_store or None)
    services: list[Service] = []
    for name in config.models:
        services.append(
            ModelService(
                store,
                name,
                slots=config.model_slots or None,
                queue_limit=config.model_queue_limit,
                signer=signer,
            )
        )
    return services


def build_placement(node: Node, config: NodeConfig) -> NodePlacement:
    """The node's placement: deployments, the loop, and the model side (store, transfer, runtimes).
    Models started with ``--model`` are pinned replicas: placement counts them and keeps them."""
    from llmnode.agents.model_host import StoreModels  # noqa: PLC0415 - heavy imports
    from llmnode.agents.models.store import ModelStore  # noqa: PLC0415
    from llmnode.agents.models.transfer import ModelTransfer  # noqa: PLC0415

    store = ModelStore(config.model_store or None)
    rate = config.model_transfer_mb_s * 1e6
    side = StoreModels(
        store,
        node.bus.send,
        node.server.services,
        node.state_changed,
        slots=config.model_slots,
        queue_limit=config.model_queue_limit,
        transfer=ModelTransfer(store, node.bus.send, rate_bytes_per_s=rate),
        signer=ReceiptSigner(node.identity, node.name),
    )
    auto = config.autoscale
    policy = AutoscalePolicy(
        add_wait_ms=auto.add_wait_ms,
        add_window_s=auto.add_window_s,
        remove_wait_ms=auto.remove_wait_ms,
        quiet_s=auto.quiet_s,
        cooldown_s=auto.cooldown_s,
    )
    return NodePlacement(
        node.identity,
        node.view,
        node._send,  # this node included: its own LoadQuery is answered in place
        side,
        resources=lambda: node.resources_now,
        pinned=config.models,
        policy=policy,
        deployments_file=node.data_dir / DEPLOYMENTS_FILE,
        rejections=node.rejections,
    )


def load_agents(specs: list[str]) -> list[type[Agent]]:
    """The classes of ``--agent pkg.module:Class`` specs, checked before the node starts: a spec
    that names no module or class is a ConfigError with one readable line."""
    if not specs:
        return []
    from llmnode.agents.host import load_agent_class  # noqa: PLC0415 - imports the agents

    return [load_agent_class(spec) for spec in specs]


class HostingNode(Node):
    """A node whose ``llmnode status`` also shows the agents this process hosts for it."""

    supervisor: AgentSupervisor | None = None

    def status(self) -> dict[str, object]:
        report = super().status()
        if self.supervisor is not None:
            report["agents"] = self.supervisor.report()
        return report


async def run_node(config: NodeConfig, *, install_signals: bool = True) -> None:
    """Run a node (and its supervised ``--agent`` agents) until SIGINT/SIGTERM, then leave
    gracefully."""
    # Runtime worker threads hand results back to the event loop and the loop hands requests to
    # them; with the default 5 ms GIL switch interval each hand-off can wait for the other thread's
    # slice. 0.5 ms cut the mesh's added latency of an embed call by a quarter (BENCHMARKS.md).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    agents = load_agents(config.agents)
    data_dir = ensure_data_dir(Path(config.data_dir))
    data_dir_lock = lock_data_dir(data_dir)  # one node per data dir; released in finally
    identity = load_or_create_identity(data_dir)
    keyring = load_keyring(data_dir)
    node = HostingNode(
        config,
        identity,
        keyring,
        build_transport(config),
        services=build_model_services(config, ReceiptSigner(identity, config.name)),
        incarnation=next_incarnation(data_dir),
    )
    node.placement = build_placement(node, config)
    node.loops.append(node.placement.run)
    from llmnode.http.runtime import http_loops  # noqa: PLC0415

    node.loops += http_loops(node, config.http)
    loop = asyncio.get_running_loop()
    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _stopper(node, signum))
    hosting = asyncio.create_task(_host_agents(node, agents), name="agents") if agents else None
    try:
        await node.run()
    finally:
        data_dir_lock.release()
        if hosting is not None:
            hosting.cancel()
            (outcome,) = await asyncio.gather(hosting, return_exceptions=True)
            if isinstance(outcome, Exception):  # the supervisor restarts failures: a bug
                log.error("agent_supervisor_failed", error=repr(outcome))


async def _host_agents(node: HostingNode, agents: list[type[Agent]]) -> None:
    """Host the ``--agent`` agents in this process, supervised, once the node is ready."""
    from llmnode.agents.supervisor import AgentSupervisor  # noqa: PLC0415

    await node.ready.wait()
    node.supervisor = AgentSupervisor(agents, node.control.address, node.control.token)
    await node.supervisor.run()


def _stopper(node: Node, signum: int) -> Callable[[], None]:
    def stop() -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        node.stop()

    return stop
