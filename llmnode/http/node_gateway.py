"""MeshGateway over a running node: its router, mesh view and reports (no I/O of its own).

The one module of the HTTP face that knows the node's internals; when they move, only this
adapter changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmnode.http.gateway import MeshModel, OnChunk, OnServed
from llmnode.nodes.mesh.view import LIVE

if TYPE_CHECKING:
    from llmnode.nodes.node import Node

MODEL_PREFIX = "model:"


class NodeGateway:
    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def node_name(self) -> str:
        return self._node.name

    @property
    def node_id(self) -> str:
        return self._node.node_text

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float,
        stream: bool = False,
        idempotent: bool = True,
        caller: str = "",
        on_chunk: OnChunk | None = None,
        on_served: OnServed | None = None,
    ) -> bytes:
        def served(node: bytes) -> None:
            if on_served is not None:
                on_served(self.name_of(node))

        return await self._node.router.call(
            service, method, payload, timeout=timeout, stream=stream, idempotent=idempotent,
            caller=caller, on_chunk=on_chunk, on_served=served,
        )  # fmt: skip

    def name_of(self, node: bytes) -> str:
        """The name a node gives itself in its record; its id when it has no record here."""
        peer = self._node.view.peers.get(node)
        if peer is None:
            return node.hex()
        return peer.record.name if peer.record is not None else peer.node_text

    def publish(self, topic: str, payload: bytes, caller: str) -> int:
        return self._node.clients.topics.publish(topic, payload, caller)

    def models(self, *, live_only: bool = True) -> list[MeshModel]:
        found: dict[str, tuple[str, list[str]]] = {}
        for peer in self._node.view.peers.values():
            record = peer.record
            if record is None or (live_only and self._node.view.state_of(peer.node) not in LIVE):
                continue
            for info in record.services:
                if info.kind == "model" and info.name.startswith(MODEL_PREFIX):
                    name = info.name.removeprefix(MODEL_PREFIX)
                    found.setdefault(name, (info.task, []))[1].append(record.name)
        return [
            MeshModel(name=name, task=task, nodes=tuple(sorted(nodes)))
            for name, (task, nodes) in found.items()
        ]

    def status(self) -> dict[str, object]:
        return self._node.status()

    def peers(self) -> list[dict[str, object]]:
        return self._node.peers()

    def api_key_hashes(self) -> frozenset[str]:
        hashes: set[str] = set()
        for peer in self._node.view.peers.values():
            record = peer.record
            if record is not None:  # a key outlives its origin node: revoke it there
                hashes.update(record.api_keys)
        return frozenset(hashes)
