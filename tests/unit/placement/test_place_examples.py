"""``place`` on hand-made meshes: preferences, pinned replicas and memory limits."""

from __future__ import annotations

from llmnode.nodes.placement.assign import Demand, NodeCapacity, place

SMOLLM = Demand(model="smollm2", replicas=2, footprint_mb=700)


def test_a_node_whose_memory_is_below_the_footprint_is_never_assigned_the_model() -> None:
    nodes = [
        NodeCapacity(node="small", memory_mb=699, stored=frozenset({"smollm2"})),
        NodeCapacity(node="big", memory_mb=4000),
    ]
    result = place(nodes, [SMOLLM])
    assert result.nodes_for("smollm2") == ("big",)
    assert result.unplaced == {"smollm2": 1}


def test_nodes_holding_the_model_in_their_store_are_preferred() -> None:
    nodes = [
        NodeCapacity(node="a", memory_mb=8000),
        NodeCapacity(node="b", memory_mb=1000, stored=frozenset({"smollm2"})),
        NodeCapacity(node="c", memory_mb=8000),
        NodeCapacity(node="d", memory_mb=1000, stored=frozenset({"smollm2"})),
    ]
    assert place(nodes, [SMOLLM]).nodes_for("smollm2") == ("b", "d")


def test_without_holders_the_node_with_most_memory_left_is_chosen() -> None:
    nodes = [
        NodeCapacity(node="a", memory_mb=2000),
        NodeCapacity(node="b", memory_mb=9000),
        NodeCapacity(node="c", memory_mb=5000),
    ]
    assert place(nodes, [SMOLLM]).nodes_for("smollm2") == ("b", "c")


def test_pinned_replicas_count_toward_the_replica_count() -> None:
    nodes = [
        NodeCapacity(
            node="pinned",
            memory_mb=1000,
            loaded=frozenset({"smollm2"}),
            pinned=frozenset({"smollm2"}),
        ),
        NodeCapacity(node="x", memory_mb=9000, stored=frozenset({"smollm2"})),
        NodeCapacity(node="y", memory_mb=9000, stored=frozenset({"smollm2"})),
    ]
    result = place(nodes, [SMOLLM])
    assert "pinned" in result.nodes_for("smollm2")
    assert len(result.nodes_for("smollm2")) == 2


def test_backtracking_finds_the_packing_first_fit_decreasing_misses() -> None:
    # FFD puts the 5 on the node of 8, leaving 3+3 and 4+4 no room; the packing exists.
    nodes = [NodeCapacity(node="p", memory_mb=8), NodeCapacity(node="q", memory_mb=10)]
    demands = [
        Demand(model="five", replicas=1, footprint_mb=5),
        Demand(model="four", replicas=2, footprint_mb=4),
        Demand(model="three", replicas=1, footprint_mb=3),
    ]
    result = place(nodes, demands)
    assert not result.unplaced
    assert len(result.nodes_for("four")) == 2


def test_undeployed_models_are_not_placed() -> None:
    nodes = [NodeCapacity(node="a", memory_mb=9000, loaded=frozenset({"smollm2"}))]
    assert place(nodes, [Demand(model="smollm2", replicas=0, footprint_mb=700)]).replicas == {}


def test_serving_one_more_model_beats_one_more_replica_of_another() -> None:
    # Four replicas of x and w fit (two each); y then finds no room. Serving y is worth more.
    nodes = [NodeCapacity(node="a", memory_mb=3), NodeCapacity(node="b", memory_mb=3)]
    demands = [
        Demand(model="x", replicas=2, footprint_mb=1),
        Demand(model="w", replicas=2, footprint_mb=1),
        Demand(model="y", replicas=1, footprint_mb=3),
    ]
    result = place(nodes, demands)
    assert len(result.nodes_for("y")) == 1
    assert len(result.nodes_for("x")) + len(result.nodes_for("w")) == 2
