"""The rules of a chat with mesh agents as tools, shared by the node that runs it and the SDK that
asks for it (pure): what each round may do, the grammar it answers under, and the steps and the
request as they cross the control socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from llmnode.client.agent_tools import AgentTool, Answered, agent_tools, answer_schema, typed_answer
from llmnode.errors import ModelError
from llmnode.schemas.control import CtlChatTools
from llmnode.schemas.envelope import decode_envelope, encode_envelope
from llmnode.schemas.inference import ChatMessage, Constraint, GenerateRequest, GenerateResult
from llmnode.schemas.messages import decode, encode
from llmnode.schemas.tool_loop import (
    ToolCalled,
    ToolReplied,
    ToolRounds,
    ToolSpec,
    ToolStep,
    run_rounds,
)


class Search(msgspec.Struct):
    query: str


class Verdict(msgspec.Struct):
    verdict: str


def test_round_rules_follow_tool_choice_and_the_last_round_answers() -> None:
    tools = agent_tools(["librarian", "critic"])
    auto = ToolRounds(tools, "auto", 3)
    assert [auto.may_call(n) for n in (1, 2, 3)] == [True, True, False]
    forced = ToolRounds(tools, "librarian", 3)
    assert [forced.may_call(n) for n in (1, 2, 3)] == [True, False, False]
    assert not ToolRounds(tools, "none", 3).may_call(1)
    assert not ToolRounds(tools, "auto", 1).may_call(1)  # one round: it must answer


def test_the_constraint_of_each_round() -> None:
    tools = agent_tools(["librarian", "critic"])
    forced = ToolRounds(tools, "librarian", 3, answer_schema=answer_schema(Verdict))
    first = forced.constraint(1)
    assert first is not None and first.kind == "lark"
    assert '"librarian"' in first.source and '"critic"' not in first.source  # only the forced
    assert "answer" not in first.source  # a call is required
    last = forced.constraint(2)
    assert last is not None and last.kind == "json_schema"  # the answer's own schema
    assert json.loads(last.source)["$defs"]["Verdict"]["required"] == ["verdict"]
    auto = ToolRounds(tools, "auto", 3).constraint(1)
    assert auto is not None and "call | answer" in auto.source
    assert ToolRounds(tools, "auto", 3).constraint(3) is None  # free text at the end


def test_tool_choice_may_name_the_agent_of_a_node() -> None:
    rounds = ToolRounds(agent_tools(["librarian@alpha"]), "librarian@alpha", 2)
    assert rounds.choice == "librarian_alpha"


def test_an_agent_tool_carries_its_message_schema_and_tag() -> None:
    spec = AgentTool(agent="librarian", message=Search).spec()
    assert spec.tag == "Search"
    assert spec.function.parameters["required"] == ["query"]
    plain = AgentTool(agent="librarian").spec()
    assert plain.tag == "" and plain.function.parameters["required"] == ["text"]
    # the node sends the model's arguments with the Struct's tag: the handler for Search gets it
    tag, body = decode_envelope(encode_envelope({"query": "x"}, spec.tag))
    assert (tag, body) == ("Search", {"query": "x"})
    assert decode_envelope(encode_envelope({"text": "x"}, plain.tag))[0] == "dict"


def test_the_request_and_every_step_cross_the_control_socket() -> None:
    request = CtlChatTools(
        id=7,
        model="model:smollm2-135m-instruct",
        messages=[ChatMessage(role="user", content="hi")],
        tools=agent_tools([AgentTool(agent="librarian", message=Search)]),
        tool_choice="librarian",
        answer_schema=answer_schema(Verdict),
        options=GenerateRequest(max_tokens=48, temperature=0.0),
    )
    assert decode(encode(request)) == request
    steps: list[ToolStep] = [
        ToolCalled(agent="librarian", arguments={"query": "x"}, round=1),
        ToolReplied(agent="librarian", reply={"passages": ["a"]}, round=1),
        Answered(text='{"verdict": "yes"}', value='{"verdict": "yes"}', rounds=2),
    ]
    decoder = msgspec.msgpack.Decoder(ToolStep)
    assert [decoder.decode(msgspec.msgpack.encode(step)) for step in steps] == steps
    typed = typed_answer(steps[2], Verdict)  # type: ignore[arg-type]
    assert typed.value == Verdict(verdict="yes")


def test_the_loop_yields_each_step_in_order_and_feeds_replies_back() -> None:
    turns_seen: list[list[str]] = []
    asked: list[tuple[str, dict[str, Any]]] = []

    async def complete(
        turns: list[ChatMessage], constraint: Constraint | None, tools: str
    ) -> GenerateResult:
        turns_seen.append([turn.role for turn in turns])
        assert json.loads(tools)[0]["function"]["name"] == "librarian"
        text = (
            '<tool_call>{"name": "librarian", "arguments": {"query": "Vienna"}}</tool_call>'
            if len(turns_seen) < 3
            else "The Danube."
        )
        return GenerateResult(text=text, finish_reason="stop", prompt_tokens=1, completion_tokens=2)

    async def ask(spec: ToolSpec, arguments: dict[str, Any]) -> Any:
        asked.append((spec.agent, arguments))
        return {"passages": [f"passage {len(asked)}"]}

    async def run() -> list[ToolStep]:
        rounds = ToolRounds(agent_tools([AgentTool(agent="librarian", message=Search)]), "auto", 4)
        turns = [ChatMessage(role="user", content="Which river?")]
        return [step async for step in run_rounds(rounds, turns, complete, ask)]

    steps = asyncio.run(run())
    assert [type(step).__name__ for step in steps] == [
        "ToolCalled", "ToolReplied", "ToolCalled", "ToolReplied", "Answered",
    ]  # fmt: skip
    assert [getattr(step, "round", 0) for step in steps[:4]] == [1, 1, 2, 2]
    assert turns_seen[2] == ["user", "assistant", "tool", "assistant", "tool"]
    assert asked == [("librarian", {"query": "Vienna"})] * 2
    answered = steps[-1]
    assert isinstance(answered, Answered) and answered.rounds == 3
    assert answered.value == "The Danube." and answered.completion_tokens == 2


def test_a_typed_answer_cut_short_is_a_model_error() -> None:
    cut = Answered(text='{"verd', value='{"verd', rounds=1, finish_reason="length")
    with pytest.raises(ModelError, match="max_tokens"):
        typed_answer(cut, Verdict)
    assert typed_answer(cut, None) is cut
