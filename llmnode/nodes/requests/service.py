"""The service seam between a node and what it hosts (no I/O).

A node serves requests for *services*: model runtimes and agents. ``nodes/`` defines this seam and
never imports ``agents/``; the composition root (the CLI's ``start`` and ``demo``) builds services
from ``agents/`` and hands them to the node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from llmnode.schemas.state import ServiceInfo

Emit = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One request for a hosted service. ``payload`` is msgpack of the method's request type."""

    request_id: bytes
    service: str
    method: str  # "generate", "chat", "embed" for models; "request" or "send" for agents
    payload: bytes
    deadline: float  # unix seconds
    caller_node: str  # base32 node id of the node where the request entered the mesh
    caller: str = ""
    stream: bool = False


class Service(Protocol):
    """Something a node hosts. ``call`` emits stream chunks (if any) and returns the final result
    (msgpack bytes), or raises a :class:`~llmnode.errors.MeshError`. Cancelling the task that runs
    ``call`` must free the service's slot at once."""

    def info(self) -> ServiceInfo:
        """Name, kind, and live load, as gossiped in the node state."""
        ...

    async def call(self, call: ServiceCall, emit: Emit) -> bytes: ...

    async def close(self) -> None: ...
