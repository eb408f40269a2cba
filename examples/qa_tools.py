"""Example app, tool-calling variant: the writer lets the model decide when to ask the librarian,
and a fact checker answers with a typed verdict (I/O).

- ``ToolWriter`` ("tool-writer") answers ``ToolAsk(question, tool_choice)`` by chatting with
  ``smollm2-135m-instruct`` with the ``librarian`` agent offered as a tool. The model's call is
  generated under the tool's JSON Schema (so it always parses), sent to the librarian through
  the mesh, and the librarian's real reply goes back to the model, which then answers.
  ``tool_choice="auto"`` leaves the call to the model; ``"librarian"`` forces it.
- ``FactChecker`` ("fact-checker") answers ``Claim(text)`` with a ``Verdict``: the model's
  answer is decoded under the Verdict's schema, so even a 135M model's reply always parses.

Run it beside the librarian of :mod:`examples.qa_pipeline`::

    llmnode start --model all-minilm-l6-v2 --model smollm2-135m-instruct \\
        --agent examples.qa_pipeline:Librarian --agent examples.qa_tools:ToolWriter \\
        --agent examples.qa_tools:FactChecker &
    python -m examples.qa_tools --question "Which river flows through Vienna?"
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Annotated, Literal

import msgspec

from examples.qa_pipeline import CHAT_MODEL, Search
from llmnode.agents.agent import Agent, Context, handler
from llmnode.client.agent_tools import AgentTool, Answered, ToolCalled, ToolReplied
from llmnode.client.mesh import connect
from llmnode.errors import MeshError

LIBRARIAN = AgentTool(
    agent="librarian",
    message=Search,
    description="Search the library for passages about a place, river or mountain.",
)


class ToolAsk(msgspec.Struct):
    question: str
    tool_choice: str = "auto"  # "auto", "required", "none" or "librarian"


class ToolAnswer(msgspec.Struct):
    text: str
    steps: list[str]  # what happened, in order: "call librarian {...}", "reply librarian ..."
    tool_replies: list[dict[str, object]]  # the librarian's replies, as the model saw them


class Claim(msgspec.Struct):
    text: str


class Verdict(msgspec.Struct, forbid_unknown_fields=True):
    claim: Annotated[str, msgspec.Meta(max_length=80)]
    verdict: Literal["true", "false", "unsure"]
    confidence: Annotated[int, msgspec.Meta(ge=0, le=100)]


class ToolWriter(Agent):
    name = "tool-writer"

    @handler
    async def ask(self, message: ToolAsk, ctx: Context) -> ToolAnswer:
        steps: list[str] = []
        replies: list[dict[str, object]] = []
        text = ""
        async for step in ctx.chat_steps(
            CHAT_MODEL,
            message.question,
            system="Answer in one short sentence. Use the library when you need facts.",
            tools=[LIBRARIAN],
            tool_choice=message.tool_choice,
            max_tokens=128,
            timeout=120,
        ):
            if isinstance(step, ToolCalled):
                steps.append(f"call {step.agent} {msgspec.json.encode(step.arguments).decode()}")
            elif isinstance(step, ToolReplied):
                steps.append(f"reply {step.agent}")
                replies.append(step.reply)
            elif isinstance(step, Answered):
                steps.append("answer")
                text = step.text
        return ToolAnswer(text=text.strip(), steps=steps, tool_replies=replies)


class FactChecker(Agent):
    name = "fact-checker"

    @handler
    async def check(self, message: Claim, ctx: Context) -> Verdict:
        verdict: Verdict = await ctx.chat(
            CHAT_MODEL,
            f"Is this claim true? {message.text}",
            response_type=Verdict,
            max_tokens=96,
            timeout=90,
        )
        return verdict


async def main(question: str, tool_choice: str, data_dir: str | None) -> ToolAnswer:
    async with connect(data_dir, name="qa-tools") as mesh:
        answer = await mesh.request(
            "tool-writer",
            ToolAsk(question=question, tool_choice=tool_choice),
            reply_type=ToolAnswer,
            timeout=180,
        )
        for step in answer.steps:
            print(f"  {step}")
        print(f"tool-writer: {answer.text}")
        verdict = await mesh.request(
            "fact-checker", Claim(text=answer.text or question), reply_type=Verdict, timeout=120
        )
        print(f"fact-checker: {verdict}")
        return answer


def cli() -> None:
    parser = argparse.ArgumentParser(description="Ask the tool-calling writer a question.")
    parser.add_argument("--question", default="Which river flows through Vienna?")
    parser.add_argument("--tool-choice", default="auto")
    parser.add_argument("--data-dir", help="the local node's data directory")
    arguments = parser.parse_args()
    try:
        asyncio.run(main(arguments.question, arguments.tool_choice, arguments.data_dir))
    except MeshError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    cli()
