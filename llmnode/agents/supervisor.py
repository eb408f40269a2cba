"""Supervises the ``--agent`` agents a node hosts in its own process (I/O: control connections).

Each agent runs in an :class:`~llmnode.agents.host.AgentHost` of its own, on a control connection
of its own, so one agent's failure touches no other. A host that fails (its agent's constructor
or ``on_start`` raises, it cannot register, its heartbeat dies) is logged with the reason and
started again after a backoff that doubles up to ``MAX_BACKOFF_S`` (and starts over once a host
has run for ``HEALTHY_S``). :meth:`AgentSupervisor.report` is what ``llmnode status`` shows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from llmnode.agents.agent import Agent
from llmnode.agents.host import AgentHost
from llmnode.client.connection import ControlClient
from llmnode.client.mesh import Mesh
from llmnode.log import get_logger

log = get_logger(__name__)

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
HEALTHY_S = 60.0  # a host that ran this long before failing restarts after the initial backoff


@dataclass
class AgentState:
    """One supervised agent, as ``llmnode status`` shows it."""

    name: str
    state: str = "starting"  # starting, running, restarting, stopped
    restarts: int = 0
    last_error: str = ""


class AgentSupervisor:
    """Runs ``agents`` (classes) attached to the node at ``address`` until cancelled."""

    def __init__(
        self,
        agents: Sequence[type[Agent]],
        address: str,
        token: bytes | str,
        *,
        initial_backoff: float = INITIAL_BACKOFF_S,
        max_backoff: float = MAX_BACKOFF_S,
    ) -> None:
        self._agents = list(agents)
        self._address = address
        self._token = token
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self.states = {agent.name: AgentState(agent.name) for agent in self._agents}

    def report(self) -> dict[str, dict[str, object]]:
        return {
            name: {"state": s.state, "restarts": s.restarts, "last_error": s.last_error}
            for name, s in self.states.items()
        }

    async def run(self) -> None:
        """Supervise every agent until cancelled (then each host stops gracefully)."""
        async with asyncio.TaskGroup() as group:
            for agent_class in self._agents:
                group.create_task(self._supervise(agent_class), name=f"agent_{agent_class.name}")

    async def _supervise(self, agent_class: type[Agent]) -> None:
        state = self.states[agent_class.name]
        backoff = self._initial_backoff
        while True:
            started = time.monotonic()
            try:
                await self._host(agent_class, state)
            except asyncio.CancelledError:
                state.state = "stopped"
                raise
            except Exception as error:  # supervised: any failure restarts the host
                state.last_error = f"{type(error).__name__}: {error}"
            else:  # pragma: no cover - a host runs until cancelled or failed
                state.last_error = "the agent host stopped"
            if time.monotonic() - started >= HEALTHY_S:
                backoff = self._initial_backoff
            state.state = "restarting"
            state.restarts += 1
            log.error(
                "agent_host_failed",
                agent=agent_class.name,
                error=state.last_error,
                restart_in_s=backoff,
                restarts=state.restarts,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _host(self, agent_class: type[Agent], state: AgentState) -> None:
        async with ControlClient(self._address, self._token) as client:
            host = AgentHost(Mesh(client))
            try:
                await host.start(agent_class())
                state.state = "running"
                await host.wait_failed()
            finally:
                await asyncio.shield(host.stop())
