"""Tool calls as models write them: the prompt that offers tools, the grammar a call is generated
under, and how calls are read back out of an answer (pure, no I/O).

The format is the widespread Hermes/Qwen one: a call is ``<tool_call>{"name": ..., "arguments":
{...}}</tool_call>`` in the answer. The call's JSON is decoded under a grammar built from the
tools' parameter schemas (:func:`call_constraint`), so it always parses. A chat template that
renders ``tools`` itself gets them (:func:`prompt_turns`); for one that does not, they are
described in the system turn.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec

from llmnode.schemas.inference import ChatMessage, Constraint, GenerateRequest

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
COMPACT = {"whitespace_flexible": False}  # llguidance: JSON without free whitespace


class Function(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str = ""
    parameters: dict[str, Any] = {}


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    """One tool as OpenAI defines it: ``{"type": "function", "function": {...}}``."""

    type: str = "function"
    function: Function


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call read from an answer: the tool's name and its arguments as JSON text."""

    name: str
    arguments: str


_TOOLS = msgspec.json.Decoder(list[Tool])


def encode_tools(tools: list[Tool]) -> str:
    """The tools as the JSON text a GenerateRequest carries."""
    return msgspec.json.encode(tools).decode()


def decode_tools(text: str) -> list[Tool]:
    return _TOOLS.decode(text) if text else []


def tools_prompt(tools: list[Tool]) -> str:
    """The system text that offers ``tools`` to a model whose template cannot."""
    listed = "\n".join(msgspec.json.encode(tool).decode() for tool in tools)
    return (
        "You may call one of these functions to help answer the user.\n<tools>\n"
        f"{listed}\n</tools>\nTo call one, reply with "
        f'{CALL_OPEN}{{"name": <function name>, "arguments": <arguments object>}}{CALL_CLOSE}'
    )


def prompt_turns(
    request: GenerateRequest, template: str | None
) -> tuple[list[dict[str, str]], list[Any] | None]:
    """The chat turns and the ``tools`` argument of the model's template for ``request``."""
    turns = [{"role": m.role, "content": m.content} for m in request.messages]
    tools = decode_tools(request.tools)
    if not tools:
        return turns, None
    if template is not None and "tools" in template:
        return turns, msgspec.to_builtins(tools)
    offer = tools_prompt(tools)
    if turns and turns[0]["role"] == "system":
        turns[0] = {"role": "system", "content": f"{turns[0]['content']}\n\n{offer}"}
    else:
        turns.insert(0, {"role": "system", "content": offer})
    return turns, None


def close_objects(node: Any) -> None:
    """Make every object schema under ``node`` closed (``additionalProperties: false``) unless
    it says otherwise, in place: a small model would otherwise add keys until it runs out of
    tokens (OpenAI's strict mode asks the same of tool parameters)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            close_objects(value)
    elif isinstance(node, list):
        for value in node:
            close_objects(value)


def _call_schema(tool: Tool, definitions: dict[str, Any]) -> dict[str, Any]:
    """The schema of one call, its objects closed; the parameters' ``$defs`` move into
    ``definitions`` (their ``#/$defs/...`` references resolve against the grammar's root)."""
    parameters = copy.deepcopy(tool.function.parameters) or {"type": "object", "properties": {}}
    close_objects(parameters)
    definitions.update(parameters.pop("$defs", {}))
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def call_constraint(
    tools: list[Tool], *, required: bool, answer_schema: str | None = None
) -> Constraint:
    """The grammar of an answer that is one call to one of ``tools`` (``required``), or either
    such a call or an answer: JSON under ``answer_schema`` when given, else plain text that does
    not start with ``<`` (the model decides)."""
    definitions: dict[str, Any] = {}
    schemas = [_call_schema(tool, definitions) for tool in tools]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if definitions:
        schema = {**schema, "$defs": definitions}
    schema = {**schema, "x-guidance": COMPACT}
    call = f"call: {json.dumps(CALL_OPEN)} %json{json.dumps(schema)} {json.dumps(CALL_CLOSE)}"
    if required:
        return Constraint(kind="lark", source=f"start: call\n{call}\n")
    answer = r"answer: /[^<][\s\S]*/"
    if answer_schema is not None:
        answer = f"answer: %json{json.dumps({'x-guidance': COMPACT, **json.loads(answer_schema)})}"
    return Constraint(kind="lark", source=f"start: call | answer\n{call}\n{answer}\n")


def read_calls(text: str) -> tuple[str, list[ToolCall]]:
    """The text outside tool calls, and the calls in ``text`` (a malformed one stays text)."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    rest = text
    while (start := rest.find(CALL_OPEN)) >= 0:
        end = rest.find(CALL_CLOSE, start)
        if end < 0:
            break
        body = rest[start + len(CALL_OPEN) : end]
        try:
            data = json.loads(body)
            call = ToolCall(name=str(data["name"]), arguments=json.dumps(data["arguments"]))
        except (ValueError, KeyError, TypeError):
            kept.append(rest[: end + len(CALL_CLOSE)])
        else:
            kept.append(rest[:start])
            calls.append(call)
        rest = rest[end + len(CALL_CLOSE) :]
    kept.append(rest)
    return "".join(kept).strip(), calls


def call_turn(calls: list[ToolCall]) -> ChatMessage:
    """The assistant turn that made ``calls``, as the model wrote it (for the history)."""
    written = [
        f'{CALL_OPEN}{{"name": {json.dumps(call.name)}, "arguments": {call.arguments}}}{CALL_CLOSE}'
        for call in calls
    ]
    return ChatMessage(role="assistant", content="\n".join(written))
