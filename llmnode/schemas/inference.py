"""Payloads of the model services: generate, chat and embed requests and their results (no I/O).

These are plain frozen ``msgspec`` Structs, not wire messages: they travel msgpack-encoded inside
:class:`llmnode.schemas.requests.Request` ``payload`` and ``Chunk``/``Result`` ``data``. New
fields get defaults and go last, so old and new nodes interoperate.
"""

from __future__ import annotations

import array
import hashlib
import sys
from typing import Literal

import msgspec

from llmnode.errors import ProtocolError


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    role: str  # "system", "user" or "assistant"
    content: str


class Constraint(msgspec.Struct, frozen=True, kw_only=True):
    """What a generated answer must match; the runtime masks every token that could not.

    ``kind`` says how to read ``source``: ``"json_schema"`` (a JSON Schema as JSON text),
    ``"regex"`` (a regular expression the whole answer matches) or ``"lark"`` (a Lark grammar in
    llguidance's dialect, which may embed JSON Schemas with ``%json{...}``)."""

    kind: Literal["json_schema", "regex", "lark"]
    source: str


class GenerateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A completion (``prompt``) or a chat (``messages``, rendered with the model's template)."""

    prompt: str = ""
    messages: list[ChatMessage] = []
    max_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    seed: int | None = None
    stop: list[str] = []
    # Token ids already delivered by a previous node (failover): fed back after the prompt as
    # decode steps and counted against max_tokens, so a resumed run continues the interrupted one.
    resume_token_ids: list[int] = []
    ignore_eos: bool = False  # keep going past end-of-sequence tokens (benchmarks)
    constraint: Constraint | None = None  # decode only what matches (structured output)
    # OpenAI-style tool definitions as JSON text, given to a chat template that renders tools
    # (``tools``); for one that does not, the runtime describes them in a system turn.
    tools: str = ""


class TokenChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One streamed piece: the text delta and the token ids it covers.

    Token ids whose text is not complete yet (part of a multi-byte character) are held back and
    sent with the chunk that completes them. The last chunk of a stream has ``finish_reason``.
    """

    text: str
    token_ids: list[int]
    finish_reason: str = ""  # "", or on the last chunk: "stop", "length", "eos", "cancelled"


class GenerateResult(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    finish_reason: str  # "stop", "length", "eos" or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = []
    # The serving node's signed receipt (llmnode.schemas.receipts.SignedReceipt as msgpack);
    # empty from a node that signs none.
    receipt: bytes = b""


PREFIX_KEY_MIN_CHARS = 200  # a shorter system prompt is cheap to prefill: not worth preferring


def prefix_key(request: GenerateRequest) -> bytes | None:
    """A short name of the request's system prompt (None when it has none worth naming):
    nodes advertise the names of the prompts their prefix cache holds, and the scheduler
    prefers those nodes for requests of the same name."""
    if not request.messages or request.messages[0].role != "system":
        return None
    content = request.messages[0].content
    if len(content) < PREFIX_KEY_MIN_CHARS:
        return None
    return hashlib.blake2b(content.encode(), digest_size=8).digest()


_GENERATE_REQUEST = msgspec.msgpack.Decoder(GenerateRequest)


def payload_prefix_key(method: str, payload: bytes) -> bytes | None:
    """:func:`prefix_key` of a ``chat`` request's payload (None for anything else)."""
    if method != "chat":
        return None
    try:
        return prefix_key(_GENERATE_REQUEST.decode(payload))
    except msgspec.MsgspecError:
        return None  # the serving node answers the malformed payload


class EmbedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Texts to embed, or instead ``token_ids``: token-id arrays of the model's own tokenizer
    (what OpenAI clients may send), one vector per array."""

    texts: list[str]
    token_ids: list[list[int]] = []


class EmbedResult(msgspec.Struct, frozen=True, kw_only=True):
    """Embedding vectors, one per text. Nodes send them compactly in ``data``: little-endian
    float32, row-major, ``4 * dim`` bytes per vector. ``vectors`` holds them as lists instead
    (what older nodes send; empty when ``data`` is set). :meth:`rows` reads either."""

    vectors: list[list[float]] = []
    dim: int
    model: str
    data: bytes = b""
    receipt: bytes = b""  # the serving node's signed receipt, as in GenerateResult

    def rows(self) -> list[list[float]]:
        """The vectors as lists of floats; raises :class:`ProtocolError` if ``data`` is torn."""
        if not self.data:
            return self.vectors
        if self.dim <= 0 or len(self.data) % (4 * self.dim):
            raise ProtocolError(f"embedding data of {len(self.data)} bytes for dim {self.dim}")
        values = array.array("f")
        values.frombytes(self.data)
        if sys.byteorder == "big":
            values.byteswap()
        flat = values.tolist()
        return [flat[start : start + self.dim] for start in range(0, len(flat), self.dim)]
