"""Typed answers and mesh agents as tools, with real nodes serving SmolLM2 and MiniLM: a typed
chat and a typed agent reply always parse, and a model forced to call the librarian (on another
node) gets its real reply and answers with it; the node runs that loop for one control request,
and a caller that stops listening cancels it there."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
import pytest

import llmnode
from examples.qa_pipeline import Passages, Search
from examples.qa_tools import Claim, ToolAnswer, ToolAsk, Verdict
from llmnode.agents.models import ModelStore, ensure_models
from llmnode.client.agent_tools import AgentTool, Answered, ToolCalled, ToolReplied
from llmnode.schemas.base import WireMessage
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


def _load(status: dict[str, Any], service: str) -> dict[str, Any]:
    for info in status["services"]:
        if info["name"] == service:
            load: dict[str, Any] = info["load"]
            return load
    raise AssertionError(f"{service} not served: {status['services']}")


async def test_the_node_runs_the_whole_loop_for_one_control_request(
    tool_mesh: dict[str, NodeProcess],
) -> None:
    """The SDK sends one CtlChatTools and nothing else; the front node's router enters the two
    model turns and the agent call itself, and the steps arrive in order."""
    async with llmnode.connect(tool_mesh["front"].data_dir, name="tools-in-node") as mesh:
        entered_before = (await mesh.status())["counters"]["requests"]["entered"]
        sent: list[str] = []
        send = mesh.client.send

        async def counting_send(message: WireMessage) -> None:
            sent.append(type(message).__name__)
            await send(message)

        mesh.client.send = counting_send  # type: ignore[method-assign]
        steps = [
            step
            async for step in mesh.chat_steps(
                CHAT, "Which river flows through Vienna?",
                tools=[AgentTool(agent="librarian", message=Search)], tool_choice="librarian",
                max_tokens=48, temperature=0,
            )
        ]  # fmt: skip
        mesh.client.send = send  # type: ignore[method-assign]
        counters = (await mesh.status())["counters"]["requests"]
    assert sent == ["CtlChatTools"]  # one control request for the whole loop
    assert [type(step).__name__ for step in steps] == ["ToolCalled", "ToolReplied", "Answered"]
    assert [step.round for step in steps[:2]] == [1, 1]  # type: ignore[union-attr]
    # model turn 1, the librarian, model turn 2: entered at the node, not sent by the SDK
    assert counters["entered"] - entered_before == 3


async def test_closing_the_steps_mid_loop_cancels_the_model_turn_in_the_node(
    tool_mesh: dict[str, NodeProcess],
) -> None:
    """The caller stops after the librarian's reply, while the node runs the model's second
    turn (it would generate 400 tokens): the node cancels it and the model's slot is free."""
    async with (
        llmnode.connect(tool_mesh["front"].data_dir, name="tools-cancel") as mesh,
        llmnode.connect(tool_mesh["models"].data_dir, name="tools-watch") as models,
    ):
        cancelled_before = (await mesh.status())["counters"]["requests"]["cancelled"]
        steps = mesh.chat_steps(
            CHAT, "Which river flows through Vienna?",
            tools=[AgentTool(agent="librarian", message=Search)], tool_choice="librarian",
            max_tokens=400, ignore_eos=True, temperature=0,
        )  # fmt: skip
        seen = []
        async for step in steps:
            seen.append(type(step).__name__)
            if isinstance(step, ToolReplied):
                break
        await steps.aclose()  # type: ignore[attr-defined]
        assert seen == ["ToolCalled", "ToolReplied"]
        for _ in range(300):  # until the node has cancelled the turn and freed the slot
            counters = (await mesh.status())["counters"]["requests"]
            load = _load(await models.status(), f"model:{CHAT}")
            if counters["cancelled"] > cancelled_before and load["in_flight"] == 0:
                break
            await asyncio.sleep(0.1)
        assert counters["cancelled"] == cancelled_before + 1, counters
        assert load["in_flight"] == 0 and load["queue_depth"] == 0, load
        assert counters["in_flight"] == 0, counters
        assert await mesh.chat(CHAT, "Say yes.", max_tokens=4)  # the slot serves again
