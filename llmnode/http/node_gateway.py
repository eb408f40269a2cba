"""MeshGateway over a running node: its router, mesh view and reports (no I/O of its own).

The one module of the HTTP face that knows the node's internals; when they move, only this
adapter changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llmnode.http.errors import HttpError
from llmnode.http.gateway import MeshModel, OnChunk
from llmnode.nodes.mesh.view import LIVE

if TYPE_CHECKING:
    from llmnode.nodes.node import Node

MODEL_PREFIX = "model:"
Detokenize = Callable[[str, list[list[int]]], list[str]]


class NodeGateway:
    def __init__(self, node: Node, *, detokenize: Detokenize | None = None) -> None:
        self._node = node
        self._detokenize = detokenize

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
    ) -> bytes:
        return await self._node.router.call(
            service, method, payload, timeout=timeout, stream=stream, idempotent=idempotent,
            caller=caller, on_chunk=on_chunk,
        )  # fmt: skip

    def publish(self, topic: str, payload: bytes, caller: str) -> int:
        return self._node.clients.topics.publish(topic, payload, caller)

    def models(self) -> list[MeshModel]:
        found: dict[str, tuple[str, list[str]]] = {}
        for peer in self._node.view.peers.values():
            record = peer.record
            if record is None or self._node.view.state_of(peer.node) not in LIVE:
                continue
            for info in record.services:
                if info.kind == "model" and info.name.startswith(MODEL_PREFIX):
                    name = info.name.removeprefix(MODEL_PREFIX)
                    found.setdefault(name, (info.task, []))[1].append(record.name)
        return [
            MeshModel(name=name, task=task, nodes=tuple(sorted(nodes)))
            for name, (task, nodes) in found.items()
        ]

    def detokenize(self, model: str, token_ids: list[list[int]]) -> list[str]:
        if self._detokenize is None:
            raise HttpError(400, "token-id input is not supported by this node", param="input")
        return self._detokenize(model, token_ids)

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
