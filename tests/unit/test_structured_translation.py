"""Structured output and tool calls, translated without a model: OpenAI request fields into
constraints, calls read back out of answers, and streamed tool-call deltas (pure)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from llmnode.client.agent_tools import AgentTool, agent_tools
from llmnode.client.structured import constraint_options, read_typed, type_schema
from llmnode.errors import ConfigError, ModelError
from llmnode.http.errors import HttpError
from llmnode.http.schemas import ChatCompletionRequest
from llmnode.http.structured import ToolStreamFormat, structured_fields, with_tool_calls
from llmnode.http.translate import chat_payload
from llmnode.schemas.inference import ChatMessage, Constraint, GenerateRequest, GenerateResult
from llmnode.schemas.tool_loop import ToolRounds, ToolSpec, run_rounds
from llmnode.schemas.tools import Function, Tool, prompt_turns, read_calls

TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.json.decode(json.dumps(body), type=ChatCompletionRequest)


def events(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in data.split(b"\n\n") if line.startswith(b"data: {")]


def test_json_schema_response_format_becomes_a_json_schema_constraint() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fields = structured_fields(
        request(response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    )
    assert fields["constraint"].kind == "json_schema"
    assert json.loads(fields["constraint"].source) == schema


def test_a_named_tool_choice_forces_a_call_to_that_tool_only() -> None:
    other = {**TOOL, "function": {**TOOL["function"], "name": "get_time"}}
    fields = structured_fields(
        request(
            tools=[TOOL, other], tool_choice={"type": "function", "function": {"name": "get_time"}}
        )
    )
    assert fields["constraint"].kind == "lark"
    assert "get_time" in fields["constraint"].source
    assert "get_weather" not in fields["constraint"].source
    assert "start: call\n" in fields["constraint"].source


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools"),
    ],
)
def test_bad_structured_fields_are_a_400_naming_the_param(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(HttpError) as caught:
        chat_payload(request(**fields))
    assert caught.value.body()["error"]["param"] == param


def test_tool_turns_in_the_history_become_what_the_model_wrote() -> None:
    payload = chat_payload(
        request(
            messages=[
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "tool_calls": [
                    {"id": "c", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
                ]},
                {"role": "tool", "tool_call_id": "c", "content": "sunny"},
            ]
        )
    )  # fmt: skip
    assert [m.role for m in payload.messages] == ["user", "assistant", "tool"]
    text, calls = read_calls(payload.messages[1].content)
    assert text == "" and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Rome"}


def test_calls_are_read_out_of_text_and_a_malformed_one_stays_text() -> None:
    text, calls = read_calls(
        'Let me check. <tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>'
        "<tool_call>{not json}</tool_call>"
    )
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [("f", {"x": 1})]
    assert text == "Let me check. <tool_call>{not json}</tool_call>"


def test_a_template_without_tools_gets_them_in_the_system_turn() -> None:
    tools = msgspec.json.encode([TOOL]).decode()
    with_system = GenerateRequest(
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="hi"),
        ],
        tools=tools,
    )
    turns, passed = prompt_turns(with_system, "{{ messages }}")
    assert passed is None and turns[0]["content"].startswith("Be brief.")
    assert "get_weather" in turns[0]["content"] and len(turns) == 2
    turns, passed = prompt_turns(with_system, "{% for tool in tools %}{% endfor %}")
    assert passed is not None and passed[0]["function"]["name"] == "get_weather"
    assert turns[0]["content"] == "Be brief."


def test_a_non_streamed_answer_with_a_call_is_answered_as_tool_calls() -> None:
    response = {"choices": [{"message": {"role": "assistant", "content":
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'},
        "finish_reason": "stop"}]}  # fmt: skip
    choice = with_tool_calls(response)["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert call["type"] == "function" and call["id"].startswith("call_")


def test_streamed_tool_call_deltas_all_carry_an_index_and_text_is_not_held_forever() -> None:
    shape = ToolStreamFormat(True, "id", "m", 0, False)
    pieces = [
        "<tool",
        '_call>{"name": "get_weather", ',
        '"arguments": {"city": "Oslo"}}',
        "</tool_call>",
    ]
    out = b"".join(shape.text(piece) for piece in pieces)
    assert out == b""  # a call is held back until it is whole
    final = events(shape.text("", "stop"))
    deltas = [
        tool for event in final for tool in event["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert deltas and all(delta["index"] == 0 for delta in deltas)
    assert deltas[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"city": "Oslo"}
    assert final[-1]["choices"][0]["finish_reason"] == "tool_calls"
    plain = ToolStreamFormat(True, "id", "m", 0, False)
    assert events(plain.text("Hello"))[0]["choices"][0]["delta"]["content"] == "Hello"


class Point(msgspec.Struct):
    x: int
    inner: dict[str, int] = {}


def test_a_type_schema_closes_its_objects_and_answers_decode_or_fail_in_one_line() -> None:
    schema = type_schema(Point)
    assert schema["$defs"]["Point"]["additionalProperties"] is False
    ok = GenerateResult(text='{"x": 3}', finish_reason="stop", prompt_tokens=1, completion_tokens=4)
    assert read_typed(ok, Point) == Point(x=3)
    cut = GenerateResult(
        text='{"x": ', finish_reason="length", prompt_tokens=1, completion_tokens=3
    )
    with pytest.raises(ModelError, match="max_tokens"):
        read_typed(cut, Point)


def test_constraint_shorthands_make_one_constraint() -> None:
    assert constraint_options({"regex": "[0-9]+"})["constraint"].kind == "regex"
    assert constraint_options({"grammar": 'start: "a"'})["constraint"].kind == "lark"
    with pytest.raises(ConfigError):
        constraint_options({"regex": "a", "grammar": "b"})


def test_a_forced_tool_loop_calls_once_then_answers_with_the_reply_in_the_history() -> None:
    import asyncio

    seen: list[list[str]] = []

    async def complete(turns: list[Any], constraint: Constraint | None, _: str) -> GenerateResult:
        seen.append([turn.role for turn in turns])
        if constraint is not None:
            text = '<tool_call>{"name": "librarian", "arguments": {"text": "Vienna"}}</tool_call>'
        else:
            text = "The Danube."
        return GenerateResult(text=text, finish_reason="stop", prompt_tokens=1, completion_tokens=1)

    async def ask(spec: ToolSpec, arguments: dict[str, Any]) -> Any:
        return {"agent": spec.agent, "asked": arguments}

    async def run() -> list[Any]:
        rounds = ToolRounds(agent_tools(["librarian"]), "librarian", 4)
        return [step async for step in run_rounds(rounds, [], complete, ask)]

    called, replied, answered = asyncio.run(run())
    assert called.arguments == {"text": "Vienna"}
    assert replied.reply == {"agent": "librarian", "asked": {"text": "Vienna"}}
    assert answered.text == "The Danube." and answered.rounds == 2
    assert seen[1] == ["assistant", "tool"]


def test_two_tools_with_one_name_are_refused() -> None:
    with pytest.raises(ConfigError):
        ToolRounds(agent_tools(["a@x", AgentTool(agent="a_x")]), "auto", 2)
    with pytest.raises(ConfigError):
        ToolRounds(agent_tools(["a"]), "b", 2)  # neither a choice nor a tool
    assert Tool(function=Function(name="f")).type == "function"


class Query(msgspec.Struct):
    text: str


class Queries(msgspec.Struct):
    queries: list[Query]


def test_tools_whose_messages_hold_other_structs_compile_to_a_valid_grammar() -> None:
    import llguidance

    from llmnode.agents.models.constraints import grammar_of
    from llmnode.schemas.tools import call_constraint

    tools = [AgentTool(agent="a", message=Queries), AgentTool(agent="b", message=Query)]
    definitions = [tool.definition() for tool in tools]
    assert "$ref" not in definitions[1].function.parameters  # the top object is inlined
    for required in (True, False):
        grammar = grammar_of(call_constraint(definitions, required=required))
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
        assert not failed, messages


def test_a_forced_call_cut_by_max_tokens_is_a_model_error_not_an_answer() -> None:
    import asyncio

    async def complete(turns: list[Any], constraint: Constraint | None, _: str) -> GenerateResult:
        return GenerateResult(
            text='<tool_call>{"name": "librarian", "argu', finish_reason="length",
            prompt_tokens=1, completion_tokens=16,
        )  # fmt: skip

    async def run() -> None:
        rounds = ToolRounds(agent_tools(["librarian"]), "required", 4)
        async for _ in run_rounds(rounds, [], complete, None):  # type: ignore[arg-type]
            pass

    with pytest.raises(ModelError, match="max_tokens"):
        asyncio.run(run())


def test_tool_parameters_are_closed_in_the_call_grammar_but_not_changed() -> None:
    from llmnode.schemas.tools import call_constraint

    tool = Tool(function=Function(name="f", parameters=TOOL["function"]["parameters"]))
    source = call_constraint([tool], required=True).source
    assert '"additionalProperties": false' in source
    assert "additionalProperties" not in json.dumps(TOOL)
