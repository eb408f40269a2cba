"""The ``--auto`` policy in a simulated mesh on a virtual clock: bursts add, quiet removes."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from llmnode.nodes.placement.autoscale import (
    AutoscalePolicy,
    AutoState,
    queue_wait_ms,
    step,
    steward,
)
from llmnode.schemas.state import ServiceLoad

POLICY = AutoscalePolicy(
    add_wait_ms=500, add_window_s=30, remove_wait_ms=50, quiet_s=300, cooldown_s=60
)
SERVICE_S = 0.2  # one request takes 200 ms on one slot
SLOTS = 2  # per replica
LOAD_S = 20.0  # a new replica serves this long after it was decided (transfer + load)


def simulate(
    arrivals_per_s: Callable[[float], float], seconds: int, policy: AutoscalePolicy = POLICY
) -> list[tuple[float, int, float]]:
    """A fluid queue served by the policy's replicas, one step a second: (t, replicas, wait)."""
    state = AutoState(replicas=1)
    serving_since: list[float] = [-1e9]  # when each replica began serving
    queue = 0.0
    trace: list[tuple[float, int, float]] = []
    for second in range(seconds):
        now = float(second)
        serving = sum(1 for t in serving_since if t <= now)
        capacity = serving * SLOTS / SERVICE_S  # requests per second
        queue = max(0.0, queue + arrivals_per_s(now) - capacity)
        loads = [
            ServiceLoad(
                slots=SLOTS, queue_depth=round(queue / serving), ewma_service_ms=SERVICE_S * 1000
            )
        ] * serving
        wait = queue_wait_ms(loads)
        state = step(policy, state, wait, now)
        while len(serving_since) < state.replicas:
            serving_since.append(now + LOAD_S)
        while len(serving_since) > state.replicas:
            serving_since.pop()
        trace.append((now, state.replicas, wait))
    return trace


def changes(trace: list[tuple[float, int, float]]) -> int:
    return sum(1 for a, b in itertools.pairwise(trace) if a[1] != b[1])


def test_a_burst_adds_replicas_and_a_quiet_period_removes_them_without_flapping() -> None:
    def burst(t: float) -> float:  # 10 req/s fits one replica; 25 req/s for 5 min does not
        return 25.0 if 100 <= t < 400 else 5.0

    trace = simulate(burst, 2400)
    peak = max(replicas for _, replicas, _ in trace)
    assert peak >= 3  # 25 req/s needs 3 replicas of 10 req/s
    first_add = next(t for t, replicas, _ in trace if replicas > 1)
    assert 100 + POLICY.add_window_s <= first_add < 200
    assert trace[-1][1] == 1  # back to one after the quiet
    # Up once per step to the peak, down once per step to one: nothing else.
    assert changes(trace) == 2 * (peak - 1)
    # No removal while the burst lasts.
    assert all(b[1] >= a[1] for a, b in itertools.pairwise(trace) if b[0] < 400)


def test_load_hovering_around_the_threshold_changes_nothing() -> None:
    def hover(t: float) -> float:  # above capacity 10 s, below 10 s: shorter than the window
        return 14.0 if int(t) % 20 < 10 else 6.0

    trace = simulate(hover, 2000)
    assert changes(trace) == 0


def test_never_below_one_replica_and_never_above_the_room_the_mesh_has() -> None:
    state = AutoState(replicas=0)
    state = step(POLICY, state, 0.0, 0.0)
    assert state.replicas == 1
    for second in range(1, 5000):
        state = step(POLICY, state, 0.0, float(second))
    assert state.replicas == 1
    for second in range(5000, 10000):
        state = step(POLICY, state, 10_000.0, float(second), room=2)
    assert state.replicas == 2


def test_queue_wait_spreads_queued_work_over_every_slot() -> None:
    loads = [
        ServiceLoad(slots=2, queue_depth=10, ewma_service_ms=100.0),
        ServiceLoad(slots=2, queue_depth=0, ewma_service_ms=100.0),
    ]
    assert queue_wait_ms(loads) == 250.0
    assert queue_wait_ms([]) == 0.0


def test_thresholds_without_a_gap_are_refused() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        AutoscalePolicy(add_wait_ms=100, remove_wait_ms=100)


def test_every_node_names_the_same_steward_whatever_the_order() -> None:
    nodes = [f"node{i}" for i in range(10)]
    chosen = steward("smollm2", nodes)
    assert chosen == steward("smollm2", list(reversed(nodes)))
    assert steward("smollm2", []) is None
    # Removing a node other than the steward keeps the steward.
    assert (
        steward("smollm2", [n for n in nodes if n != next(n for n in nodes if n != chosen)])
        == chosen
    )
