"""A node copies a model only once it has been given it for a while (records still spreading
can make nodes disagree for a moment, and a copy is the costly action)."""

from __future__ import annotations

import asyncio

from llmnode.bus.identity import Identity
from llmnode.nodes.placement.assign import NodeCapacity
from llmnode.nodes.placement.deployments import Deployments
from llmnode.nodes.placement.loop import Hooks, PlacementLoop, issue_and_keep
from llmnode.schemas.placement import Deployment


async def test_a_fetch_starts_only_after_the_assignment_held_for_settle_s() -> None:
    now = 100.0
    fetched: list[str] = []
    holder = NodeCapacity(node="holder", memory_mb=10, stored=frozenset({"m"}))
    me = NodeCapacity(node="me", memory_mb=1000)
    view = [holder, me]

    async def fetch(model: str, holders: tuple[str, ...]) -> None:
        fetched.append(model)

    async def nothing(model: str) -> None:
        return None

    hooks = Hooks(
        capacities=lambda: view,
        loaded_mb=dict,
        fetch=fetch,
        load=nothing,
        unload=nothing,
        publish=lambda record: None,
    )
    deployments = Deployments()
    loop = PlacementLoop(
        "me", Identity.generate(), deployments, hooks, settle_s=2.0, clock=lambda: now
    )
    issue_and_keep(Identity.generate(), deployments, Deployment(model="m", footprint_mb=100), now)

    assert "m" in (await loop.step()).fetch  # given to this node, but not copied yet
    now += 1.0
    await loop.step()
    await asyncio.sleep(0)
    assert fetched == []
    view = [holder, NodeCapacity(node="me", memory_mb=50)]  # a moment later: no room here
    now += 1.5
    assert "m" not in (await loop.step()).fetch
    view = [holder, me]  # given again: the settle period starts over
    now += 0.5
    await loop.step()
    now += 1.9
    await loop.step()
    await asyncio.sleep(0)
    assert fetched == []
    now += 0.2
    await loop.step()
    await asyncio.sleep(0.01)
    assert fetched == ["m"]
    await loop.close()
