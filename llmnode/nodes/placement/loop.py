"""The placement loop of one node: place, reconcile, act; and the ``--auto`` steward (async shell).

Pure parts decide (:func:`~llmnode.nodes.placement.assign.place`,
:func:`~llmnode.nodes.placement.reconcile.reconcile`,
:func:`~llmnode.nodes.placement.autoscale.step`); this loop only feeds them and carries the
actions out through :class:`Hooks` the node provides (read the view, pull a model over the mesh,
load, unload, gossip a deployment record), so it needs no socket and no model runtime itself.

Every node must compute the same assignment, so the loop gives ``place`` only what every node
sees alike: the gossiped view (alive nodes, their memory, stored and loaded models) and the
deployment records. Stability comes from the ``loaded`` sets in the view, not from a private
history. Fetches and loads run as tasks the loop owns (one per model at a time); a failure is
logged and retried after ``retry_s``, never lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from llmnode.bus.identity import Identity
from llmnode.errors import MeshError
from llmnode.log import get_logger
from llmnode.nodes.placement.assign import Assignment, Demand, NodeCapacity, place
from llmnode.nodes.placement.autoscale import AutoscalePolicy, AutoState, step, steward
from llmnode.nodes.placement.deployments import Deployments, demands, issue, next_version
from llmnode.nodes.placement.reconcile import Actions, reconcile
from llmnode.schemas.placement import Deployment, SignedDeployment

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Hooks:
    """What the node lends the loop."""

    capacities: Callable[[], list[NodeCapacity]]  # alive nodes, from the gossiped view
    loaded_mb: Callable[[], Mapping[str, int]]  # this node's loaded models and their footprint
    fetch: Callable[[str, tuple[str, ...]], Awaitable[None]]  # pull a model from these holders
    load: Callable[[str], Awaitable[None]]  # load, warm, then advertise
    unload: Callable[[str], Awaitable[None]]
    publish: Callable[[SignedDeployment], None]  # gossip a record this node issued


class PlacementLoop:
    def __init__(
        self,
        me: str,
        identity: Identity,
        deployments: Deployments,
        hooks: Hooks,
        *,
        footprints: Callable[[], Mapping[str, int]] = dict,
        policy: AutoscalePolicy | None = None,
        interval_s: float = 1.0,
        retry_s: float = 10.0,
        settle_s: float = 2.0,
        clock: Callable[[], float],
    ) -> None:
        self.me, self.identity, self.deployments, self.hooks = me, identity, deployments, hooks
        self.footprints, self.policy = footprints, policy or AutoscalePolicy()
        self.interval_s, self.retry_s, self.clock = interval_s, retry_s, clock
        # A fetch starts only once this node has been given the model for ``settle_s``: while
        # records spread, nodes can briefly disagree, and a copy is the costly action.
        self.settle_s = settle_s
        self._fetch_wanted_since: dict[str, float] = {}
        self.assignment = Assignment()
        self._placed_for: tuple[tuple[NodeCapacity, ...], tuple[Demand, ...]] = ((), ())
        self._work: dict[str, asyncio.Task[None]] = {}
        self._failed_at: dict[str, float] = {}
        self._auto: dict[str, AutoState] = {}
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """Something changed (membership, a record, a finished fetch): run a step soon."""
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.step()
                except Exception as error:  # a bug in one round must not stop the node
                    log.exception("placement_step_failed", error=f"{type(error).__name__}: {error}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                self._wake.clear()
        finally:
            await self.close()

    async def close(self) -> None:
        work, self._work = self._work, {}
        for task in work.values():
            task.cancel()
        for task in work.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def step(self) -> Actions:
        """Place, reconcile, start what needs doing. Returns what it decided (for tests)."""
        nodes = self.hooks.capacities()
        if not any(node.node == self.me for node in nodes):
            return Actions(fetch={}, load=(), unload=(), waiting=())
        current = self.deployments.current()
        footprints = dict(self.footprints())
        footprints.update({m: d.footprint_mb for m, d in current.items() if d.footprint_mb})
        wanted = demands(current, footprints)
        inputs = (tuple(nodes), tuple(wanted))
        if inputs != self._placed_for:  # place only when the view or the deployments changed
            self.assignment, self._placed_for = place(nodes, wanted), inputs
        deployed = frozenset(m for m, d in current.items() if d.deployed)
        actions = reconcile(
            self.me, self.assignment, nodes, footprints, self.hooks.loaded_mb(), deployed
        )
        for model in actions.unload:
            if model not in self._work:
                await self.hooks.unload(model)
                log.info("placement_unloaded", model=model)
        now = self.clock()
        since = {m: self._fetch_wanted_since.get(m, now) for m in actions.fetch}
        self._fetch_wanted_since = since
        for model, holders in actions.fetch.items():
            if holders and now - since[model] >= self.settle_s:
                self._start(model, now, self.hooks.fetch(model, holders))
        for model in actions.load:
            self._start(model, now, self.hooks.load(model))
        return actions

    def _start(self, model: str, now: float, work: Awaitable[None]) -> None:
        task = self._work.get(model)
        recent_failure = now - self._failed_at.get(model, -self.retry_s) < self.retry_s
        if (task is not None and not task.done()) or recent_failure:
            if asyncio.iscoroutine(work):
                work.close()  # not started: no "never awaited" warning
            return
        self._work[model] = asyncio.create_task(self._guard(model, work), name=f"place:{model}")

    async def _guard(self, model: str, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as error:  # MeshError expected; anything else logged, retried later
            self._failed_at[model] = self.clock()
            log.warning(
                "placement_action_failed",
                model=model,
                error=str(error) if isinstance(error, MeshError) else repr(error),
            )
        finally:
            self._work.pop(model, None)
            self.nudge()

    # -- --auto ----------------------------------------------------------------------------

    def autoscale(self, waits_ms: Mapping[str, float]) -> list[SignedDeployment]:
        """For each ``--auto`` model this node stewards, feed the mesh-wide queue wait to the
        policy; when the count changes, issue, keep and publish a new record version."""
        now = self.clock()
        nodes = self.hooks.capacities()
        alive = [node.node for node in nodes]
        issued: list[SignedDeployment] = []
        for model, deployment in self.deployments.current().items():
            if not (deployment.deployed and deployment.auto) or steward(model, alive) != self.me:
                self._auto.pop(model, None)
                continue
            policy = AutoscalePolicy(
                add_wait_ms=self.policy.add_wait_ms,
                add_window_s=self.policy.add_window_s,
                remove_wait_ms=self.policy.remove_wait_ms,
                quiet_s=self.policy.quiet_s,
                cooldown_s=self.policy.cooldown_s,
                min_replicas=max(1, deployment.min_replicas),
                max_replicas=max(1, deployment.min_replicas, deployment.max_replicas),
            )
            state = self._auto.get(model) or AutoState(replicas=deployment.replicas)
            room = sum(1 for node in nodes if node.memory_mb >= deployment.footprint_mb)
            state = step(policy, state, waits_ms.get(model, 0.0), now, room=max(1, room))
            self._auto[model] = state
            if state.replicas != deployment.replicas:
                changed = Deployment(
                    model=model,
                    replicas=state.replicas,
                    auto=True,
                    min_replicas=deployment.min_replicas,
                    max_replicas=deployment.max_replicas,
                    footprint_mb=deployment.footprint_mb,
                    manifest_sha256=deployment.manifest_sha256,
                    issued_at=now,
                )
                record = issue_and_keep(self.identity, self.deployments, changed, now)
                self.hooks.publish(record)
                issued.append(record)
                log.info("placement_autoscaled", model=model, replicas=state.replicas)
        if issued:
            self.nudge()
        return issued


def issue_and_keep(
    identity: Identity, deployments: Deployments, deployment: Deployment, now: float
) -> SignedDeployment:
    """Sign ``deployment`` as the next version of its model's record and keep it locally."""
    record = issue(identity, next_version(deployments.get(deployment.model), now), deployment)
    deployments.merge([record])
    return record
