"""Example multi-agent app: a Librarian that searches passages and a Writer that answers (I/O).

- ``Librarian`` ("librarian") embeds a small built-in document set with ``all-minilm-l6-v2`` when it
  starts and answers ``Search(query, k)`` with the closest passages;
- ``Writer`` ("writer") answers ``Ask(question)``: it asks the librarian for passages, then chats
  with ``smollm2-135m-instruct`` with those passages as context, and returns
  ``Answer(text, sources, served_by)``.

Run the agents on any nodes of a mesh that serves both models, then ask::

    llmnode start --model all-minilm-l6-v2 --model smollm2-135m-instruct \\
        --agent examples.qa_pipeline:Librarian --agent examples.qa_pipeline:Writer &
    python -m examples.qa_pipeline --question "Which river flows through Vienna?"

``--serve`` hosts both agents in the asking process instead (a node with the models suffices).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Annotated, Any, ClassVar

import msgspec

from llmnode.agents.agent import Agent, Context, handler
from llmnode.client.mesh import Mesh, connect
from llmnode.errors import MeshError, NoCapacity, UnknownAgent

EMBED_MODEL = "all-minilm-l6-v2"
CHAT_MODEL = "smollm2-135m-instruct"

DOCUMENTS = [
    "Paris is the capital of France. The Seine flows through the city.",
    "Berlin is the capital of Germany. The Spree river runs through its centre.",
    "Rome is the capital of Italy. The Tiber river flows through Rome.",
    "Madrid is the capital of Spain and sits on the Manzanares river.",
    "Vienna is the capital of Austria. The Danube flows through Vienna.",
    "Lisbon is the capital of Portugal, where the Tagus river meets the Atlantic.",
    "London is the capital of the United Kingdom. The Thames runs through London.",
    "Mont Blanc, on the border of France and Italy, is the highest mountain in the Alps.",
    "The Matterhorn is a famous pyramid-shaped peak on the Swiss-Italian border.",
    "Mount Elbrus in the Caucasus is the highest mountain in Europe, at 5,642 metres.",
    "The Danube is Europe's second-longest river; it flows through ten countries.",
    "The Rhine rises in the Swiss Alps and flows to the North Sea in the Netherlands.",
]

DEFAULT_QUESTIONS = [
    "Which river flows through Vienna?",
    "What is the capital of Portugal?",
    "What is the highest mountain in the Alps?",
]


class Search(msgspec.Struct):
    # Bounded, so a model asked to write a Search as a tool call (examples/qa_tools.py) ends it.
    query: Annotated[str, msgspec.Meta(max_length=120)]
    k: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3


class Passage(msgspec.Struct):
    text: str
    score: float


class Passages(msgspec.Struct):
    passages: list[Passage]
    served_by: str  # node id of the librarian that answered


class Ask(msgspec.Struct):
    question: str


class Answer(msgspec.Struct):
    text: str
    sources: list[str]
    served_by: str  # node id of the writer that answered
    passages_from: str = ""  # node id of the librarian it asked


async def _retry_while_starting(action: Any, attempts_for: float = 120.0) -> Any:
    """Run ``action()`` until the mesh has what it needs (a model may still be joining)."""
    deadline = time.monotonic() + attempts_for
    while True:
        try:
            return await action()
        except (UnknownAgent, NoCapacity):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


class Librarian(Agent):
    name = "librarian"
    documents: ClassVar[list[str]] = DOCUMENTS

    def __init__(self) -> None:
        self.vectors: list[list[float]] = []

    async def on_start(self, ctx: Context) -> None:
        self.vectors = await _retry_while_starting(
            lambda: ctx.embed(EMBED_MODEL, self.documents, timeout=60)
        )

    @handler
    async def search(self, message: Search, ctx: Context) -> Passages:
        (query,) = await ctx.embed(EMBED_MODEL, [message.query])
        scored = sorted(
            (
                (sum(a * b for a, b in zip(query, vector, strict=True)), text)
                for vector, text in zip(self.vectors, self.documents, strict=True)
            ),
            reverse=True,
        )  # the vectors are L2-normalised: the dot product is the cosine
        passages = [
            Passage(text=text, score=round(score, 4)) for score, text in scored[: message.k]
        ]
        return Passages(passages=passages, served_by=ctx.node_id)


class Writer(Agent):
    name = "writer"

    @handler
    async def ask(self, message: Ask, ctx: Context) -> Answer:
        found = await ctx.request(
            "librarian", Search(query=message.question, k=2), reply_type=Passages, timeout=30
        )
        context = "\n".join(f"- {passage.text}" for passage in found.passages)
        text = await ctx.chat(
            CHAT_MODEL,
            [
                {
                    "role": "system",
                    "content": "Answer in one short sentence, using only these facts:\n" + context,
                },
                {"role": "user", "content": message.question},
            ],
            max_tokens=48,
            timeout=90,
        )
        return Answer(
            text=text.strip(),
            sources=[passage.text for passage in found.passages],
            served_by=ctx.node_id,
            passages_from=found.served_by,
        )


def _node_names(peers: list[dict[str, Any]], status: dict[str, Any]) -> dict[str, str]:
    names = {str(peer.get("node_id", "")): str(peer.get("name", "")) for peer in peers}
    names[str(status.get("node_id", ""))] = str(status.get("name", ""))
    return names


async def ask_questions(mesh: Mesh, questions: list[str]) -> list[Answer]:
    """Ask the writer each question and print the conversation."""
    answers: list[Answer] = []
    names = _node_names(await mesh.peers(), await mesh.status())

    def label(node_id: str) -> str:
        return f"{names.get(node_id) or '?'} ({node_id[:8]})"

    for question in questions:
        print(f"\n{mesh.name} -> writer: Ask(question={question!r})", flush=True)
        answer = await _retry_while_starting(
            lambda q=question: mesh.request(
                "writer", Ask(question=q), reply_type=Answer, timeout=120
            )
        )
        names = _node_names(await mesh.peers(), await mesh.status())
        print(f"  writer on node {label(answer.served_by)}")
        print(f"    -> librarian: Search(k=2), served on node {label(answer.passages_from)}")
        for source in answer.sources:
            print(f"         passage: {source}")
        print(f"    -> model:{CHAT_MODEL}: chat with those passages as context")
        print(f"  writer -> {mesh.name}: Answer(text={answer.text!r})", flush=True)
        answers.append(answer)
    return answers


async def main(
    questions: list[str] | None = None, *, data_dir: str | None = None, serve: bool = False
) -> list[Answer]:
    async with connect(data_dir, name="qa-main") as mesh:
        if serve:
            async with mesh.serving(Librarian(), Writer()):
                return await ask_questions(mesh, questions or DEFAULT_QUESTIONS)
        return await ask_questions(mesh, questions or DEFAULT_QUESTIONS)


def cli() -> None:
    parser = argparse.ArgumentParser(description="Ask the writer/librarian agents questions.")
    parser.add_argument("--question", action="append", help="ask this (repeatable)")
    parser.add_argument("--data-dir", help="the local node's data directory")
    parser.add_argument("--serve", action="store_true", help="host both agents in this process")
    arguments = parser.parse_args()
    try:
        asyncio.run(main(arguments.question, data_dir=arguments.data_dir, serve=arguments.serve))
    except MeshError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    cli()
