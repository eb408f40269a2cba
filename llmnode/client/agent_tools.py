"""Agents of the mesh as a model's tools: the chat loop that lets a model call them (I/O: the
model and the agents are reached through the local node, whose router and scheduler pick
where each call runs).

Each round the model answers under a grammar (:func:`llmnode.schemas.tools.call_constraint`):
either a call to one of the tools, whose JSON always parses, or (when it may) plain text. A call
is converted to the agent's message type and sent as a request; the reply goes back to the model
as a ``tool`` turn. The loop ends with the model's answer, after at most ``max_rounds`` model
turns (the last one may not call). Every step is yielded to the caller as it happens.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec

from llmnode.client.structured import read_typed, type_constraint, type_schema
from llmnode.errors import ConfigError, ModelError
from llmnode.schemas.inference import ChatMessage, Constraint, GenerateResult
from llmnode.schemas.tools import (
    Function,
    Tool,
    ToolCall,
    call_constraint,
    call_turn,
    encode_tools,
    read_calls,
)

_QUESTION = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "what to ask the agent"}},
    "required": ["text"],
}


class AgentTool(msgspec.Struct, frozen=True, kw_only=True):
    """An agent offered to the model: ``message`` is the type its handler takes (the model's
    arguments are converted to it); without one, the arguments go as a plain dict."""

    agent: str
    message: Any = None
    description: str = ""

    @property
    def function_name(self) -> str:
        """The agent's name as a function name (``name@node`` has no ``@``)."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.agent)

    def definition(self) -> Tool:
        parameters = _QUESTION if self.message is None else _inline(type_schema(self.message))
        description = self.description or f"Ask the {self.agent} agent of the mesh."
        return Tool(
            function=Function(
                name=self.function_name, description=description, parameters=parameters
            )
        )


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A Struct's schema with its top ``$ref`` replaced by the object it names."""
    reference = schema.get("$ref")
    if not isinstance(reference, str) or not reference.startswith("#/$defs/"):
        return schema
    definitions = dict(schema.get("$defs", {}))
    top = definitions.pop(reference.removeprefix("#/$defs/"))
    return {**top, "$defs": definitions} if definitions else dict(top)


class ToolCalled(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    arguments: dict[str, Any]
    round: int


class ToolReplied(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    reply: Any
    round: int


class Answered(msgspec.Struct, frozen=True, kw_only=True):
    """The model's answer: ``value`` is the text, or the validated ``response_type``."""

    text: str
    value: Any
    rounds: int


ToolStep = ToolCalled | ToolReplied | Answered
Complete = Callable[[list[ChatMessage], dict[str, Any]], Awaitable[GenerateResult]]
Ask = Callable[[str, Any], Awaitable[Any]]


def agent_tools(tools: Sequence[str | AgentTool]) -> dict[str, AgentTool]:
    """The tools by function name (a string is an agent taking plain dicts)."""
    chosen = [tool if isinstance(tool, AgentTool) else AgentTool(agent=tool) for tool in tools]
    named = {tool.function_name: tool for tool in chosen}
    if len(named) != len(chosen):
        raise ConfigError("two tools have the same name")
    return named


class ToolLoop:
    """One chat with tools; ``complete`` runs a model turn, ``ask`` a request to an agent."""

    def __init__(
        self,
        complete: Complete,
        ask: Ask,
        tools: Sequence[str | AgentTool],
        tool_choice: str,
        max_rounds: int,
    ) -> None:
        self._complete = complete
        self._ask = ask
        self._tools = agent_tools(tools)
        if tool_choice not in ("auto", "required", "none") and tool_choice not in self._tools:
            raise ConfigError(f"tool_choice {tool_choice!r}: not 'auto', 'required' or a tool")
        self._choice = tool_choice
        self._max_rounds = max(1, max_rounds)

    def _may_call(self, round_number: int) -> bool:
        """Round 1 follows ``tool_choice``; after a forced call the model answers; with "auto"
        it may call in every round but the last."""
        if round_number >= self._max_rounds or self._choice == "none":
            return False
        return round_number == 1 or self._choice == "auto"

    def _constraint(self, round_number: int, response_type: Any) -> Constraint | None:
        answer = None if response_type is None else type_constraint(response_type)
        if not self._may_call(round_number):
            return answer
        offered = list(self._definitions().values())
        if self._choice == "auto":
            schema = None if answer is None else answer.source
            return call_constraint(offered, required=False, answer_schema=schema)
        if self._choice != "required":
            offered = [self._tools[self._choice].definition()]
        return call_constraint(offered, required=True)

    def _definitions(self) -> dict[str, Tool]:
        return {name: tool.definition() for name, tool in self._tools.items()}

    async def run(
        self, turns: list[ChatMessage], response_type: Any, options: dict[str, Any]
    ) -> AsyncIterator[ToolStep]:
        tools_text = encode_tools(list(self._definitions().values()))
        turns = list(turns)
        for round_number in range(1, self._max_rounds + 1):
            constraint = self._constraint(round_number, response_type)
            result = await self._complete(
                turns, {**options, "constraint": constraint, "tools": tools_text}
            )
            _text, calls = read_calls(result.text)
            known = [call for call in calls if call.name in self._tools]
            if not known and self._choice not in ("auto", "none") and round_number == 1:
                raise ModelError(
                    f"the forced tool call was cut at max_tokens ({result.completion_tokens} "
                    "tokens) before it was complete: raise max_tokens"
                )
            if not known or not self._may_call(round_number):
                value = result.text if response_type is None else read_typed(result, response_type)
                yield Answered(text=result.text, value=value, rounds=round_number)
                return
            turns.append(call_turn(known))
            for call in known:
                async for step in self._call(call, round_number, turns):
                    yield step

    async def _call(
        self, call: ToolCall, round_number: int, turns: list[ChatMessage]
    ) -> AsyncIterator[ToolStep]:
        tool = self._tools[call.name]
        arguments = json.loads(call.arguments)
        yield ToolCalled(agent=tool.agent, arguments=arguments, round=round_number)
        message = arguments if tool.message is None else msgspec.convert(arguments, tool.message)
        reply = await self._ask(tool.agent, message)
        builtins = msgspec.to_builtins(reply)
        yield ToolReplied(agent=tool.agent, reply=builtins, round=round_number)
        turns.append(ChatMessage(role="tool", content=json.dumps(builtins)))
