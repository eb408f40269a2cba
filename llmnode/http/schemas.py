"""Request bodies of the OpenAI endpoints as msgspec Structs, decoded with exact errors (no I/O).

Fields OpenAI defines but llmnode cannot honour yet are declared, so asking for them gets a 400
that names the parameter instead of a silent ignore; fields OpenAI does not define are refused
as unknown. Responses are built as plain dicts in :mod:`llmnode.http.openai_api`.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

import msgspec

from llmnode.http.errors import HttpError


class ContentPart(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: str
    text: str = ""
    image_url: Any = None
    input_audio: Any = None


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: Any = None
    tool_call_id: str | None = None
    refusal: str | None = None


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    include_usage: bool = False


class _Sampling(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    logprobs: Any = None
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


class ChatCompletionRequest(_Sampling, frozen=True, kw_only=True, forbid_unknown_fields=True):
    messages: list[Message]
    max_completion_tokens: int | None = None
    top_logprobs: int | None = None
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: Any = None
    function_call: Any = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: str | None = None


class CompletionRequest(_Sampling, frozen=True, kw_only=True, forbid_unknown_fields=True):
    prompt: str | list[Any]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None


class EmbeddingRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


T = TypeVar("T")
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def decode_body(data: bytes, kind: type[T]) -> T:
    """The body as ``kind``; a 400 naming the offending parameter when it is not one."""
    try:
        return msgspec.json.decode(data, type=kind, strict=True)
    except msgspec.ValidationError as error:
        text = str(error)
        param = _param_of(text)
        raise HttpError(400, text, param=param, code="invalid_value") from None
    except msgspec.DecodeError as error:
        raise HttpError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None


def _param_of(text: str) -> str | None:
    path = _PATH.search(text)
    prefix = path.group(1) if path else ""
    for pattern in (_UNKNOWN, _MISSING):
        found = pattern.search(text)
        if found:
            return f"{prefix}.{found.group(1)}" if prefix else found.group(1)
    return prefix or None
