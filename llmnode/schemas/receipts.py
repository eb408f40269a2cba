"""Receipts: what a serving node signs about each model request it answered (no I/O).

A :class:`Receipt` names the node that ran the model (``node``: its id, which *is* its Ed25519
public key, so the receipt carries the key that verifies it), the model and the sha256 of its
manifest, the sha256 of the request and of the output, token counts and timings. The node signs
the receipt's canonical bytes (msgspec msgpack of the struct: a map of every field, in field
order, defaults included) and sends a :class:`SignedReceipt` back in ``GenerateResult.receipt`` /
``EmbedResult.receipt``. Signing and verifying are in :mod:`llmnode.nodes.requests.receipts`.

What is hashed, precisely (:func:`request_sha256`, :func:`text_sha256`, :func:`vectors_sha256`):

- request: the msgpack of the :class:`GenerateRequest` (with ``resume_token_ids`` emptied: a
  resumed stream hashes as the request the client sent) or of the :class:`EmbedRequest`;
- output of ``generate``/``chat``: the UTF-8 bytes of the whole text delivered. For a stream
  resumed on this node after another died, that includes the text of the resumed tokens (the
  receipt covers the whole stream; ``resumed_tokens`` says how many tokens were produced
  before this node took over);
- output of ``embed``: the vectors as little-endian float32, row-major.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Any

import msgspec

from llmnode.errors import ProtocolError
from llmnode.schemas.base import NODE_ID_BYTES, NODE_ID_DESCRIPTION
from llmnode.schemas.inference import EmbedRequest, GenerateRequest

RECEIPT_VERSION = 1
RECEIPT_DOMAIN = b"llmnode-receipt-v1\x00"  # signed bytes: domain, node, version (u64), receipt
MAX_RECEIPT_BYTES = 4096

Sha256 = Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{64})?$")]


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """One served request, as the node that served it signs it. New fields go last."""

    version: int = RECEIPT_VERSION
    node: Annotated[
        bytes, msgspec.Meta(min_length=NODE_ID_BYTES, max_length=NODE_ID_BYTES,
                            description=NODE_ID_DESCRIPTION)
    ]  # fmt: skip
    node_name: str = ""  # the name the node gives itself (not authenticated beyond this receipt)
    model: str
    manifest_sha256: Sha256 = ""  # of the model's manifest.json, as deployments name a copy
    method: str  # "generate", "chat" or "embed"
    request_sha256: Sha256
    output_sha256: Sha256
    prompt_tokens: int = 0  # embed: the input token ids, when the caller sent ids
    completion_tokens: int = 0  # the whole output's, resumed tokens included
    resumed_tokens: int = 0  # of those, how many another node produced before this one resumed
    queued_ms: float = 0.0  # waiting for a slot in the runtime
    ttft_ms: float = 0.0  # from taking the request to its first output
    total_ms: float = 0.0  # from taking the request to its last output
    issued_at: float = 0.0  # unix seconds when signed


class SignedReceipt(msgspec.Struct, frozen=True, array_like=True):
    """``receipt``: the canonical msgpack of a :class:`Receipt`; ``signature``: its node's."""

    receipt: bytes
    signature: bytes


_encode = msgspec.msgpack.Encoder().encode
_receipt = msgspec.msgpack.Decoder(Receipt)
_signed = msgspec.msgpack.Decoder(SignedReceipt)


def receipt_bytes(receipt: Receipt) -> bytes:
    """The canonical bytes a node signs."""
    return _encode(receipt)


def signed_bytes(signed: SignedReceipt) -> bytes:
    return _encode(signed)


def decode_signed(data: bytes) -> tuple[SignedReceipt, Receipt]:
    """Both layers of a signed receipt's bytes, or :class:`ProtocolError` (no signature check)."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise ProtocolError(f"a receipt of {len(data)} bytes is too long")
    try:
        signed = _signed.decode(data)
        return signed, _receipt.decode(signed.receipt)
    except (msgspec.MsgspecError, UnicodeDecodeError) as error:  # msgspec lets a bad key's
        raise ProtocolError(f"not an llmnode receipt ({error})") from None  # UTF-8 error out


def to_text(data: bytes) -> str:
    """A signed receipt as the ``X-Llmnode-Receipt`` header carries it: base64url, no padding."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def from_text(text: str) -> bytes:
    cleaned = text.strip()
    if len(cleaned) > 2 * MAX_RECEIPT_BYTES:
        raise ProtocolError(f"a receipt of {len(cleaned)} characters is too long")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise ProtocolError("not an llmnode receipt (not base64url)") from None


def to_json(receipt: Receipt, data: bytes) -> dict[str, Any]:
    """The receipt's fields for people and JSON (the node as its printed id), plus ``signed``:
    the verifiable receipt itself (:func:`to_text`). Only ``signed`` is authenticated."""
    fields: dict[str, Any] = msgspec.to_builtins(receipt)
    fields["node"] = base64.b32encode(receipt.node).decode("ascii").rstrip("=").lower()
    fields["signed"] = to_text(data)
    return fields


def request_sha256(request: GenerateRequest | EmbedRequest) -> str:
    if isinstance(request, GenerateRequest) and request.resume_token_ids:
        request = msgspec.structs.replace(request, resume_token_ids=[])
    return hashlib.sha256(_encode(request)).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vectors_sha256(float32_le: bytes) -> str:
    return hashlib.sha256(float32_le).hexdigest()
