"""The exhaustive placement optimum for small meshes, the yardstick of ``place`` (no I/O).

Tries every subset of nodes for every model (exponential: meant for a handful of nodes and
models, in tests and ``benchmarks/placement.py``) and returns the most replicas that can be
placed within memory, on distinct nodes, around the pairs given as fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

from llmnode.nodes.placement.assign import Demand, NodeCapacity


def best_placed(
    nodes: Sequence[NodeCapacity],
    demands: Sequence[Demand],
    fixed: Iterable[tuple[str, str]] = (),
) -> int:
    """The most replicas (fixed ones included) any valid assignment places."""
    left = {node.node: node.memory_mb for node in nodes}
    footprint = {demand.model: demand.footprint_mb for demand in demands}
    held: dict[str, set[str]] = {demand.model: set() for demand in demands}
    for model, node in fixed:
        if model in held and node in left:
            held[model].add(node)
            left[node] -= footprint[model]
    if any(value < 0 for value in left.values()):
        return -1  # the fixed pairs alone do not fit
    order = list(demands)
    ids = [node.node for node in nodes]
    best = -1

    def explore(index: int, placed: int) -> None:
        nonlocal best
        if index == len(order):
            best = max(best, placed)
            return
        if placed + sum(d.replicas for d in order[index:]) <= best:  # cannot do better
            return
        demand = order[index]
        have = held[demand.model]
        free = [node for node in ids if node not in have and left[node] >= demand.footprint_mb]
        room = max(0, demand.replicas - len(have))
        for size in range(min(room, len(free)), -1, -1):
            for chosen in combinations(free, size):
                if any(left[node] < demand.footprint_mb for node in chosen):
                    continue
                for node in chosen:
                    left[node] -= demand.footprint_mb
                explore(index + 1, placed + min(len(have), demand.replicas) + size)
                for node in chosen:
                    left[node] += demand.footprint_mb

    explore(0, 0)
    return max(best, 0)
