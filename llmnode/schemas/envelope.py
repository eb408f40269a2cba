"""Agent messages on the wire: the ``{"type": tag, "body": message}`` envelope (no I/O).

The SDK, the agent host, the HTTP face and a node running a model's tool calls all encode and
decode agent messages here, so a message sent by any of them reads the same in every other.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llmnode.errors import ProtocolError

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


def message_tag(message: Any) -> str:
    """The tag that picks the receiving handler: a Struct's class name, a dict's ``"type"``."""
    if isinstance(message, msgspec.Struct):
        return type(message).__name__
    if isinstance(message, dict):
        tag = message.get("type")
        return tag if isinstance(tag, str) and tag else "dict"
    if message is None:
        return "none"
    return type(message).__name__


def encode_envelope(message: Any, tag: str = "") -> bytes:
    """msgpack of ``{"type": tag, "body": message}`` (``tag``: the message's own by default;
    a node that holds a Struct as plain data gives the Struct's)."""
    try:
        return _ENCODER.encode({"type": tag or message_tag(message), "body": message})
    except (TypeError, msgspec.EncodeError) as error:
        raise ProtocolError(
            f"cannot encode a {type(message).__name__} as an agent message: {error}"
        ) from error


def decode_envelope(data: bytes) -> tuple[str, Any]:
    """``(tag, body)`` of an envelope; the body is plain msgpack data (dicts, lists, ...)."""
    if not data:
        return "none", None
    try:
        envelope = _DECODER.decode(data)
    except msgspec.DecodeError as error:
        raise ProtocolError(f"malformed agent message: {error}") from error
    if not isinstance(envelope, dict) or "type" not in envelope:
        raise ProtocolError("malformed agent message: no envelope")
    return str(envelope["type"]), envelope.get("body")


def convert_body(body: Any, target: Any) -> Any:
    """Convert a decoded body to ``target`` (a Struct, ``dict``, ...); ``None``/Any: unchanged."""
    if target is None or target is Any or target is object:
        return body
    try:
        return msgspec.convert(body, target)
    except msgspec.ValidationError as error:
        name = getattr(target, "__name__", str(target))
        raise ProtocolError(f"message does not match {name}: {error}") from error
