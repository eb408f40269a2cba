"""SDK example: chat with SmolLM2 and embed with MiniLM through the local node (does I/O).

Start a node that serves the default models (or join a mesh that has them), then run this::

    llmnode models pull smollm2-135m-instruct && llmnode models pull all-minilm-l6-v2
    llmnode start --model smollm2-135m-instruct --model all-minilm-l6-v2 &
    python -m examples.sdk_chat
"""

from __future__ import annotations

import argparse
import asyncio
import math

from llmnode.client.mesh import connect
from llmnode.errors import MeshError

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"


def cosine(left: list[float], right: list[float]) -> float:
    dot = sum(a * b for a, b in zip(left, right, strict=True))
    return dot / (math.sqrt(sum(a * a for a in left)) * math.sqrt(sum(b * b for b in right)))


async def main(
    data_dir: str | None = None, question: str = "What is the capital of France?"
) -> str:
    async with connect(data_dir, name="sdk-chat") as mesh:
        # Stream a chat answer, token by token.
        print(f"you: {question}\nsmollm2: ", end="", flush=True)
        pieces = []
        async for delta in mesh.chat(CHAT_MODEL, question, stream=True, max_tokens=48):
            pieces.append(delta)
            print(delta, end="", flush=True)
        print()

        # Or wait for the whole answer, with a conversation history.
        follow_up = await mesh.chat(
            CHAT_MODEL,
            [
                {"role": "user", "content": question},
                {"role": "assistant", "content": "".join(pieces)},
                {"role": "user", "content": "And of Italy?"},
            ],
            max_tokens=32,
        )
        print(f"you: And of Italy?\nsmollm2: {follow_up}")

        # Embed sentences and compare them.
        sentences = [
            "Paris is the capital of France.",
            "The French capital is Paris.",
            "I had pancakes for breakfast.",
        ]
        vectors = await mesh.embed(EMBED_MODEL, sentences)
        print(f"minilm: {len(vectors)} vectors of dimension {len(vectors[0])}")
        for sentence, vector in zip(sentences[1:], vectors[1:], strict=True):
            print(
                f"  similarity({sentences[0]!r}, {sentence!r}) = {cosine(vectors[0], vector):.3f}"
            )
        return "".join(pieces)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="the local node's data directory")
    parser.add_argument("--question", default="What is the capital of France?")
    arguments = parser.parse_args()
    try:
        asyncio.run(main(arguments.data_dir, arguments.question))
    except MeshError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    cli()
