"""Agent messages on the wire: the envelope lives in :mod:`llmnode.schemas.envelope` (a node that
runs a model's tool calls encodes it too); the SDK and the agents import it from here."""

from __future__ import annotations

from llmnode.schemas.envelope import convert_body, decode_envelope, encode_envelope, message_tag

__all__ = ["convert_body", "decode_envelope", "encode_envelope", "message_tag"]
