"""Agents of the mesh as a model's tools, on the SDK's side (no I/O).

The local node runs the chat loop (:mod:`llmnode.schemas.tool_loop` has its rules,
:mod:`llmnode.nodes.control.tool_chat` runs it): the SDK sends one ``CtlChatTools`` and reads
the steps back. What stays here is what needs the caller's Python types: an :class:`AgentTool`'s
message type made into the JSON Schema of its parameters, a ``response_type`` into the schema
the answer decodes under, and the final answer converted back to that type.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from llmnode.client.structured import read_typed, type_schema
from llmnode.schemas.inference import GenerateResult
from llmnode.schemas.tool_loop import (
    Answered,
    ToolCalled,
    ToolReplied,
    ToolSpec,
    ToolStep,
    function_name,
    tool_spec,
)
from llmnode.schemas.tools import Tool

__all__ = [
    "AgentTool",
    "Answered",
    "ToolCalled",
    "ToolReplied",
    "ToolStep",
    "agent_tools",
    "answer_schema",
    "typed_answer",
]


class AgentTool(msgspec.Struct, frozen=True, kw_only=True):
    """An agent offered to the model: ``message`` is the type its handler takes (the model's
    arguments are sent as it); without one, the arguments go as a plain dict."""

    agent: str
    message: Any = None
    description: str = ""

    @property
    def function_name(self) -> str:
        """The agent's name as a function name (``name@node`` has no ``@``)."""
        return function_name(self.agent)

    def spec(self) -> ToolSpec:
        """The tool as the node gets it: the message type's schema, and its envelope tag."""
        if self.message is None:
            return tool_spec(self.agent, None, description=self.description)
        tag = getattr(self.message, "__name__", "") if _is_struct(self.message) else ""
        return tool_spec(
            self.agent, _inline(type_schema(self.message)), tag, description=self.description
        )

    def definition(self) -> Tool:
        return Tool(function=self.spec().function)


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A Struct's schema with its top ``$ref`` replaced by the object it names."""
    reference = schema.get("$ref")
    if not isinstance(reference, str) or not reference.startswith("#/$defs/"):
        return schema
    definitions = dict(schema.get("$defs", {}))
    top = definitions.pop(reference.removeprefix("#/$defs/"))
    return {**top, "$defs": definitions} if definitions else dict(top)


def agent_tools(tools: Sequence[str | AgentTool]) -> list[ToolSpec]:
    """The tools as the node gets them (a string is an agent taking plain dicts); whether they
    make a valid set is :class:`~llmnode.schemas.tool_loop.ToolRounds`' to say."""
    return [
        (tool if isinstance(tool, AgentTool) else AgentTool(agent=tool)).spec() for tool in tools
    ]


def answer_schema(response_type: Any) -> str:
    """The JSON Schema (text) the answer decodes under; empty for free text."""
    return "" if response_type is None else json.dumps(type_schema(response_type))


def typed_answer(step: Answered, response_type: Any) -> Answered:
    """The node's answer with ``value`` the validated ``response_type`` (when given)."""
    if response_type is None:
        return step
    result = GenerateResult(
        text=step.text,
        finish_reason=step.finish_reason,
        prompt_tokens=0,
        completion_tokens=step.completion_tokens,
    )
    return msgspec.structs.replace(step, value=read_typed(result, response_type))
