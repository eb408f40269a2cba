"""Properties of ``place`` over random small meshes, checked against the exhaustive optimum."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from llmnode.nodes.placement.assign import Assignment, Demand, NodeCapacity, moves, place
from llmnode.nodes.placement.optimum import best_placed, optimum

MODELS = ["alpha", "beta", "gamma", "delta"]


@st.composite
def meshes(draw: st.DrawFn) -> tuple[list[NodeCapacity], list[Demand]]:
    count = draw(st.integers(1, 5))
    demands = [
        Demand(model=model, replicas=draw(st.integers(1, 3)), footprint_mb=draw(st.integers(1, 6)))
        for model in MODELS[: draw(st.integers(1, len(MODELS)))]
    ]
    nodes = []
    for index in range(count):
        memory = draw(st.integers(0, 12))
        stored = draw(st.frozensets(st.sampled_from(MODELS)))
        pinned: set[str] = set()
        used = 0
        for demand in demands:  # a pinned replica the node has room for, now and then
            if draw(st.booleans()) and draw(st.booleans()) and used + demand.footprint_mb <= memory:
                pinned.add(demand.model)
                used += demand.footprint_mb
        nodes.append(
            NodeCapacity(
                node=f"node{index}",
                memory_mb=memory,
                stored=stored,
                loaded=frozenset(pinned),
                pinned=frozenset(pinned),
            )
        )
    return nodes, demands


def pinned_pairs(nodes: list[NodeCapacity]) -> set[tuple[str, str]]:
    return {(model, node.node) for node in nodes for model in node.pinned}


def served_best(
    nodes: list[NodeCapacity], demands: list[Demand], fixed: Iterable[tuple[str, str]] = ()
) -> int:
    """The most models any assignment gives at least one replica, around ``fixed``."""
    return best_placed(nodes, [replace(d, replicas=1) for d in demands], fixed)


def check_valid(nodes: list[NodeCapacity], demands: list[Demand], result: Assignment) -> None:
    footprint = {d.model: d.footprint_mb for d in demands}
    by_id = {n.node: n for n in nodes}
    for node in nodes:
        used = sum(footprint[model] for model in result.models_on(node.node))
        assert used <= node.memory_mb, f"{node.node} over its memory"
        for model in result.models_on(node.node):
            assert footprint[model] <= node.memory_mb
    for model, assigned in result.replicas.items():
        assert len(set(assigned)) == len(assigned), "two replicas on one node"
        assert all(node_id in by_id for node_id in assigned)
        pinned = sum(1 for node in nodes if model in node.pinned)  # facts, even beyond the count
        assert len(assigned) <= max(pinned, next(d.replicas for d in demands if d.model == model))
    for model, node_id in pinned_pairs(nodes):
        assert node_id in result.nodes_for(model), "a pinned replica was dropped"


@settings(max_examples=300, deadline=None)
@given(meshes())
def test_place_never_exceeds_memory_and_keeps_replicas_on_distinct_nodes(
    mesh: tuple[list[NodeCapacity], list[Demand]],
) -> None:
    nodes, demands = mesh
    check_valid(nodes, demands, place(nodes, demands))


@settings(max_examples=300, deadline=None)
@given(meshes())
def test_place_meets_every_replica_count_whenever_the_optimum_does(
    mesh: tuple[list[NodeCapacity], list[Demand]],
) -> None:
    nodes, demands = mesh
    result = place(nodes, demands)
    wanted = sum(min(d.replicas, len(nodes)) for d in demands)
    if best_placed(nodes, demands, pinned_pairs(nodes)) == wanted:
        assert all(len(result.nodes_for(d.model)) >= min(d.replicas, len(nodes)) for d in demands)


@settings(max_examples=300, deadline=None)
@given(meshes(), st.data())
def test_after_one_node_dies_only_the_replicas_it_held_move(
    mesh: tuple[list[NodeCapacity], list[Demand]], data: st.DataObject
) -> None:
    nodes, demands = mesh
    before = place(nodes, demands)
    dead = data.draw(st.sampled_from(nodes)).node
    rest = [node for node in nodes if node.node != dead]
    after = place(rest, demands, previous=before)
    check_valid(rest, demands, after)
    survivors = {(m, n) for m, n in before.pairs() if n != dead}
    lost = {m for m, n in before.pairs() if n == dead}
    if served_best(rest, demands, survivors) == served_best(rest, demands):
        # Keeping every survivor leaves no model without a replica: nothing else moves.
        assert survivors <= after.pairs()
        new = after.pairs() - before.pairs()
        assert {model for model, _ in new} <= lost
        assert len(new) <= sum(1 for _, n in before.pairs() if n == dead)


@settings(max_examples=200, deadline=None)
@given(meshes())
def test_a_joining_node_moves_nothing_unless_that_completes_a_deployment(
    mesh: tuple[list[NodeCapacity], list[Demand]],
) -> None:
    nodes, demands = mesh
    if len(nodes) < 2:
        return
    # The joiner comes empty (a node started with --model brings its pinned replica with it).
    nodes = [*nodes[:-1], replace(nodes[-1], loaded=frozenset(), pinned=frozenset())]
    before = place(nodes[:-1], demands)
    after = place(nodes, demands, previous=before)
    if served_best(nodes, demands, before.pairs()) == served_best(nodes, demands):
        assert before.pairs() <= after.pairs()
    if not before.unplaced:
        assert after == before


@settings(max_examples=200, deadline=None)
@given(meshes(), st.randoms(use_true_random=False))
def test_place_gives_the_same_answer_whatever_the_input_order(
    mesh: tuple[list[NodeCapacity], list[Demand]], rng: object
) -> None:
    nodes, demands = mesh
    shuffled_nodes, shuffled_demands = list(nodes), list(demands)
    rng.shuffle(shuffled_nodes)  # type: ignore[attr-defined]
    rng.shuffle(shuffled_demands)  # type: ignore[attr-defined]
    assert place(nodes, demands) == place(shuffled_nodes, shuffled_demands)
    first = place(nodes, demands)
    assert moves(first, place(shuffled_nodes, shuffled_demands, previous=first)) == 0


@settings(max_examples=300, deadline=None)
@given(meshes())
def test_place_matches_the_exhaustive_optimum_on_small_meshes(
    mesh: tuple[list[NodeCapacity], list[Demand]],
) -> None:
    """As many models served as possible, then as many replicas."""
    nodes, demands = mesh
    result = place(nodes, demands)
    wanted = {d.model: d.replicas for d in demands}
    placed = sum(min(len(result.nodes_for(m)), r) for m, r in wanted.items())
    served = sum(1 for m in wanted if result.nodes_for(m))
    assert (served, placed) == optimum(nodes, demands, pinned_pairs(nodes))
