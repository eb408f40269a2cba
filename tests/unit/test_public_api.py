"""The public API of ``llmnode`` is exactly this list, and every name resolves."""

from __future__ import annotations

import llmnode

PUBLIC = {
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
}


def test_public_api_is_pinned() -> None:
    assert set(llmnode.__all__) == PUBLIC


def test_every_public_name_resolves() -> None:
    for name in llmnode.__all__:
        assert getattr(llmnode, name) is not None


def test_errors_share_one_root() -> None:
    for name in (
        "AccessDenied",
        "AgentLost",
        "DeadlineExceeded",
        "HandlerError",
        "NoCapacity",
        "NotRunning",
        "UnknownAgent",
    ):
        assert issubclass(getattr(llmnode, name), llmnode.MeshError)
