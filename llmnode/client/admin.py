"""The SDK's node and model administration: status, peers, deployments, pulls (I/O: control socket).

:class:`NodeAdmin` is a base of :class:`~llmnode.client.mesh.Mesh`; its methods ask the local
node through its control socket. Deployments are mesh-wide: one issued on any node is signed
by it, gossiped, and placed by every node alike (``llmnode.nodes.placement``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from llmnode.client.connection import ControlClient
from llmnode.client.inputs import decode_answer
from llmnode.schemas.control import (
    CtlDeploy,
    CtlDeployments,
    CtlPeers,
    CtlPullModel,
    CtlStatus,
)

_ANY = msgspec.msgpack.Decoder()
DEPLOY_TIMEOUT = 30.0  # a deploy from a node without the model asks a holder for its manifest
PULL_TIMEOUT = 3600.0


class NodeAdmin:
    """The local node and the mesh's deployments."""

    client: ControlClient

    async def _ask(self, message: Any, what: str, *, timeout: float | None = None) -> Any:
        answer = await self.client.call(message, timeout=timeout)
        return decode_answer(_ANY, answer.data, what) if answer.data else None

    async def status(self) -> dict[str, Any]:
        """The local node: node_id, name, uptime_s, address, resources, services, counters."""
        data: dict[str, Any] = await self._ask(CtlStatus(id=self.client.next_id()), "status")
        return data or {}

    async def peers(self) -> list[dict[str, Any]]:
        """The members the local node knows, with their state, resources and services."""
        data: list[dict[str, Any]] = await self._ask(CtlPeers(id=self.client.next_id()), "peers")
        return data or []

    async def deploy(
        self, model: str, replicas: int = 1, *, auto: bool = False, max_replicas: int = 8
    ) -> dict[str, Any]:
        """Serve ``model`` with ``replicas`` replicas (or ``auto``: as demand asks, up to
        ``max_replicas``), placed by the mesh. Raises ModelError for a model no node holds,
        NoCapacity when no node has the memory, ConfigError for a bad count."""
        message = CtlDeploy(
            id=self.client.next_id(),
            model=model,
            replicas=replicas,
            auto=auto,
            max_replicas=max_replicas,
        )
        data: dict[str, Any] = await self._ask(message, "deployment", timeout=DEPLOY_TIMEOUT)
        return data

    async def undeploy(self, model: str) -> dict[str, Any]:
        """Stop serving ``model`` through placement (pinned ``--model`` replicas stay)."""
        message = CtlDeploy(id=self.client.next_id(), model=model, replicas=0, deployed=False)
        data: dict[str, Any] = await self._ask(message, "deployment")
        return data

    async def deployments(self) -> list[dict[str, Any]]:
        """Every deployment: replicas wanted, nodes assigned, nodes serving, unplaced."""
        data = await self._ask(CtlDeployments(id=self.client.next_id()), "deployments")
        return list(data or [])

    async def pull_from_mesh(self, model: str, *, timeout: float = PULL_TIMEOUT) -> dict[str, Any]:
        """Copy ``model`` into the local node's store from a peer (sha256-checked, resumable)."""
        message = CtlPullModel(id=self.client.next_id(), model=model, timeout=timeout)
        data: dict[str, Any] = await self._ask(message, "pull", timeout=timeout + 5.0)
        return data
