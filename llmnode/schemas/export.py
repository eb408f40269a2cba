"""JSON Schema export of every wire message and the node config (writes files).

``llmnode schema --out DIR`` writes one file per message type plus ``messages.json`` (the union)
and ``config.json``, so nodes and clients in other languages can speak the protocol.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import msgspec

from llmnode.errors import ConfigError
from llmnode.schemas import inference, receipts, state
from llmnode.schemas.base import PROTOCOL_VERSION
from llmnode.schemas.config import NodeConfig
from llmnode.schemas.messages import message_types

_PAYLOADS: list[type[Any]] = [
    inference.GenerateRequest,
    inference.TokenChunk,
    inference.GenerateResult,
    inference.EmbedRequest,
    inference.EmbedResult,
    receipts.Receipt,
    receipts.SignedReceipt,
    state.NodeState,
]


def schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema document."""
    documents: dict[str, dict[str, Any]] = {}
    types = message_types()
    union: Any = Union[tuple(types)]  # noqa: UP007 - built at run time
    documents["messages.json"] = {
        "title": f"llmnode wire messages, protocol version {PROTOCOL_VERSION}",
        **msgspec.json.schema(union),
    }
    for cls in [*types, *_PAYLOADS, NodeConfig]:
        name = "config" if cls is NodeConfig else getattr(cls, "__name__", str(cls))
        documents[f"{name}.json"] = msgspec.json.schema(cls)
    return documents


def write_schemas(directory: Path) -> list[Path]:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, document in schemas().items():
            path = directory / name
            path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            written.append(path)
    except OSError as error:
        raise ConfigError(f"cannot write schemas to {directory}: {error}") from error
    return written
