"""Agents the supervision tests run inside real ``llmnode start --agent`` processes.

Not a test module: nodes import it as ``tests.integration.nodes.supervised_agents``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from llmnode.agents.agent import Agent, Context, handler


class Flaky(Agent):
    """Its first start fails (``on_start`` raises); the supervisor's restart then serves."""

    name = "flaky"
    starts: ClassVar[int] = 0

    async def on_start(self, ctx: Context) -> None:
        Flaky.starts += 1
        if Flaky.starts == 1:
            raise RuntimeError("first start fails")

    @handler
    async def echo(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"starts": Flaky.starts, **message}
