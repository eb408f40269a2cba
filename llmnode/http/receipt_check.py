"""Reading receipts back from what a client saved, and hashing the user's copies (no I/O).

``llmnode receipt verify`` reads what a client saved (:func:`read_saved`: the header value, a
header dump such as ``curl -D``, the receipt object, the final chunk, or a whole SSE transcript)
and checks the user's copies of the request and output against the receipt's hashes
(:func:`request_digest`, :func:`output_digest`), which are defined in
:mod:`llmnode.schemas.receipts`.
"""

from __future__ import annotations

import array
import base64
import binascii
import hashlib
import json
import sys
from typing import Any

from llmnode.errors import CryptoError, ProtocolError
from llmnode.http import translate
from llmnode.http.receipts import RECEIPT_FIELD, RECEIPT_HEADER
from llmnode.http.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    decode_body,
)
from llmnode.schemas.inference import EmbedRequest
from llmnode.schemas.receipts import Receipt, from_text, request_sha256, to_json


def read_saved(text: str) -> tuple[bytes, dict[str, Any] | None]:
    """The signed receipt in what a client saved, and the readable fields that came with it
    (None when it came bare); :class:`ProtocolError` when there is none."""
    stripped = text.strip()
    if not stripped:
        raise ProtocolError("no receipt: the input is empty")
    lines = stripped.splitlines()
    for line in lines:  # a header dump: curl -D FILE, curl -i
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == RECEIPT_HEADER.lower():
            return from_text(value), None
    found: Any
    if stripped.startswith("data:"):  # a stream: the last event that carries a receipt
        found = None
        for line in reversed(lines):
            event = line.removeprefix("data:").strip()
            if line.startswith("data:") and event.startswith("{"):
                parsed = _json(event)
                if isinstance(parsed, dict) and RECEIPT_FIELD in parsed:
                    found = parsed
                    break
        if found is None:
            raise ProtocolError(f"no event of the stream carries {RECEIPT_FIELD!r}")
    elif stripped.startswith("{"):
        found = _json(stripped)
    else:
        return from_text(stripped), None
    if isinstance(found, dict) and RECEIPT_FIELD in found:
        found = found[RECEIPT_FIELD]
    if not isinstance(found, dict) or not isinstance(found.get("signed"), str):
        raise ProtocolError("no receipt: the JSON has no 'signed' receipt")
    return from_text(found["signed"]), found


def check_fields(receipt: Receipt, signed: bytes, fields: dict[str, Any] | None) -> None:
    """:class:`CryptoError` when a readable field differs from what the node signed."""
    if fields is None:
        return
    expected = to_json(receipt, signed)
    for key, value in fields.items():
        if key != "signed" and key in expected and expected[key] != value:
            raise CryptoError(f"invalid receipt: its field {key!r} differs from what was signed")


def request_digest(method: str, body: bytes) -> str:
    """The sha256 of the request an OpenAI JSON ``body`` makes (as a receipt hashes it)."""
    if method == "chat":
        return request_sha256(translate.chat_payload(decode_body(body, ChatCompletionRequest)))
    if method == "generate":
        return request_sha256(translate.completion_payload(decode_body(body, CompletionRequest)))
    if method == "embed":
        texts, token_ids = translate.embedding_inputs(decode_body(body, EmbeddingRequest))
        return request_sha256(EmbedRequest(texts=texts, token_ids=token_ids))
    raise ProtocolError(f"cannot hash a request of method {method!r}")


def output_digest(method: str, data: bytes) -> str:
    """The sha256 of an output as a receipt hashes it. ``data`` is the response's JSON body
    (chat, completion or embeddings) or else the bare output: the text, or float32 bytes."""
    answer = _response_json(data)
    if method == "embed":
        if answer is None:
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha256(_embedding_bytes(answer)).hexdigest()
    if answer is not None:
        try:
            choice = answer["choices"][0]
            text = choice["text"] if "text" in choice else choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ProtocolError("the response JSON has no choices[0] text") from None
        data = (text or "").encode("utf-8")
    return hashlib.sha256(data).hexdigest()


_RESPONSE_OBJECTS = ("chat.completion", "text_completion", "list")


def _response_json(data: bytes) -> dict[str, Any] | None:
    """The OpenAI response in ``data``, or None when ``data`` is not one (so: a bare output)."""
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(parsed, dict) and parsed.get("object") in _RESPONSE_OBJECTS:
        return parsed
    return None


def _embedding_bytes(answer: dict[str, Any]) -> bytes:
    """Every vector of an embeddings response as little-endian float32, in index order."""
    rows: list[bytes] = []
    try:
        for row in sorted(answer["data"], key=lambda row: row["index"]):
            vector = row["embedding"]
            if isinstance(vector, str):
                rows.append(base64.b64decode(vector, validate=True))
            else:
                rows.append(_float32(vector))
    except (KeyError, TypeError, OverflowError, binascii.Error, ValueError):
        raise ProtocolError("the response JSON has no embeddings in data[].embedding") from None
    return b"".join(rows)


def _float32(vector: list[float]) -> bytes:
    values = array.array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ProtocolError("not an llmnode receipt (malformed JSON)") from None
