"""The narrow interface the HTTP face needs from its node: MeshGateway (no I/O).

The HTTP server never touches the node's internals: it routes requests through ``call`` (the
router: scheduling, Busy re-routing, retries, stream resumption, cancellation), lists what the
mesh serves, and reports status. :mod:`llmnode.http.node_gateway` adapts a running node to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

OnChunk = Callable[[bytes], Awaitable[None]]
OnServed = Callable[[str], None]  # told the name of the node that served the request


@dataclass(frozen=True, slots=True)
class MeshModel:
    """A model served somewhere in the mesh: its name (without ``model:``), task and nodes."""

    name: str
    task: str  # "text-generation" or "feature-extraction"
    nodes: tuple[str, ...]  # names of the live nodes serving it


class MeshGateway(Protocol):
    """What the HTTP face may ask of its node."""

    @property
    def node_name(self) -> str: ...

    @property
    def node_id(self) -> str: ...

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
        """Route one request into the mesh; the final result bytes, or a typed MeshError.
        ``on_served`` learns the name of the node that answered, before the result returns."""
        ...

    def publish(self, topic: str, payload: bytes, caller: str) -> int:
        """Publish to a topic; the number of nodes it went to."""
        ...

    def models(self, *, live_only: bool = True) -> list[MeshModel]:
        """Every model served by a live node of the mesh; with ``live_only`` False, also those
        whose nodes are down now but still in the view (the router waits for them)."""
        ...

    def status(self) -> dict[str, object]: ...

    def peers(self) -> list[dict[str, object]]: ...

    def api_key_hashes(self) -> frozenset[str]:
        """sha256 hex digests of every API key valid anywhere in the mesh."""
        ...
