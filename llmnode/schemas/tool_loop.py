"""Mesh agents as a model's tools: the rules of the chat loop and the steps it reports (no I/O:
the model and the agents are reached through the ``complete`` and ``ask`` it is given).

The node runs the loop (:mod:`llmnode.nodes.control.tool_chat`, its model turns and agent calls
going through the node's router and scheduler); the SDK only turns Struct types into the schemas
of :class:`ToolSpec` and the final answer into its ``response_type``. Both import this module.

Each round the model answers under a grammar (:func:`llmnode.schemas.tools.call_constraint`):
either a call to one of the tools, whose JSON always parses, or (when it may) an answer. A call
is sent to its agent as a request; the reply goes back to the model as a ``tool`` turn. The loop
ends with the model's answer after at most ``max_rounds`` model turns (the last may not call);
every step is yielded as it happens.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec

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

TOOL_CHOICES = ("auto", "required", "none")
QUESTION = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "what to ask the agent"}},
    "required": ["text"],
}


def function_name(agent: str) -> str:
    """An agent's name as a function name (``name@node`` has no ``@``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", agent)


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An agent offered to the model: its function (``parameters``: the JSON Schema of the
    message it takes) and the envelope tag its message goes with (empty: a plain dict's)."""

    agent: str
    function: Function
    tag: str = ""


def tool_spec(
    agent: str, parameters: dict[str, Any] | None, tag: str = "", description: str = ""
) -> ToolSpec:
    return ToolSpec(
        agent=agent,
        tag=tag,
        function=Function(
            name=function_name(agent),
            description=description or f"Ask the {agent} agent of the mesh.",
            parameters=QUESTION if parameters is None else parameters,
        ),
    )


# ---- the steps, as the node streams them to its client ---------------------------------------


class ToolCalled(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    agent: str
    arguments: dict[str, Any]
    round: int


class ToolReplied(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    agent: str
    reply: Any
    round: int


class Answered(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The model's answer: ``value`` is the text, or (in the SDK) the validated
    ``response_type``; ``finish_reason`` and ``completion_tokens`` as in GenerateResult."""

    text: str
    value: Any = None
    rounds: int
    finish_reason: str = "stop"
    completion_tokens: int = 0


ToolStep = ToolCalled | ToolReplied | Answered


# ---- the rules --------------------------------------------------------------------------------


class ToolRounds:
    """What each round of one chat with tools may do: whether the model may call, under which
    grammar it answers, and what its answer means."""

    def __init__(
        self,
        tools: Sequence[ToolSpec],
        tool_choice: str = "auto",
        max_rounds: int = 4,
        answer_schema: str = "",
    ) -> None:
        self.tools = {spec.function.name: spec for spec in tools}
        if len(self.tools) != len(tools):
            raise ConfigError("two tools have the same name")
        if not self.tools:
            raise ConfigError("a chat with tools needs at least one tool")
        by_agent = {spec.agent: name for name, spec in self.tools.items()}
        tool_choice = by_agent.get(tool_choice, tool_choice)
        if tool_choice not in TOOL_CHOICES and tool_choice not in self.tools:
            raise ConfigError(f"tool_choice {tool_choice!r}: not 'auto', 'required' or a tool")
        self.choice = tool_choice
        self.max_rounds = max(1, max_rounds)
        self.answer_schema = answer_schema
        self.definitions = [Tool(function=spec.function) for spec in self.tools.values()]
        self.tools_text = encode_tools(self.definitions)

    def may_call(self, round_number: int) -> bool:
        """Round 1 follows ``tool_choice``; after a forced call the model answers; with "auto"
        it may call in every round but the last."""
        if round_number >= self.max_rounds or self.choice == "none":
            return False
        return round_number == 1 or self.choice == "auto"

    def constraint(self, round_number: int) -> Constraint | None:
        """The grammar of the model's turn in ``round_number``."""
        answer = self.answer_schema or None
        if not self.may_call(round_number):
            return None if answer is None else Constraint(kind="json_schema", source=answer)
        if self.choice == "auto":
            return call_constraint(self.definitions, required=False, answer_schema=answer)
        offered = self.definitions
        if self.choice != "required":
            offered = [Tool(function=self.tools[self.choice].function)]
        return call_constraint(offered, required=True)

    def calls(self, result: GenerateResult, round_number: int) -> list[ToolCall]:
        """The calls to make after the model's turn (none: it answered)."""
        _text, calls = read_calls(result.text)
        known = [call for call in calls if call.name in self.tools]
        if not known and self.choice not in ("auto", "none") and round_number == 1:
            raise ModelError(
                f"the forced tool call was cut at max_tokens ({result.completion_tokens} "
                "tokens) before it was complete: raise max_tokens"
            )
        return known if self.may_call(round_number) else []


Complete = Callable[[list[ChatMessage], Constraint | None, str], Awaitable[GenerateResult]]
Ask = Callable[[ToolSpec, dict[str, Any]], Awaitable[Any]]


async def run_rounds(
    rounds: ToolRounds, turns: list[ChatMessage], complete: Complete, ask: Ask
) -> AsyncIterator[ToolStep]:
    """The loop: ``complete(turns, constraint, tools_text)`` runs a model turn, ``ask(spec,
    arguments)`` a request to an agent (its reply as plain data)."""
    turns = list(turns)
    for round_number in range(1, rounds.max_rounds + 1):
        result = await complete(turns, rounds.constraint(round_number), rounds.tools_text)
        calls = rounds.calls(result, round_number)
        if not calls:
            yield Answered(
                text=result.text,
                value=result.text,
                rounds=round_number,
                finish_reason=result.finish_reason,
                completion_tokens=result.completion_tokens,
            )
            return
        turns.append(call_turn(calls))
        for call in calls:
            spec = rounds.tools[call.name]
            arguments = json.loads(call.arguments)
            yield ToolCalled(agent=spec.agent, arguments=arguments, round=round_number)
            reply = msgspec.to_builtins(await ask(spec, arguments))
            yield ToolReplied(agent=spec.agent, reply=reply, round=round_number)
            turns.append(ChatMessage(role="tool", content=json.dumps(reply)))
