"""Three in-process nodes with real buses, real transfers and the placement loop.

Membership and the gossip of each node's holdings are stood in for by a shared registry (what
SWIM and the state records give a node); deployment records travel over the buses as
DeploymentSync messages, models as chunk frames. "Load" verifies the model's files (the first
thing the runtime does) and marks it loaded, as the node will once it is warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmnode.agents.models.store import ModelStore
from llmnode.agents.models.transfer import ModelTransfer
from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity, node_id_to_text
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.memory import MemoryNetwork
from llmnode.nodes.placement.assign import NodeCapacity
from llmnode.nodes.placement.autoscale import AutoscalePolicy
from llmnode.nodes.placement.deployments import Deployments
from llmnode.nodes.placement.loop import Hooks, PlacementLoop, issue_and_keep
from llmnode.schemas.placement import Deployment, DeploymentSync, SignedDeployment
from tests.support.placement import MODEL, same_files, store_with_model

FOOTPRINT_MB = 700


@dataclass
class SimNode:
    name: str
    bus: Bus
    identity: Identity
    store: ModelStore
    transfer: ModelTransfer
    deployments: Deployments
    loop: PlacementLoop | None = None
    memory_mb: int = 1000
    alive: bool = True
    loaded: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return node_id_to_text(self.bus.node_id)


class Mesh:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.network: MemoryNetwork[bytes] = MemoryNetwork(seed=3, realtime=True)
        self.ring = MeshKeyRing.generate()
        self.nodes: list[SimNode] = []
        self.now = 0.0  # the autoscale clock, advanced by the test

    def capacities(self) -> list[NodeCapacity]:
        return [
            NodeCapacity(
                node=node.text,
                memory_mb=node.memory_mb,
                stored=frozenset(m.name for m in node.store.list()),
                loaded=frozenset(node.loaded),
            )
            for node in self.nodes
            if node.alive
        ]

    async def add(self, name: str, store: ModelStore, memory_mb: int) -> SimNode:
        identity = Identity.generate()
        bus = Bus(identity, self.ring, self.network.endpoint(name))
        await bus.start()
        transfer = ModelTransfer(store, bus.send, chunk_bytes=128 * 1024, chunk_timeout_s=0.5)
        node = SimNode(name, bus, identity, store, transfer, Deployments(), memory_mb=memory_mb)
        by_text: dict[str, bytes] = {}

        async def fetch(model: str, holders: tuple[str, ...]) -> None:
            by_text.update({n.text: n.bus.node_id for n in self.nodes})
            await transfer.pull(model, [by_text[h] for h in holders])

        async def load(model: str) -> None:
            await asyncio.to_thread(store.verify, model)
            node.loaded.add(model)

        async def unload(model: str) -> None:
            node.loaded.discard(model)

        def publish(record: SignedDeployment) -> None:
            for peer in bus.peers:
                bus.send(peer, DeploymentSync(records=[record]))

        hooks = Hooks(
            capacities=self.capacities,
            loaded_mb=lambda: {m: FOOTPRINT_MB for m in node.loaded},
            fetch=fetch,
            load=load,
            unload=unload,
            publish=publish,
        )
        policy = AutoscalePolicy(add_window_s=10, quiet_s=30, cooldown_s=5)
        node.loop = PlacementLoop(
            node.text,
            identity,
            node.deployments,
            hooks,
            policy=policy,
            interval_s=0.1,
            settle_s=0.0,  # the clock here is the autoscale clock, frozen between steps
            clock=lambda: self.now,
        )
        loop = node.loop

        async def pump() -> None:
            while True:
                inbound = await bus.receive()
                if isinstance(inbound.message, DeploymentSync):
                    if node.deployments.merge(inbound.message.records):
                        loop.nudge()
                else:
                    transfer.handle(inbound.sender, inbound.message)

        node.tasks = [
            asyncio.create_task(pump()),
            asyncio.create_task(transfer.run()),
            asyncio.create_task(loop.run()),
        ]
        for other in self.nodes:
            await bus.connect(other.name, timeout=5)
        self.nodes.append(node)
        return node

    async def kill(self, node: SimNode) -> None:
        node.alive = False
        for task in node.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await node.bus.close()
        for other in self.nodes:
            if other.alive:
                other.bus.forget_peer(node.bus.node_id)
                assert other.loop is not None
                other.loop.nudge()

    def deploy(self, node: SimNode, deployment: Deployment) -> None:
        record = issue_and_keep(node.identity, node.deployments, deployment, time.time())
        for peer in node.bus.peers:
            node.bus.send(peer, DeploymentSync(records=[record]))
        assert node.loop is not None
        node.loop.nudge()

    def serving(self, model: str = MODEL) -> set[str]:
        return {node.name for node in self.nodes if node.alive and model in node.loaded}

    async def close(self) -> None:
        for node in self.nodes:
            if node.alive:
                await self.kill(node)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def run_mesh(tmp_path: Path, scenario: Callable[[Mesh], Awaitable[None]]) -> None:
    mesh = Mesh(tmp_path)
    try:
        await scenario(mesh)
    finally:
        await mesh.close()


async def test_deploying_two_replicas_copies_the_model_and_a_death_is_repaired(
    tmp_path: Path,
) -> None:
    async def scenario(mesh: Mesh) -> None:
        source, _ = store_with_model(tmp_path / "a")
        a = await mesh.add("a", source, memory_mb=1000)
        b = await mesh.add("b", ModelStore(tmp_path / "b"), memory_mb=4000)
        c = await mesh.add("c", ModelStore(tmp_path / "c"), memory_mb=2000)
        mesh.deploy(c, Deployment(model=MODEL, replicas=2, footprint_mb=FOOTPRINT_MB))
        # a holds the files; b has the most memory: b fetches from a over the mesh.
        await until(lambda: mesh.serving() == {"a", "b"})
        assert same_files(source, b.store)
        assert not c.store.exists(MODEL)
        assert all(n.deployments.get(MODEL) is not None for n in (a, b, c))

        await mesh.kill(a)  # the only original holder dies
        await until(lambda: mesh.serving() == {"b", "c"})
        assert same_files(b.store, c.store)  # c got it from b, the copy b made
        assert c.transfer.stats["bytes_fetched"] > 0

    await run_mesh(tmp_path, scenario)


async def test_auto_adds_a_replica_under_a_burst_and_removes_it_when_quiet(
    tmp_path: Path,
) -> None:
    async def scenario(mesh: Mesh) -> None:
        source, _ = store_with_model(tmp_path / "a")
        a = await mesh.add("a", source, memory_mb=1000)
        b = await mesh.add("b", ModelStore(tmp_path / "b"), memory_mb=4000)
        deployment = Deployment(model=MODEL, replicas=1, auto=True, footprint_mb=FOOTPRINT_MB)
        mesh.deploy(a, deployment)
        await until(lambda: mesh.serving() == {"a"})
        steward = next(n for n in (a, b) if n.text == _steward(mesh))
        assert steward.loop is not None
        for second in range(0, 12):  # a burst: the queue wait stays at 2 s for 12 s
            mesh.now = float(second)
            steward.loop.autoscale({MODEL: 2000.0})
        await until(lambda: mesh.serving() == {"a", "b"})
        assert all(n.deployments.current()[MODEL].replicas == 2 for n in (a, b))
        for second in range(12, 60):  # quiet
            mesh.now = float(second)
            steward.loop.autoscale({MODEL: 0.0})
        await until(lambda: len(mesh.serving()) == 1)
        assert all(n.deployments.current()[MODEL].replicas == 1 for n in (a, b))

    await run_mesh(tmp_path, scenario)


def _steward(mesh: Mesh) -> str:
    from llmnode.nodes.placement.autoscale import steward

    chosen = steward(MODEL, [node.text for node in mesh.nodes if node.alive])
    assert chosen is not None
    return chosen
