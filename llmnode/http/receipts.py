"""Receipts on the HTTP face: how responses carry them (no I/O).

A plain response carries the serving node's signed receipt in the header ``X-Llmnode-Receipt``:
base64url, without padding, of the signed receipt's msgpack (:mod:`llmnode.schemas.receipts`).
A stream carries it in its final chunk as ``"llmnode_receipt": {...}``: the receipt's fields for
people plus ``signed``, the same base64url text (clients ignore fields they do not know).
Reading them back is :mod:`llmnode.http.receipt_check`.
"""

from __future__ import annotations

from typing import Any

from llmnode.errors import ProtocolError
from llmnode.schemas.receipts import decode_signed, to_json, to_text

RECEIPT_HEADER = "X-Llmnode-Receipt"
RECEIPT_FIELD = "llmnode_receipt"  # in a stream's final chunk


def header_value(signed: bytes) -> str:
    return to_text(signed)


def stream_field(signed: bytes) -> dict[str, Any] | None:
    """The final chunk's ``llmnode_receipt`` object; None for no receipt (or a torn one: the
    client's verify would say so, but a stream should not fail over it)."""
    if not signed:
        return None
    try:
        _, receipt = decode_signed(signed)
    except ProtocolError:
        return None
    return to_json(receipt, signed)
