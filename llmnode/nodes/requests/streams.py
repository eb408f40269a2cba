"""What a generation stream has delivered, and how it resumes on another node (pure, no I/O).

A stream that loses its node goes on elsewhere from the last token delivered: the same request
with the delivered token ids appended to ``resume_token_ids`` (replayed there after the prompt),
and its final result covers every chunk of every attempt, so the caller sees one unbroken stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from llmnode.schemas.inference import GenerateRequest, GenerateResult

RESUMABLE_METHODS = ("generate", "chat")


@dataclass
class Delivered:
    """What a generation stream has delivered so far, for resumption elsewhere."""

    token_ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


def resume_payload(payload: bytes, delivered: Delivered) -> bytes:
    """The same request, continuing after the tokens already delivered. ``max_tokens`` stays:
    the runtime counts resumed tokens towards it (the whole stream has that limit)."""
    request = msgspec.msgpack.decode(payload, type=GenerateRequest)
    resumed = msgspec.structs.replace(
        request, resume_token_ids=[*request.resume_token_ids, *delivered.token_ids]
    )
    return msgspec.msgpack.encode(resumed)


def merge_result(data: bytes, delivered: Delivered) -> bytes:
    """The final result of a resumed stream covers the whole stream: every chunk, all attempts."""
    result = msgspec.msgpack.decode(data, type=GenerateResult)
    merged = msgspec.structs.replace(
        result,
        text="".join(delivered.text),
        completion_tokens=len(delivered.token_ids),
        token_ids=list(delivered.token_ids),
    )
    return msgspec.msgpack.encode(merged)
