"""One node's actions toward an assignment: fetch from holders, make before break, memory."""

from __future__ import annotations

from llmnode.nodes.placement.assign import Assignment, Demand, NodeCapacity, place
from llmnode.nodes.placement.reconcile import reconcile

SMOLLM = "smollm2"


def test_a_node_assigned_a_model_it_lacks_fetches_it_from_holders_idle_ones_first() -> None:
    nodes = [
        NodeCapacity(
            node="a", memory_mb=1000, stored=frozenset({SMOLLM}), loaded=frozenset({SMOLLM})
        ),
        NodeCapacity(node="b", memory_mb=1000, stored=frozenset({SMOLLM})),
        NodeCapacity(node="c", memory_mb=9000),
    ]
    assignment = Assignment(replicas={SMOLLM: ("a", "c")})
    actions = reconcile("c", assignment, nodes, {SMOLLM: 700}, {}, frozenset({SMOLLM}))
    assert actions.fetch == {SMOLLM: ("b", "a")}  # b holds it and serves nothing
    assert actions.load == ()


def test_once_stored_the_model_loads_when_its_memory_is_free() -> None:
    me = NodeCapacity(
        node="c", memory_mb=1000, stored=frozenset({SMOLLM, "old"}), loaded=frozenset({"old"})
    )
    assignment = Assignment(replicas={SMOLLM: ("c",), "old": ("c",)})
    waiting = reconcile(
        "c", assignment, [me], {SMOLLM: 700, "old": 400}, {"old": 400}, frozenset({SMOLLM, "old"})
    )
    assert waiting.load == () and waiting.waiting == (SMOLLM,)
    assignment = Assignment(replicas={SMOLLM: ("c",)})
    ready = reconcile("c", assignment, [me], {SMOLLM: 700}, {"old": 400}, frozenset({SMOLLM}))
    assert ready.unload == ("old",)  # undeployed: at once, and its memory counts this round
    assert ready.load == (SMOLLM,)


def test_a_moved_replica_is_unloaded_only_once_its_replacement_serves() -> None:
    before = [
        NodeCapacity(
            node="a", memory_mb=1000, stored=frozenset({SMOLLM}), loaded=frozenset({SMOLLM})
        ),
        NodeCapacity(node="b", memory_mb=1000, stored=frozenset({SMOLLM})),
    ]
    assignment = Assignment(replicas={SMOLLM: ("b",)})
    deployed = frozenset({SMOLLM})
    assert reconcile("a", assignment, before, {SMOLLM: 700}, {SMOLLM: 700}, deployed).unload == ()
    after = [
        before[0],
        NodeCapacity(
            node="b", memory_mb=1000, stored=frozenset({SMOLLM}), loaded=frozenset({SMOLLM})
        ),
    ]
    assert reconcile("a", assignment, after, {SMOLLM: 700}, {SMOLLM: 700}, deployed).unload == (
        SMOLLM,
    )


def test_pinned_models_are_never_unloaded() -> None:
    me = NodeCapacity(
        node="a", memory_mb=1000, loaded=frozenset({SMOLLM}), pinned=frozenset({SMOLLM})
    )
    actions = reconcile("a", Assignment(), [me], {SMOLLM: 700}, {SMOLLM: 700}, frozenset())
    assert actions.unload == ()


def test_following_place_after_a_death_fetches_on_the_new_node_only() -> None:
    nodes = [
        NodeCapacity(
            node="a", memory_mb=1000, stored=frozenset({SMOLLM}), loaded=frozenset({SMOLLM})
        ),
        NodeCapacity(
            node="b", memory_mb=1000, stored=frozenset({SMOLLM}), loaded=frozenset({SMOLLM})
        ),
        NodeCapacity(node="c", memory_mb=1000),
    ]
    demand = [Demand(model=SMOLLM, replicas=2, footprint_mb=700)]
    first = place(nodes, demand)
    assert first.nodes_for(SMOLLM) == ("a", "b")
    rest = [nodes[0], nodes[2]]  # b died
    second = place(rest, demand, previous=first)
    assert second.nodes_for(SMOLLM) == ("a", "c")
    deployed = frozenset({SMOLLM})
    assert reconcile("c", second, rest, {SMOLLM: 700}, {}, deployed).fetch == {SMOLLM: ("a",)}
    quiet = reconcile("a", second, rest, {SMOLLM: 700}, {SMOLLM: 700}, deployed)
    assert (quiet.fetch, quiet.load, quiet.unload) == ({}, (), ())
