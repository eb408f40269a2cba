"""Agent API: handler resolution from type hints, dispatch by tag, envelopes (pure)."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmnode.agents.agent import Agent, Context, handler, subscribe
from llmnode.agents.host import load_agent_class
from llmnode.client.envelope import convert_body, decode_envelope, encode_envelope, message_tag
from llmnode.client.local_node import find_control
from llmnode.errors import (
    AgentError,
    ConfigError,
    HandlerError,
    NotRunning,
    ProtocolError,
    error_from_code,
)


class Question(msgspec.Struct):
    text: str
    k: int = 1


class Answer(msgspec.Struct):
    text: str


class Headline(msgspec.Struct):
    title: str


class Librarian(Agent):
    allow: ClassVar[list[str]] = ["NODEA"]

    @handler
    async def ask(self, message: Question, ctx: Context) -> Answer:
        return Answer(text=message.text * message.k)

    @handler("ping")
    async def ping(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"pong": message.get("n", 0)}

    @handler
    async def anything(self, message: dict[str, Any], ctx: Context) -> None:
        return None

    @subscribe("news")
    async def news(self, message: Headline, ctx: Context) -> None:
        return None


class Named(Agent):
    name = "custom-name"
    topics: ClassVar[list[str]] = ["alerts"]

    @handler(Question)
    async def question(self, message: Question) -> str:
        return message.text


def test_agent_name_defaults_to_lower_case_class_name() -> None:
    assert Librarian.name == "librarian"
    assert Named.name == "custom-name"


def test_struct_handler_is_picked_by_class_name_tag() -> None:
    spec = Librarian.handler_for("Question")
    assert spec.attribute == "ask"
    assert spec.message_type is Question
    assert spec.takes_context


def test_explicit_tag_handler_is_picked_for_dicts_with_that_type() -> None:
    spec = Librarian.handler_for(message_tag({"type": "ping", "n": 3}))
    assert spec.attribute == "ping"
    assert not spec.takes_context


def test_dict_handler_without_tag_takes_any_other_message() -> None:
    assert Librarian.handler_for("SomethingElse").attribute == "anything"
    assert Librarian.handler_for("dict").attribute == "anything"


def test_subscribe_handler_takes_publications_on_its_topic() -> None:
    assert Librarian.handler_for("Headline", topic="news").attribute == "news"
    assert Librarian.all_topics() == ["news"]
    assert Named.all_topics() == ["alerts"]


def test_handler_with_explicit_type_argument_uses_it() -> None:
    assert Named.handler_for("Question").message_type is Question


def test_unknown_tag_without_fallback_raises_agent_error() -> None:
    with pytest.raises(AgentError, match="no handler for messages of type 'Nope'"):
        Named.handler_for("Nope")


def test_sync_handler_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must be `async def`"):

        class Broken(Agent):
            @handler
            def ask(self, message: Question) -> None:  # type: ignore[misc]
                return None


def test_handler_with_unannotated_scalar_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="annotate the message"):

        class Broken(Agent):
            @handler
            async def ask(self, message: int) -> None:
                return None


async def test_invoke_converts_body_to_the_hinted_struct() -> None:
    agent = Librarian()
    tag, body = decode_envelope(encode_envelope(Question(text="ab", k=2)))
    spec = Librarian.handler_for(tag)
    result = await agent.invoke(spec, body, Context(None, agent="librarian"))  # type: ignore[arg-type]
    assert result == Answer(text="abab")


def test_struct_envelope_round_trips() -> None:
    tag, body = decode_envelope(encode_envelope(Question(text="hi", k=3)))
    assert tag == "Question"
    assert convert_body(body, Question) == Question(text="hi", k=3)


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(-(2**62), 2**62), st.text(max_size=20), st.booleans(), st.none()),
        max_size=6,
    )
)
def test_dict_envelope_round_trips(message: dict[str, Any]) -> None:
    tag, body = decode_envelope(encode_envelope(message))
    assert body == message
    assert tag == message_tag(message)


def test_body_that_does_not_match_the_type_is_a_protocol_error() -> None:
    _tag, body = decode_envelope(encode_envelope({"type": "Question", "text": 5}))
    with pytest.raises(ProtocolError, match="does not match Question"):
        convert_body(body, Question)


def test_garbage_envelope_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_envelope(b"\xc1\xc1")
    with pytest.raises(ProtocolError, match="no envelope"):
        decode_envelope(msgspec.msgpack.encode([1, 2]))


def test_handler_error_from_the_wire_keeps_the_remote_class_name() -> None:
    error = error_from_code(
        "handler", "handler writer.ask raised ValueError: bad question", remote_type="ValueError"
    )
    assert isinstance(error, HandlerError)
    assert error.remote_type == "ValueError"


def test_find_control_without_a_node_says_how_to_start_one(tmp_path: Any) -> None:
    with pytest.raises(NotRunning, match=r"no llmnode node is running .*llmnode start"):
        find_control(tmp_path)


def test_find_control_reads_address_and_token_files(tmp_path: Any) -> None:
    (tmp_path / "control.address").write_text("tcp://127.0.0.1:5555\n")
    (tmp_path / "control.token").write_text("secret\n")
    assert find_control(tmp_path) == ("tcp://127.0.0.1:5555", b"secret")
    assert find_control(tmp_path, token="other")[1] == b"other"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("no_colon", "expected pkg.module:Class"),
        ("llmnode_missing_module_xyz:Thing", "cannot import"),
        ("llmnode.errors:Missing", "has no Missing"),
        ("llmnode.errors:MeshError", "not a subclass of llmnode.Agent"),
    ],
)
def test_load_agent_class_bad_spec_is_a_config_error(spec: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_agent_class(spec)


def test_load_agent_class_returns_the_class() -> None:
    assert load_agent_class("llmnode.agents.agent:Agent") is Agent
