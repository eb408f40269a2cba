"""Structured output and tool calls through the real `openai` client, against real nodes serving
SmolLM2: ``response_format`` answers validate against their schema, forced tool calls parse,
and every streamed tool-call delta carries its ``index``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.integration.http.conftest import CHAT_MODEL, HttpNode

pytestmark = [pytest.mark.slow, pytest.mark.models]

CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "maxLength": 30},
        "kind": {"enum": ["capital", "town", "village"]},
        "rivers": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 20},
                    "length_km": {"type": "integer", "minimum": 0, "maximum": 10000},
                },
                "required": ["name", "length_km"],
                "additionalProperties": False,
            },
            "maxItems": 3,
        },
    },
    "required": ["city", "country", "kind", "rivers"],
    "additionalProperties": False,
}
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Vienna?"}]


def client(node: HttpNode) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=180)


async def test_fifty_json_schema_answers_through_the_openai_client_all_validate(
    api_mesh: dict[str, HttpNode],
) -> None:
    cities = ["Vienna", "Paris", "Lisbon", "Rome", "Oslo"]

    async def ask(front: openai.AsyncOpenAI, index: int) -> str:
        reply = await front.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": f"Describe {cities[index % 5]} as JSON."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
            },
            temperature=0.8 if index % 2 else 0.0,
            seed=index,
            max_tokens=300,
            extra_headers={"X-Llmnode-Timeout": "1200"},  # 50 queued on one 2-core node
        )
        assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
        return reply.choices[0].message.content or ""

    async with openai.AsyncOpenAI(
        base_url=api_mesh["front"].base_url, api_key="unused", max_retries=0, timeout=900
    ) as front:
        answers = await asyncio.gather(*(ask(front, index) for index in range(50)))
    for answer in answers:
        jsonschema.validate(json.loads(answer), CITY_SCHEMA)
    assert len(set(answers)) > 5


def test_json_object_response_format_is_a_json_object(api_mesh: dict[str, HttpNode]) -> None:
    reply = client(api_mesh["front"]).chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object about France."}],
        response_format={"type": "json_object"},
        # Room to close the object: greedy int8 text depends on the serving node's prefix cache,
        # and one CI run's answer was still inside a string at 300 tokens (finish "length").
        max_tokens=800,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", (choice.finish_reason, choice.message.content)
    assert isinstance(json.loads(choice.message.content or ""), dict)


def test_langchain_style_structured_output_parses_into_the_pydantic_shape(
    api_mesh: dict[str, HttpNode],
) -> None:
    """What LangChain's with_structured_output(method="json_schema") sends: a strict schema
    named after the model class, then it parses the content."""
    schema = {
        "title": "Person",
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = client(api_mesh["models"]).chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {"role": "system", "content": "Extract the person."},
            {"role": "user", "content": "Ada Lovelace was 36."},
        ],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Person", "schema": schema, "strict": True},
        },
        temperature=0,
        max_tokens=60,
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), schema)


def test_a_forced_tool_call_parses_and_is_answered_as_tool_calls(
    api_mesh: dict[str, HttpNode],
) -> None:
    reply = client(api_mesh["front"]).chat.completions.create(
        model=CHAT_MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=80,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    arguments = json.loads(calls[0].function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert calls[0].id.startswith("call_")


def test_streamed_tool_call_deltas_carry_their_index(api_mesh: dict[str, HttpNode]) -> None:
    stream = client(api_mesh["front"]).chat.completions.create(
        model=CHAT_MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=80,
        stream=True,
    )
    deltas = []
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        deltas.extend(chunk.choices[0].delta.tool_calls or [])
        finish = chunk.choices[0].finish_reason or finish
    assert deltas and all(delta.index == 0 for delta in deltas)
    assert deltas[0].function is not None and deltas[0].function.name == "get_weather"
    arguments = "".join((delta.function.arguments or "") for delta in deltas if delta.function)
    jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])
    assert finish == "tool_calls"


def test_a_tool_result_in_the_history_is_answered_as_text(api_mesh: dict[str, HttpNode]) -> None:
    history: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Vienna"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 21}'},
    ]
    reply = client(api_mesh["front"]).chat.completions.create(
        model=CHAT_MODEL, messages=history, tools=[WEATHER_TOOL], tool_choice="none",
        max_tokens=40, temperature=0,
    )  # fmt: skip
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_bad_response_format_is_a_400_naming_it(api_mesh: dict[str, HttpNode]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(api_mesh["front"]).chat.completions.create(
            model=CHAT_MODEL,
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    assert caught.value.response.json()["error"]["param"] == "tool_choice"
