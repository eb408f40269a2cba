"""Base class and limits for every wire message (no I/O).

Every message that crosses a process boundary is a frozen, tagged ``msgspec.Struct`` deriving
from :class:`WireMessage`; the tag is the class name. New fields get defaults and go last, so
old and new nodes interoperate. :mod:`llmnode.schemas.messages` gathers them into one union.
"""

from __future__ import annotations

import msgspec

PROTOCOL_VERSION = 1

# Size limits, checked before anything expensive.
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_TEXT_BYTES = 1024 * 1024
NODE_ID_BYTES = 32

NodeId = bytes  # an Ed25519 public key, 32 bytes
NODE_ID_DESCRIPTION = (
    "A node id: the node's 32-byte Ed25519 public key. Raw bytes in msgpack; standard base64 in "
    "JSON (as every bytes field); lower-case base32 without padding where people read it (CLI, "
    "configs, NodeState.node_id). See docs/PROTOCOL.md, section 1."
)


class WireMessage(msgspec.Struct, frozen=True, tag=True, tag_field="type", kw_only=True):
    """Base of every message on the wire."""
