"""Structured output and tool calls in the OpenAI API: ``response_format``, ``tools`` and
``tool_choice`` into a constrained generation, and answers back into ``tool_calls`` (no I/O).

``response_format`` ``json_object`` / ``json_schema`` and a forced ``tool_choice`` become a
:class:`~llmnode.schemas.inference.Constraint` the serving runtime decodes under, so the JSON
always parses. Calls are written ``<tool_call>{...}</tool_call>`` by the model
(:mod:`llmnode.schemas.tools`) and answered as OpenAI ``tool_calls``. A streamed answer that
offers tools holds back text that may start a call; each call goes out as two deltas (name,
then arguments), every one carrying its ``index``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec

from llmnode.http.errors import HttpError
from llmnode.http.schemas import ChatCompletionRequest, Message
from llmnode.http.streaming import StreamFormat
from llmnode.schemas.inference import ChatMessage, Constraint
from llmnode.schemas.tools import (
    CALL_OPEN,
    Tool,
    ToolCall,
    call_constraint,
    call_turn,
    encode_tools,
    read_calls,
)


def _refuse(param: str, why: str) -> HttpError:
    return HttpError(400, f"'{param}' {why}", param=param, code="invalid_value")


def _answer_schema(response_format: Any) -> str | None:
    """The JSON Schema text ``response_format`` asks for (None: free text)."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return json.dumps({"type": "object"})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _refuse("response_format.json_schema.schema", "must be a JSON Schema object")
        return json.dumps(schema)
    raise _refuse("response_format", "must have type 'text', 'json_object' or 'json_schema'")


def _tools(request: ChatCompletionRequest) -> list[Tool]:
    if request.tools is None:
        return []
    try:
        tools = msgspec.convert(request.tools, list[Tool])
    except msgspec.ValidationError as error:
        raise _refuse("tools", f"is not a list of function tools: {error}") from None
    if any(tool.type != "function" for tool in tools):
        raise _refuse("tools", "may only hold tools of type 'function'")
    return tools


def _forced(request: ChatCompletionRequest, tools: list[Tool]) -> list[Tool] | None:
    """The tools one of which must be called (None: the model may answer instead)."""
    choice = request.tool_choice
    if choice in (None, "auto"):
        return None
    if choice == "required":
        return tools
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [tool for tool in tools if tool.function.name == name]
        if chosen:
            return chosen
        raise _refuse("tool_choice", f"names {name!r}, which is not in 'tools'")
    raise _refuse("tool_choice", "must be 'none', 'auto', 'required' or a named function")


def structured_fields(request: ChatCompletionRequest) -> dict[str, Any]:
    """The ``constraint`` and ``tools`` fields of the generation ``request`` asks for."""
    for param in ("functions", "function_call"):
        if getattr(request, param) is not None:
            raise _refuse(param, "is deprecated by OpenAI: use 'tools' and 'tool_choice'")
    schema = _answer_schema(request.response_format)
    tools = _tools(request)
    if request.tool_choice is not None and not tools and request.tool_choice != "none":
        raise _refuse("tool_choice", "needs 'tools'")
    if not tools or request.tool_choice == "none":
        constraint = None if schema is None else Constraint(kind="json_schema", source=schema)
        return {"constraint": constraint}
    forced = _forced(request, tools)
    if forced is not None:
        return {"constraint": call_constraint(forced, required=True), "tools": encode_tools(tools)}
    return {
        "constraint": call_constraint(tools, required=False, answer_schema=schema),
        "tools": encode_tools(tools),
    }


def tool_turn(index: int, message: Message, content: str) -> ChatMessage | None:
    """A history turn that made or answered tool calls, as the model sees it (else None)."""
    if message.role == "tool":
        return ChatMessage(role="tool", content=content)
    if message.tool_calls is None:
        return None
    try:
        calls = [
            ToolCall(name=call["function"]["name"], arguments=call["function"]["arguments"])
            for call in message.tool_calls
        ]
    except (KeyError, TypeError):
        raise _refuse(f"messages[{index}].tool_calls", "must be function calls") from None
    written = call_turn(calls).content
    return ChatMessage(role="assistant", content=f"{content}\n{written}" if content else written)


def _call_entries(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "index": index,
            "id": "call_" + os.urandom(12).hex(),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for index, call in enumerate(calls)
    ]


def with_tool_calls(response: dict[str, Any]) -> dict[str, Any]:
    """A chat completion whose text holds tool calls, answered as OpenAI ``tool_calls``."""
    choice = response["choices"][0]
    text, calls = read_calls(choice["message"]["content"])
    if calls:
        entries = [
            {key: value for key, value in entry.items() if key != "index"}
            for entry in _call_entries(calls)
        ]
        choice["message"].update(content=text or None, tool_calls=entries)
        choice["finish_reason"] = "tool_calls"
    return response


class ToolStreamFormat(StreamFormat):
    """A chat stream whose model may call tools: text that may start a call is held back."""

    def __init__(self, *arguments: Any) -> None:
        super().__init__(*arguments)
        self._held = ""
        self._plain = False  # decided: the answer is text, streamed as it comes

    def text(self, text: str, finish: str | None = None, final: bool = False) -> bytes:
        self._held += text
        start = self._held.lstrip()
        if not self._plain and start and not CALL_OPEN.startswith(start[: len(CALL_OPEN)]):
            self._plain = True
        out = b""
        if self._plain and self._held:
            out, self._held = super().text(self._held), ""
        if finish is None and not final:
            return out
        content, calls = read_calls(self._held)
        if content:
            out += super().text(content)
        for entry in _call_entries(calls):
            arguments = entry["function"]["arguments"]
            entry["function"]["arguments"] = ""
            out += self._delta({"tool_calls": [entry]})
            out += self._delta(
                {"tool_calls": [{"index": entry["index"], "function": {"arguments": arguments}}]}
            )
        finished = "tool_calls" if calls else finish
        return out + super().text("", finished, final=final)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self.chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})
