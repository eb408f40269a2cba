"""Typed answers and mesh agents as tools, with real nodes serving SmolLM2 and MiniLM: a typed
chat and a typed agent reply always parse, and a model forced to call the librarian (on another
node) gets its real reply and answers with it."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import pytest

from examples.qa_pipeline import Passages, Search
from examples.qa_tools import Claim, ToolAnswer, ToolAsk, Verdict
from llmnode.agents.models import ModelStore, ensure_models
from llmnode.client.agent_tools import AgentTool, Answered, ToolCalled, ToolReplied
from tests.integration.agents.conftest import Cluster, NodeProcess, model_store_root

pytestmark = [pytest.mark.slow, pytest.mark.models]

CHAT = "smollm2-135m-instruct"
MODELS = [CHAT, "all-minilm-l6-v2"]


class Capital(msgspec.Struct, forbid_unknown_fields=True):
    country: Annotated[str, msgspec.Meta(max_length=30)]
    capital: Annotated[str, msgspec.Meta(max_length=30)]
    continent: Literal["Europe", "Asia", "Africa", "America", "Oceania"]


@pytest.fixture(scope="module")
def tool_mesh(module_cluster: Cluster) -> dict[str, NodeProcess]:
    """Node "models" serves both models and the librarian; node "front" hosts the tool-writer
    and the fact-checker, so every tool call crosses the bus."""
    ensure_models(ModelStore(model_store_root()), MODELS)
    nodes = {
        "models": module_cluster.start(
            "models", models=MODELS, agents=["examples.qa_pipeline:Librarian"]
        ),
        "front": module_cluster.start(
            "front", agents=["examples.qa_tools:ToolWriter", "examples.qa_tools:FactChecker"]
        ),
    }
    for service in (f"model:{CHAT}", "librarian", "tool-writer", "fact-checker"):
        module_cluster.wait_for(nodes["front"], service, 1, timeout=120)
    return nodes


def test_chat_with_a_response_type_returns_the_validated_struct(
    tool_mesh: dict[str, NodeProcess],
) -> None:
    with tool_mesh["front"].connect() as mesh:
        for country in ("France", "Japan", "Kenya"):
            answer = mesh.chat(
                CHAT, f"What is the capital of {country}?", response_type=Capital, max_tokens=64
            )
            assert isinstance(answer, Capital)
        typed = mesh.generate(CHAT, "Capital of Italy as JSON: ", response_type=Capital)
        assert isinstance(typed, Capital)


def test_an_agent_answers_with_a_typed_model_reply(tool_mesh: dict[str, NodeProcess]) -> None:
    with tool_mesh["front"].connect() as mesh:
        verdict = mesh.request(
            "fact-checker", Claim(text="The Danube flows through Vienna."), reply_type=Verdict,
            timeout=120,
        )  # fmt: skip
    assert verdict.verdict in ("true", "false", "unsure")
    assert 0 <= verdict.confidence <= 100


def test_a_forced_tool_call_reaches_the_librarian_on_another_node_and_feeds_its_reply(
    tool_mesh: dict[str, NodeProcess],
) -> None:
    with tool_mesh["front"].connect() as mesh:
        steps = list(
            mesh.chat_steps(
                CHAT,
                "Which river flows through Vienna?",
                tools=[AgentTool(agent="librarian", message=Search)],
                tool_choice="librarian",
                max_tokens=48,
                temperature=0,
            )
        )
    called, replied, answered = steps
    assert isinstance(called, ToolCalled) and called.agent == "librarian"
    assert isinstance(called.arguments["query"], str)
    assert isinstance(replied, ToolReplied)
    passages = msgspec.convert(replied.reply, Passages)
    assert passages.served_by == tool_mesh["models"].node_id  # the real librarian answered
    assert isinstance(answered, Answered) and answered.rounds == 2
    assert answered.text.strip()


def test_the_tool_writer_agent_lets_the_model_ask_the_librarian(
    tool_mesh: dict[str, NodeProcess],
) -> None:
    with tool_mesh["front"].connect() as mesh:
        answer = mesh.request(
            "tool-writer",
            ToolAsk(question="Which river flows through Vienna?", tool_choice="librarian"),
            reply_type=ToolAnswer,
            timeout=180,
        )
    assert answer.steps[0].startswith("call librarian ")
    assert answer.steps[1:] == ["reply librarian", "answer"]
    # The librarian's real reply (not the passages' content: the 135M model's query is the same
    # degenerate "Lies, lies, ..." in fp32 and int8; fp32 happened to ask for k=10 passages, so
    # the whole library, Vienna's included, came back, and int8 for k=1).
    reply = msgspec.convert(answer.tool_replies[0], Passages)
    assert reply.passages and reply.served_by == tool_mesh["models"].node_id
    assert answer.text
