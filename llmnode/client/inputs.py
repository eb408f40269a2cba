"""What the SDK sends to models and how it reads their answers (no I/O).

A model is the service ``model:NAME``; a chat input is a string (one user turn) or a list of
turns; generation options become a :class:`~llmnode.schemas.inference.GenerateRequest`; answers
decode into the typed results, a malformed one being a ProtocolError.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llmnode.errors import ConfigError, ProtocolError
from llmnode.schemas.inference import ChatMessage, GenerateRequest

ChatInput = str | list[ChatMessage] | list[dict[str, str]]


def model_service(model: str) -> str:
    """The service name of a model: ``model:NAME`` (a name that already has it is kept)."""
    return model if model.startswith("model:") else f"model:{model}"


def chat_messages(messages: ChatInput, system: str | None = None) -> list[ChatMessage]:
    """Normalise a chat input: a string is one user turn; dicts become ChatMessage."""
    if isinstance(messages, str):
        turns = [ChatMessage(role="user", content=messages)]
    else:
        turns = [
            m if isinstance(m, ChatMessage) else msgspec.convert(m, ChatMessage) for m in messages
        ]
    if system:
        turns = [ChatMessage(role="system", content=system), *turns]
    return turns


def generate_request(options: dict[str, Any], **fields: Any) -> GenerateRequest:
    try:
        return GenerateRequest(**fields, **options)
    except TypeError as error:
        raise ConfigError(f"bad generation option: {error}") from error


def decode_answer(decoder: msgspec.msgpack.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.MsgspecError as error:
        raise ProtocolError(f"malformed {what} from the node: {error}") from error
