"""OpenAI request bodies to llmnode payloads, and llmnode results to OpenAI responses (no I/O).

Pure functions: what the HTTP handlers in :mod:`llmnode.http.openai_api` send into the mesh and
what they answer. Unsupported parameters raise a 400 naming the parameter.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from llmnode.http.errors import HttpError
from llmnode.http.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from llmnode.http.structured import structured_fields, tool_turn
from llmnode.schemas.inference import ChatMessage, GenerateRequest, GenerateResult

DEFAULT_MAX_TOKENS = 512  # OpenAI's default is "until the context is full"; a chat UI's answer fits
MAX_STOP_SEQUENCES = 4  # as OpenAI
_FINISH = {"stop": "stop", "eos": "stop", "length": "length", "cancelled": "stop"}


def _refuse(param: str, why: str = "is not supported by llmnode yet") -> HttpError:
    return HttpError(400, f"'{param}' {why}", param=param, code="unsupported_parameter")


def _check_sampling(request: ChatCompletionRequest | CompletionRequest) -> None:
    if request.n not in (None, 1):
        raise _refuse("n", "must be 1: llmnode returns one choice per request")
    if request.logprobs:
        raise _refuse("logprobs")
    if request.frequency_penalty:
        raise _refuse("frequency_penalty")
    if request.presence_penalty:
        raise _refuse("presence_penalty")
    if request.logit_bias:
        raise _refuse("logit_bias")
    if request.temperature is not None and not 0.0 <= request.temperature <= 2.0:
        raise _refuse("temperature", "must be between 0 and 2")
    if request.top_p is not None and not 0.0 < request.top_p <= 1.0:
        raise _refuse("top_p", "must be in (0, 1]")
    if request.stream_options is not None and not request.stream:
        raise _refuse("stream_options", "is only allowed when 'stream' is true")


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_SEQUENCES:
        raise _refuse("stop", f"may hold at most {MAX_STOP_SEQUENCES} sequences")
    return [text for text in stops if text]


def _max_tokens(value: int | None, param: str) -> int:
    if value is None:
        return DEFAULT_MAX_TOKENS
    if value < 1:
        raise _refuse(param, "must be at least 1")
    return value


def _options(request: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    return {
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "seed": request.seed,
        "stop": _stops(request.stop),
    }


def _text_of(index: int, content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text":
            raise _refuse(f"messages[{index}].content", f"part of type {part.type!r} unsupported")
        texts.append(part.text)
    return "".join(texts)


def chat_payload(request: ChatCompletionRequest) -> GenerateRequest:
    """The generation a chat completion asks for (raises a 400 for what llmnode cannot do)."""
    _check_sampling(request)
    fields = structured_fields(request)  # response_format, tools, tool_choice
    if request.top_logprobs is not None:
        raise _refuse("top_logprobs")
    if not request.messages:
        raise _refuse("messages", "must hold at least one message")
    messages = []
    for index, message in enumerate(request.messages):
        content = _text_of(index, message.content)
        turn = tool_turn(index, message, content)
        if turn is not None:
            messages.append(turn)
            continue
        role = "system" if message.role == "developer" else message.role
        messages.append(ChatMessage(role=role, content=content))
    limit = request.max_completion_tokens or request.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    return GenerateRequest(
        messages=messages, max_tokens=_max_tokens(limit, param), **_options(request), **fields
    )


def completion_payload(request: CompletionRequest) -> GenerateRequest:
    """The generation a legacy completion asks for."""
    _check_sampling(request)
    for param in ("echo", "suffix"):
        if getattr(request, param):
            raise _refuse(param)
    if request.best_of not in (None, 1):
        raise _refuse("best_of", "must be 1")
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise _refuse("prompt", "must be a string or a list of one string")
        prompt = prompt[0]
    return GenerateRequest(
        prompt=prompt, max_tokens=_max_tokens(request.max_tokens, "max_tokens"), **_options(request)
    )


def embedding_inputs(request: EmbeddingRequest) -> tuple[list[str], list[list[int]]]:
    """``(texts, token_id_lists)``: exactly one of them is non-empty."""
    if request.dimensions is not None:
        raise _refuse("dimensions")
    value = request.input
    if isinstance(value, str):
        return [value], []
    if not value:
        raise _refuse("input", "must not be empty")
    if all(isinstance(item, str) for item in value):
        return list(value), []
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return [], [list(value)]
    if all(
        isinstance(item, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in item)
        for item in value
    ):
        return [], [list(item) for item in value]
    raise _refuse("input", "must be a string, a list of strings, or token-id arrays")


def finish_reason(reason: str) -> str:
    return _FINISH.get(reason, "stop")


def usage(result: GenerateResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def chat_response(ident: str, model: str, created: int, result: GenerateResult) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(result.finish_reason),
            }
        ],
        "usage": usage(result),
    }


def completion_response(
    ident: str, model: str, created: int, result: GenerateResult
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": result.text,
                "logprobs": None,
                "finish_reason": finish_reason(result.finish_reason),
            }
        ],
        "usage": usage(result),
    }


def embedding_response(
    model: str, rows: list[bytes] | list[list[float]], prompt_tokens: int, encoding: str
) -> dict[str, Any]:
    data = []
    for index, row in enumerate(rows):
        vector: Any = base64.b64encode(row).decode() if isinstance(row, bytes) else row
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_entry(name: str, created: int, nodes: tuple[str, ...], task: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "llmnode",
        "llmnode": {"task": task, "nodes": list(nodes)},
    }


def now() -> int:
    return int(time.time())
