"""An agent the CLI tests run inside real ``llmnode start --agent`` processes.

Not a test module: nodes import it as ``tests.integration.nodes.cli_agents``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from llmnode.agents.agent import Agent, handler


class Note(msgspec.Struct):
    text: str


class Count(msgspec.Struct):
    pass


class Notes(Agent):
    """Takes ``Note`` messages (requests or one-way) and answers ``Count`` with how many it has."""

    name = "notes"
    taken: ClassVar[list[str]] = []

    @handler
    async def note(self, message: Note) -> None:
        Notes.taken.append(message.text)

    @handler
    async def count(self, message: Count) -> dict[str, Any]:
        return {"notes": list(Notes.taken)}
