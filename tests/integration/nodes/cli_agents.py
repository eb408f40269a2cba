"""An agent the CLI tests run inside real ``llmnode start --agent`` processes.

Not a test module: nodes import it as ``tests.integration.nodes.cli_agents``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from llmnode.agents.agent import Agent, Context, handler


class Note(msgspec.Struct):
    text: str


class Count(msgspec.Struct):
    pass


class Relay(msgspec.Struct):
    text: str


class Notes(Agent):
    """Takes ``Note`` messages (requests or one-way), answers ``Count`` with the notes it has, and
    ``Relay`` by sending itself a Note from inside the handler."""

    name = "notes"
    slots = 1  # one handler at a time: a send to itself must not wait behind the sender
    taken: ClassVar[list[str]] = []

    @handler
    async def note(self, message: Note) -> None:
        Notes.taken.append(message.text)

    @handler
    async def count(self, message: Count) -> dict[str, Any]:
        return {"notes": list(Notes.taken)}

    @handler
    async def relay(self, message: Relay, ctx: Context) -> dict[str, Any]:
        await ctx.send("notes", Note(text=message.text))
        return {"relayed": message.text}
