"""Demand-driven replica counts for ``--auto`` deployments: a pure policy with hysteresis (no I/O).

Inputs are explicit (the mesh-wide queue wait of a model, computed from gossiped load by
:func:`queue_wait_ms`, and ``now``); the output is the replica count the deployment should have.
Hysteresis has three parts, so the count does not flap:

- two thresholds: a replica is added above ``add_wait_ms``, removed below ``remove_wait_ms``
  (well below it), and between the two nothing happens;
- two windows: the wait must stay above ``add_wait_ms`` for ``add_window_s`` (a burst, not a
  spike), or below ``remove_wait_ms`` for ``quiet_s`` (much longer: removing is cheap to
  regret only slowly);
- a cooldown after each change, so a new replica is loaded and warm before it is judged.

Never below ``min_replicas`` (at least one) while deployed. One node decides for each model, its
steward (:func:`steward`: the highest rendezvous hash among alive nodes), and publishes the count
as a new version of the deployment record, so every node places the same count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from llmnode.nodes.placement.assign import rendezvous
from llmnode.schemas.config import AutoscaleConfig
from llmnode.schemas.state import ServiceLoad

_DEFAULT = AutoscaleConfig()  # the defaults live with the config a node is started with


@dataclass(frozen=True, slots=True)
class AutoscalePolicy:
    add_wait_ms: float = _DEFAULT.add_wait_ms  # mesh-wide queue wait above which one is added
    add_window_s: float = _DEFAULT.add_window_s  # ...once it has stayed above for this long
    remove_wait_ms: float = _DEFAULT.remove_wait_ms  # wait below which the model is quiet
    quiet_s: float = _DEFAULT.quiet_s  # ...and a replica goes after this long quiet
    cooldown_s: float = _DEFAULT.cooldown_s  # no change for this long after a change
    min_replicas: int = 1
    max_replicas: int = 8

    def __post_init__(self) -> None:
        if self.remove_wait_ms >= self.add_wait_ms:
            raise ValueError("remove_wait_ms must be below add_wait_ms (hysteresis)")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")


@dataclass(frozen=True, slots=True)
class AutoState:
    """What the policy remembers about one model between steps."""

    replicas: int
    above_since: float | None = None  # when the wait rose above add_wait_ms (None: not above)
    below_since: float | None = None  # when it fell below remove_wait_ms
    changed_at: float = -math.inf


def queue_wait_ms(loads: Iterable[ServiceLoad]) -> float:
    """The wait a request sees with the queued work spread over every replica's slots:
    sum(queue depth × service time) / sum(slots). Zero with no replica."""
    work = slots = 0.0
    for load in loads:
        work += load.queue_depth * load.ewma_service_ms
        slots += max(1, load.slots)
    return work / slots if slots else 0.0


def step(
    policy: AutoscalePolicy,
    state: AutoState,
    wait_ms: float,
    now: float,
    *,
    room: int | None = None,
) -> AutoState:
    """The state after observing ``wait_ms`` at ``now``. ``room``: the most replicas the mesh's
    memory can hold now (None: no limit besides the policy's)."""
    above = state.above_since if wait_ms > policy.add_wait_ms else None
    if wait_ms > policy.add_wait_ms and above is None:
        above = now
    below = state.below_since if wait_ms < policy.remove_wait_ms else None
    if wait_ms < policy.remove_wait_ms and below is None:
        below = now
    state = replace(state, above_since=above, below_since=below)
    ceiling = policy.max_replicas if room is None else min(policy.max_replicas, room)
    floor = policy.min_replicas
    if state.replicas < floor:
        return replace(state, replicas=floor, changed_at=now)
    if now - state.changed_at < policy.cooldown_s:
        return state
    if above is not None and now - above >= policy.add_window_s and state.replicas < ceiling:
        return AutoState(replicas=state.replicas + 1, changed_at=now)
    if below is not None and now - below >= policy.quiet_s and state.replicas > floor:
        # Quiet again from now: the next removal needs another full quiet period.
        return AutoState(replicas=state.replicas - 1, below_since=now, changed_at=now)
    return state


def steward(model: str, alive: Iterable[str]) -> str | None:
    """The node that runs the policy for ``model``: the highest rendezvous hash (None: none)."""
    return max(alive, key=lambda node: (rendezvous(model, node), node), default=None)
