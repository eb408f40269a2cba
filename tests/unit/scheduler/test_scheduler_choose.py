"""choose(): the node with the soonest estimated completion, among capable candidates only."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmnode.errors import NoCapacity
from llmnode.nodes.requests.scheduler import Candidate, InFlightLedger, choose

SERVICE = "model:tiny"


def node(number: int) -> bytes:
    return bytes([number]) * 32


def candidate(number: int, **fields: object) -> Candidate:
    values: dict[str, object] = {"ewma_service_ms": 100.0, "rtt_ms": 0.5, "gossip_time": 0.0}
    values.update(fields)
    return Candidate(node=node(number), service=SERVICE, **values)  # type: ignore[arg-type]


def test_picks_the_least_loaded_node() -> None:
    candidates = [
        candidate(1, gossip_queue_depth=5, gossip_in_flight=1),
        candidate(2, gossip_queue_depth=0, gossip_in_flight=1),
        candidate(3, gossip_queue_depth=2, gossip_in_flight=1),
    ]
    choice = choose(candidates, InFlightLedger(), 1.0, random.Random(0))
    assert choice.node == node(2)
    assert choice.estimate_ms == pytest.approx(2 * 100.0 + 0.5)


def test_idle_fast_node_beats_idle_slow_node() -> None:
    candidates = [candidate(1, ewma_service_ms=400.0), candidate(2, ewma_service_ms=50.0)]
    assert choose(candidates, InFlightLedger(), 1.0, random.Random(0)).node == node(2)


def test_ledger_spreads_two_quick_requests_over_two_idle_single_slot_nodes() -> None:
    # Both nodes gossiped "idle" at t=0; the first request's send is not in that gossip yet.
    candidates = [candidate(1), candidate(2)]
    ledger = InFlightLedger()
    first = choose(candidates, ledger, 0.010, random.Random(0))
    ledger.sent(first.node, SERVICE, b"request-1", 0.010)
    second = choose(candidates, ledger, 0.011, random.Random(0))
    assert {first.node, second.node} == {node(1), node(2)}


def test_requests_finished_since_the_gossip_are_subtracted_from_it() -> None:
    ledger = InFlightLedger()
    ledger.sent(node(1), SERVICE, b"old", 0.0)
    # Gossip at t=1 counted "old" in node 1's queue; it finished at t=2.
    ledger.finished(node(1), SERVICE, b"old", 2.0)
    candidates = [
        candidate(1, gossip_queue_depth=1, gossip_in_flight=1, gossip_time=1.0),
        candidate(2, gossip_queue_depth=0, gossip_in_flight=1, gossip_time=1.0, rtt_ms=1.0),
    ]
    # Node 1 now has one in flight, like node 2, and a lower RTT.
    assert choose(candidates, ledger, 2.5, random.Random(0)).node == node(1)


@pytest.mark.parametrize("state", ["dead", "left", "suspect"])
def test_skips_a_node_that_is_not_alive_while_an_alive_one_remains(state: str) -> None:
    candidates = [
        candidate(1, state=state),
        candidate(2, gossip_queue_depth=10, gossip_in_flight=1),
    ]
    assert choose(candidates, InFlightLedger(), 1.0, random.Random(0)).node == node(2)


def test_uses_a_suspect_node_when_no_alive_node_remains() -> None:
    candidates = [candidate(1, state="dead"), candidate(2, state="suspect")]
    assert choose(candidates, InFlightLedger(), 1.0, random.Random(0)).node == node(2)


def test_skips_a_node_whose_queue_reached_its_limit() -> None:
    candidates = [
        candidate(1, queue_limit=4, gossip_queue_depth=4, gossip_in_flight=1),
        candidate(2, ewma_service_ms=1000.0),
    ]
    assert choose(candidates, InFlightLedger(), 1.0, random.Random(0)).node == node(2)


def test_skips_excluded_nodes() -> None:
    candidates = [candidate(1), candidate(2, gossip_queue_depth=3, gossip_in_flight=1)]
    choice = choose(
        candidates, InFlightLedger(), 1.0, random.Random(0), exclude=frozenset({node(1)})
    )
    assert choice.node == node(2)


def test_no_capacity_names_the_service_when_every_queue_is_full() -> None:
    candidates = [
        candidate(number, queue_limit=2, gossip_queue_depth=2, gossip_in_flight=1)
        for number in range(1, 4)
    ]
    with pytest.raises(NoCapacity, match="model:tiny"):
        choose(candidates, InFlightLedger(), 1.0, random.Random(0))


def test_no_capacity_when_every_node_is_dead_or_excluded() -> None:
    candidates = [candidate(1, state="dead"), candidate(2)]
    with pytest.raises(NoCapacity, match="model:tiny"):
        choose(candidates, InFlightLedger(), 1.0, random.Random(0), exclude=frozenset({node(2)}))


def test_no_capacity_without_candidates_names_the_requested_service() -> None:
    with pytest.raises(NoCapacity, match="model:absent"):
        choose([], InFlightLedger(), 1.0, random.Random(0), service="model:absent")


def test_ignores_candidates_of_another_service() -> None:
    other = Candidate(node=node(9), service="model:other", ewma_service_ms=1.0)
    candidates = [other, candidate(2, gossip_queue_depth=3, gossip_in_flight=1)]
    choice = choose(candidates, InFlightLedger(), 1.0, random.Random(0), service=SERVICE)
    assert choice.node == node(2)


def test_unknown_service_time_gets_the_mean_of_known_ones_so_a_new_node_gets_traffic() -> None:
    # Known nodes are busy; the new node has no measurement yet but is idle.
    candidates = [
        candidate(1, gossip_in_flight=1, gossip_queue_depth=2),
        candidate(2, gossip_in_flight=1, gossip_queue_depth=2),
        candidate(3, ewma_service_ms=0.0),
    ]
    choice = choose(candidates, InFlightLedger(), 1.0, random.Random(0))
    assert choice.node == node(3)
    assert choice.estimate_ms == pytest.approx(100.0 + 0.5)


def test_own_observations_replace_the_prior_when_gossip_has_no_service_time() -> None:
    ledger = InFlightLedger()
    ledger.sent(node(2), SERVICE, b"r", 0.0)
    ledger.finished(node(2), SERVICE, b"r", 0.5, service_ms=500.0)
    candidates = [candidate(1, gossip_in_flight=1), candidate(2, ewma_service_ms=0.0)]
    # Node 1: 2 × 100 ms behind one request; node 2: 500 ms observed on our own requests.
    assert choose(candidates, ledger, 1.0, random.Random(0)).node == node(1)


def test_power_of_two_choices_takes_the_better_of_the_two_sampled() -> None:
    # Equal throughput, so sampling is uniform; node 1 is idle, the rest are loaded.
    candidates = [candidate(1)] + [
        candidate(number, gossip_queue_depth=number, gossip_in_flight=1) for number in range(2, 17)
    ]
    rng = random.Random(7)
    chosen = [choose(candidates, InFlightLedger(), 1.0, rng).node for _ in range(2000)]
    # Node 1 is sampled (and then always wins) in 2/16 of the draws; never always, never never.
    share = chosen.count(node(1)) / len(chosen)
    assert 0.09 < share < 0.16
    # The most loaded node is worse than any partner it could be sampled with.
    assert node(16) not in chosen


def test_local_node_is_always_one_of_the_choices() -> None:
    remote = [
        candidate(number, gossip_queue_depth=1, gossip_in_flight=1) for number in range(2, 17)
    ]
    local = candidate(1, is_local=True, rtt_ms=0.0, gossip_time=1.0)
    rng = random.Random(3)
    chosen = {choose([*remote, local], InFlightLedger(), 1.0, rng).node for _ in range(50)}
    assert chosen == {node(1)}


def test_full_scan_below_the_threshold_finds_the_single_idle_node() -> None:
    candidates = [candidate(1)] + [
        candidate(number, gossip_queue_depth=2, gossip_in_flight=1) for number in range(2, 8)
    ]
    rng = random.Random(11)
    assert all(choose(candidates, InFlightLedger(), 1.0, rng).node == node(1) for _ in range(50))


states = st.sampled_from(["alive", "suspect", "dead", "left"])
candidate_strategy = st.builds(
    Candidate,
    node=st.integers(0, 40).map(lambda number: bytes([number]) * 32),
    service=st.just(SERVICE),
    state=states,
    slots=st.integers(1, 8),
    queue_limit=st.integers(0, 16),
    gossip_queue_depth=st.integers(0, 20),
    gossip_in_flight=st.integers(0, 8),
    ewma_service_ms=st.floats(0.0, 5000.0),
    rtt_ms=st.floats(0.0, 50.0),
    gossip_time=st.floats(0.0, 10.0),
    is_local=st.booleans(),
)


@given(
    candidates=st.lists(candidate_strategy, max_size=24),
    excluded=st.frozensets(st.integers(0, 40).map(lambda number: bytes([number]) * 32)),
    seed=st.integers(0, 2**32),
    sends=st.lists(st.tuples(st.integers(0, 40), st.floats(0.0, 10.0)), max_size=10),
)
def test_choice_is_a_live_capable_candidate_outside_the_exclude_set(
    candidates: list[Candidate],
    excluded: frozenset[bytes],
    seed: int,
    sends: list[tuple[int, float]],
) -> None:
    ledger = InFlightLedger()
    for index, (number, at) in enumerate(sends):
        ledger.sent(bytes([number]) * 32, SERVICE, index.to_bytes(4, "big"), at)
    try:
        choice = choose(candidates, ledger, 10.0, random.Random(seed), exclude=excluded)
    except NoCapacity as error:
        assert SERVICE in str(error) or not candidates
        return
    chosen = [item for item in candidates if item.node == choice.node]
    assert chosen, "the choice must be one of the candidates"
    assert choice.node not in excluded
    assert any(item.state in ("alive", "suspect") for item in chosen)
    if any(item.state == "alive" and item.node not in excluded for item in candidates):
        assert any(item.state == "alive" for item in chosen)
    assert choice.estimate_ms >= 0.0
