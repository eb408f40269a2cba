"""Constrained decoding on the real SmolLM2: answers match their JSON Schema, regex or grammar,
and an unconstrained sequence in the same batch decodes exactly as it does alone."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Annotated, Literal

import jsonschema
import msgspec
import pytest

from llmnode.agents.models import GenerationRuntime, ModelStore
from llmnode.errors import ModelError
from llmnode.schemas.inference import ChatMessage, Constraint, GenerateRequest
from llmnode.schemas.tools import Function, Tool, call_constraint, read_calls

pytestmark = [pytest.mark.slow, pytest.mark.models]

CHAT = "smollm2-135m-instruct"
Short = Annotated[str, msgspec.Meta(max_length=24)]


class Address(msgspec.Struct, forbid_unknown_fields=True):
    city: Short
    country: Short


class Person(msgspec.Struct, forbid_unknown_fields=True):
    name: Short
    role: Literal["author", "editor", "reviewer"]
    address: Address
    languages: Annotated[list[Short], msgspec.Meta(max_length=3)]
    age: Annotated[int, msgspec.Meta(ge=0, le=120)]


PERSON_SCHEMA = msgspec.json.schema(Person)
SUBJECTS = ["a novelist", "a journal editor", "a code reviewer", "a poet", "a translator"]


@pytest.fixture(scope="module")
def runtime(default_store: ModelStore) -> Iterator[GenerationRuntime]:
    served = GenerationRuntime(default_store, CHAT, max_batch_size=8)
    yield served
    served.close()


def person_request(index: int) -> GenerateRequest:
    subject = SUBJECTS[index % len(SUBJECTS)]
    return GenerateRequest(
        messages=[ChatMessage(role="user", content=f"Invent {subject} number {index} as JSON.")],
        max_tokens=200,
        temperature=0.8 if index % 2 else 0.0,  # sampled and greedy answers alike
        seed=index,
        constraint=Constraint(kind="json_schema", source=json.dumps(PERSON_SCHEMA)),
    )


async def test_fifty_answers_under_a_nested_schema_all_validate(
    runtime: GenerationRuntime,
) -> None:
    results = await asyncio.gather(*(runtime.generate(person_request(i)) for i in range(50)))
    for result in results:
        assert result.finish_reason in ("stop", "eos"), result
        jsonschema.validate(json.loads(result.text), PERSON_SCHEMA)
        msgspec.json.decode(result.text, type=Person)  # and it is the typed answer
    assert len({result.text for result in results}) > 10  # real answers, not one canned string


async def test_a_regex_constraint_is_matched_whole(runtime: GenerationRuntime) -> None:
    pattern = r"[A-Z][a-z]+ (19|20)[0-9]{2}"
    request = GenerateRequest(
        prompt="The city and the year it was founded: ",
        max_tokens=20,
        constraint=Constraint(kind="regex", source=pattern),
    )
    result = await runtime.generate(request)
    assert re.fullmatch(pattern, result.text), result.text


async def test_a_lark_grammar_constraint_is_followed(runtime: GenerationRuntime) -> None:
    grammar = 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no"\n'
    request = GenerateRequest(
        messages=[ChatMessage(role="user", content="Is Paris in France?")],
        max_tokens=20,
        constraint=Constraint(kind="lark", source=grammar),
    )
    result = await runtime.generate(request)
    assert result.text in ("The answer is yes.", "The answer is no.")


async def test_a_forced_tool_call_always_parses(runtime: GenerationRuntime) -> None:
    tool = Tool(
        function=Function(
            name="lookup",
            parameters={
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": 40}},
                "required": ["query"],
            },
        )
    )
    request = GenerateRequest(
        messages=[ChatMessage(role="user", content="Which river flows through Vienna?")],
        max_tokens=100,
        constraint=call_constraint([tool], required=True),  # its objects closed
    )
    result = await runtime.generate(request)
    text, calls = read_calls(result.text)
    assert text == ""
    assert [call.name for call in calls] == ["lookup"]
    assert isinstance(json.loads(calls[0].arguments)["query"], str)


async def test_an_invalid_schema_fails_only_its_request(runtime: GenerationRuntime) -> None:
    broken = GenerateRequest(
        prompt="x", max_tokens=5, constraint=Constraint(kind="json_schema", source="[1, 2")
    )
    with pytest.raises(ModelError, match="json_schema"):
        await runtime.generate(broken)
    plain = await runtime.generate(GenerateRequest(prompt="Hello", max_tokens=5))
    assert plain.completion_tokens == 5


async def test_an_unconstrained_stream_decodes_the_same_beside_a_constrained_one(
    runtime: GenerationRuntime,
) -> None:
    plain = GenerateRequest(
        messages=[ChatMessage(role="user", content="Tell me about rivers in Europe.")],
        max_tokens=60,
        ignore_eos=True,
    )
    alone = await runtime.generate(plain)
    together, constrained = await asyncio.gather(
        runtime.generate(plain), runtime.generate(person_request(1))
    )
    assert together.token_ids == alone.token_ids
    assert together.text == alone.text
    jsonschema.validate(json.loads(constrained.text), PERSON_SCHEMA)
