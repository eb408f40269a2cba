"""The shortlist: in a large mesh a request's node is chosen among this node and a few drawn by
capacity, never among everyone (llmnode.nodes.requests.candidates)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llmnode.errors import NoCapacity
from llmnode.nodes.mesh.view import MeshView
from llmnode.nodes.requests.candidates import ServiceIndex, candidates, pick, shortlist
from llmnode.nodes.requests.scheduler import InFlightLedger
from llmnode.schemas.state import NodeState, Resources, ServiceInfo, ServiceLoad

SERVICE = "model:m"


class CountingView(MeshView):
    """A real view that counts how many members' liveness a decision asked about."""

    asked = 0

    def state_of(self, node: bytes) -> str:
        self.asked += 1
        return "dead" if node in self.dead else "alive"

    dead: frozenset[bytes] = frozenset()


def node(index: int) -> bytes:
    return index.to_bytes(4, "big") * 8


def record(index: int, slots: int = 1, service_ms: float = 50.0) -> NodeState:
    load = ServiceLoad(slots=slots, queue_limit=4, ewma_service_ms=service_ms)
    return NodeState(
        node_id=str(index),
        name=f"n{index}",
        endpoints=[],
        version="t",
        started_at=0.0,
        resources=Resources(cpu_cores=1, ram_total_mb=1, ram_free_mb=1),
        services=[ServiceInfo(name=SERVICE, kind="model", load=load)],
    )


def mesh(hosts: int, slots: dict[int, int] | None = None) -> CountingView:
    view = CountingView(node(0), "0")
    for index in range(hosts):
        view.set_record(node(index), str(index), record(index, (slots or {}).get(index, 1)), 1, 0.0)
    return view


@pytest.mark.parametrize("hosts", [20, 2_000])
def test_a_large_mesh_is_shortlisted_at_a_cost_that_does_not_grow(hosts: int) -> None:
    view = mesh(hosts)
    index, ledger, rng = ServiceIndex(view), InFlightLedger(), random.Random(1)
    shortlist(index, SERVICE, 1.0, ledger, rng)  # builds the index once
    view.asked = 0
    for _ in range(100):
        listed = shortlist(index, SERVICE, 1.0, ledger, rng)
        assert len(listed) == 2
        assert listed[0].is_local and not listed[1].is_local
    assert view.asked <= 100 * 8  # a handful of draws a decision, at 20 hosts or 2,000


def test_a_small_mesh_is_compared_whole() -> None:
    view = mesh(5)
    listed = shortlist(ServiceIndex(view), SERVICE, 1.0, InFlightLedger(), random.Random(1))
    assert {c.node for c in listed} == {node(i) for i in range(5)}


def test_excluded_dead_and_full_nodes_are_never_drawn() -> None:
    view = mesh(50)
    view.dead = frozenset(node(i) for i in range(10, 20))
    ledger = InFlightLedger()
    for i in range(20, 30):  # we have 5 outstanding there: slots 1 + queue 4 = full
        for r in range(5):
            ledger.sent(node(i), SERVICE, bytes([i, r]), 0.5)
    excluded = frozenset(node(i) for i in range(30, 40))
    index, rng = ServiceIndex(view), random.Random(2)
    drawn, chosen = Counter[bytes](), Counter[bytes]()
    fallbacks = 0
    for _ in range(500):
        listed = shortlist(index, SERVICE, 1.0, ledger, rng, exclude=excluded)
        if len(listed) > 2:  # eight draws missed (60 % are banned): every live host, filtered
            fallbacks += 1  # by choose
        else:
            drawn.update(c.node for c in listed)
        chosen[pick(index, SERVICE, listed, 1.0, ledger, rng, exclude=excluded).node] += 1
    banned = {node(i) for i in range(10, 40)}
    assert drawn and not banned & set(drawn)
    assert not banned & set(chosen)
    assert fallbacks < 50


def test_draws_follow_capacity() -> None:
    """Node 1 has 4 slots (weight 4^1.5 = 8), the other 19 remote hosts one each."""
    view = mesh(21, slots={1: 4})
    index, ledger, rng = ServiceIndex(view), InFlightLedger(), random.Random(3)
    drawn = Counter[bytes]()
    rounds = 20_000
    for _ in range(rounds):
        remote = [c for c in shortlist(index, SERVICE, 1.0, ledger, rng) if not c.is_local]
        drawn[remote[0].node] += 1
    share = drawn[node(1)] / rounds
    assert abs(share - 8 / (8 + 19)) < 0.02  # weights of the remote hosts: 8 and 19 x 1


def test_when_almost_everyone_is_gone_the_one_left_is_still_found() -> None:
    view = mesh(200)
    view.dead = frozenset(node(i) for i in range(1, 200) if i != 137)
    local_full = InFlightLedger()
    for r in range(5):
        local_full.sent(node(0), SERVICE, bytes([r]), 0.5)
    index, rng = ServiceIndex(view), random.Random(4)
    listed = shortlist(index, SERVICE, 1.0, local_full, rng)  # falls back to every live host
    choice = pick(index, SERVICE, listed, 1.0, local_full, rng)
    assert choice.node == node(137)
    view.dead = frozenset(node(i) for i in range(1, 200))
    with pytest.raises(NoCapacity):
        pick(index, SERVICE, shortlist(index, SERVICE, 1.0, local_full, rng), 1.0, local_full, rng)


def test_a_reported_service_time_reaches_the_candidate_and_the_weights() -> None:
    """Records carry a service time only as first measured; replies and load reports carry it
    from then on, and the scheduler uses the newest."""
    view = mesh(21)
    view.observe_load(node(5), SERVICE, 0, 0, 2.0, service_ms=500.0)
    (five,) = candidates(view, SERVICE, 2.0, only=node(5))
    assert five.ewma_service_ms == 500.0
    view.observe_load(node(5), SERVICE, 1, 0, 3.0)  # a reply without one keeps the last told
    (five,) = candidates(view, SERVICE, 3.0, only=node(5))
    assert five.ewma_service_ms == 500.0 and five.gossip_queue_depth == 1
    index, ledger, rng = ServiceIndex(view), InFlightLedger(), random.Random(5)
    drawn = Counter[bytes]()
    for _ in range(4_000):
        drawn.update(c.node for c in shortlist(index, SERVICE, 3.0, ledger, rng) if not c.is_local)
    assert drawn[node(5)] < 4_000 / 20 / 4  # ten times slower: drawn about a tenth as often
