"""llmnode: a peer-to-peer mesh for serving language models and running agents.

The public API (pinned by ``tests/unit/test_public_api.py``)::

    async with llmnode.connect() as mesh:          # the local node's control socket
        print(await mesh.chat("model:smollm2-135m-instruct", "Hello!"))

    class Echo(llmnode.Agent):
        @llmnode.handler
        async def echo(self, message: Ping, ctx: llmnode.Context) -> Pong: ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmnode._version import __version__

__all__ = [
    "AccessDenied",
    "Agent",
    "AgentLost",
    "ChatMessage",
    "Context",
    "DeadlineExceeded",
    "EmbedRequest",
    "EmbedResult",
    "GenerateRequest",
    "GenerateResult",
    "HandlerError",
    "Mesh",
    "MeshError",
    "NoCapacity",
    "NotRunning",
    "SyncMesh",
    "TokenChunk",
    "UnknownAgent",
    "__version__",
    "connect",
    "connect_sync",
    "handler",
    "subscribe",
]

_LAZY = {
    "Agent": "llmnode.agents.agent",
    "Context": "llmnode.agents.agent",
    "handler": "llmnode.agents.agent",
    "subscribe": "llmnode.agents.agent",
    "Mesh": "llmnode.client.mesh",
    "SyncMesh": "llmnode.client.sync",
    "connect": "llmnode.client.mesh",
    "connect_sync": "llmnode.client.sync",
    "ChatMessage": "llmnode.schemas.inference",
    "EmbedRequest": "llmnode.schemas.inference",
    "EmbedResult": "llmnode.schemas.inference",
    "GenerateRequest": "llmnode.schemas.inference",
    "GenerateResult": "llmnode.schemas.inference",
    "TokenChunk": "llmnode.schemas.inference",
    "AccessDenied": "llmnode.errors",
    "AgentLost": "llmnode.errors",
    "DeadlineExceeded": "llmnode.errors",
    "HandlerError": "llmnode.errors",
    "MeshError": "llmnode.errors",
    "NoCapacity": "llmnode.errors",
    "NotRunning": "llmnode.errors",
    "UnknownAgent": "llmnode.errors",
}

if TYPE_CHECKING:
    from llmnode.agents.agent import Agent, Context, handler, subscribe
    from llmnode.client.mesh import Mesh, connect
    from llmnode.client.sync import SyncMesh, connect_sync
    from llmnode.errors import (
        AccessDenied,
        AgentLost,
        DeadlineExceeded,
        HandlerError,
        MeshError,
        NoCapacity,
        NotRunning,
        UnknownAgent,
    )
    from llmnode.schemas.inference import (
        ChatMessage,
        EmbedRequest,
        EmbedResult,
        GenerateRequest,
        GenerateResult,
        TokenChunk,
    )


def __getattr__(name: str) -> Any:
    """Import the public API on first use, so ``import llmnode`` (and the CLI) stays fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmnode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
