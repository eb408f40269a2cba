"""An in-process mesh: real Node objects on one MemoryNetwork, with small real services.

Everything but the wire is the production code (node, membership, router, server, bus sealing);
frames move through :class:`llmnode.bus.memory.MemoryTransport`, so the request path's retry,
re-route, hedge, resume and cancel run in one process in seconds, with partitions on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.memory import MemoryNetwork
from llmnode.errors import MeshError
from llmnode.nodes.membership import MembershipConfig
from llmnode.nodes.node import Node
from llmnode.nodes.requests.service import Emit, Service, ServiceCall
from llmnode.schemas.config import NodeConfig
from llmnode.schemas.inference import GenerateRequest, GenerateResult, TokenChunk
from llmnode.schemas.state import ServiceInfo, ServiceLoad

PROBE_INTERVAL = 0.1  # every membership timing scales with it: detection in about a second


@dataclass
class EchoService:
    """An agent-like service: answers its payload after ``delay`` seconds; counts its calls."""

    name: str = "echo"
    delay: float = 0.0
    slots: int = 1
    queue_limit: int = 8
    fail_with: BaseException | None = None
    calls: int = 0
    cancelled: int = 0
    running: int = 0

    def info(self) -> ServiceInfo:
        load = ServiceLoad(slots=self.slots, queue_limit=self.queue_limit, ewma_service_ms=5.0)
        return ServiceInfo(name=self.name, kind="agent", load=load)

    async def call(self, call: ServiceCall, emit: Emit) -> bytes:
        self.calls += 1
        self.running += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_with is not None:
                raise self.fail_with
            return call.payload
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    async def close(self) -> None:
        return None


@dataclass
class CountingModel:
    """A generation service whose tokens are 0, 1, 2, ...: token i is text ``"i "``. A resumed
    request continues after its ``resume_token_ids``, as a real runtime does."""

    name: str = "model:counter"
    token_delay: float = 0.01
    served: list[int] = field(default_factory=list)  # token ids this node produced

    def info(self) -> ServiceInfo:
        load = ServiceLoad(slots=4, queue_limit=16, ewma_service_ms=50.0)
        return ServiceInfo(name=self.name, kind="model", task="text-generation", load=load)

    async def call(self, call: ServiceCall, emit: Emit) -> bytes:
        request = msgspec.msgpack.decode(call.payload, type=GenerateRequest)
        start = len(request.resume_token_ids)
        for token in range(start, request.max_tokens):
            await asyncio.sleep(self.token_delay)
            self.served.append(token)
            if call.stream:
                await emit(msgspec.msgpack.encode(TokenChunk(text=f"{token} ", token_ids=[token])))
        ids = list(range(start, request.max_tokens))
        result = GenerateResult(
            text="".join(f"{i} " for i in ids),
            finish_reason="length",
            prompt_tokens=1,
            completion_tokens=len(ids),
            token_ids=ids,
        )
        return msgspec.msgpack.encode(result)

    async def close(self) -> None:
        return None


class InProcessMesh:
    """Nodes ``n0``, ``n1``, ... on one memory network; ``n0`` is everyone's seed."""

    def __init__(self, root: Path, *, seed: int = 1) -> None:
        self.root = root
        self.network: MemoryNetwork[bytes] = MemoryNetwork(seed=seed, realtime=True)
        self.keyring = MeshKeyRing.generate()
        self.nodes: list[Node] = []
        self._tasks: dict[Node, asyncio.Task[None]] = {}

    @staticmethod
    def address(index: int) -> str:
        return f"tcp://127.0.0.1:{20000 + index}"

    async def start(
        self,
        services: Sequence[Service] = (),
        *,
        membership_config: MembershipConfig | None = None,
        **config: object,
    ) -> Node:
        index = len(self.nodes)
        data_dir = self.root / f"n{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, object] = {
            "name": f"n{index}",
            "data_dir": str(data_dir),
            "join": [self.address(0).removeprefix("tcp://")] if index else [],
            "beacon": False,
            "probe_interval": PROBE_INTERVAL,
            "state_refresh_s": 0.1,
            **config,
        }
        node = Node(
            msgspec.convert(settings, NodeConfig),
            Identity.generate(),
            MeshKeyRing(self.keyring.primary),
            self.network.endpoint(self.address(index)),
            services=services,
            membership_config=membership_config,
        )
        self.nodes.append(node)
        self._tasks[node] = asyncio.create_task(node.run(), name=f"node-n{index}")
        await asyncio.wait_for(node.ready.wait(), 5)
        return node

    async def converge(self, service: str | None = None, timeout: float = 5.0) -> None:
        """Until every running node sees every other alive (and ``service`` advertised)."""
        deadline = time.monotonic() + timeout
        running = [node for node in self.nodes if not self._tasks[node].done()]
        while time.monotonic() < deadline:
            if all(self._sees_all(node, running, service) for node in running):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the in-process mesh did not converge")

    @staticmethod
    def _sees_all(node: Node, running: list[Node], service: str | None) -> bool:
        alive = {
            member.node
            for member in (node.membership.members() if node.membership else [])
            if member.state == "alive"
        }
        if not {other.node_id for other in running} <= alive | {node.node_id}:
            return False
        return service is None or len(node.view.hosts(service)) >= 1

    def isolate(self, node: Node) -> None:
        """Cut ``node`` off from every other node (a crash, as the others see it)."""
        others = [other.bus.address for other in self.nodes if other is not node]
        self.network.partition([node.bus.address], others)

    async def crash(self, node: Node) -> None:
        """Stop ``node`` without a goodbye: cut off first, so its Left never goes out."""
        self.isolate(node)
        await self.stop(node)

    async def stop(self, node: Node) -> None:
        task = self._tasks[node]
        node.stop()
        with contextlib.suppress(MeshError, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)

    async def close(self) -> None:
        for node in self.nodes:
            if not self._tasks[node].done():
                await self.stop(node)


@contextlib.asynccontextmanager
async def in_process_mesh(root: Path) -> AsyncIterator[InProcessMesh]:
    mesh = InProcessMesh(root)
    try:
        yield mesh
    finally:
        await mesh.close()
