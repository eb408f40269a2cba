"""The exhaustive placement optimum for small meshes, the yardstick of ``place`` (no I/O).

Tries every subset of nodes for every model (exponential: meant for a handful of nodes and
models, in tests and ``benchmarks/placement.py``) within memory, on distinct nodes, around the
pairs given as fixed, and returns the best by ``place``'s objective: first the number of models
with at least one replica, then the number of replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

from llmnode.nodes.placement.assign import Demand, NodeCapacity


def optimum(
    nodes: Sequence[NodeCapacity],
    demands: Sequence[Demand],
    fixed: Iterable[tuple[str, str]] = (),
    *,
    served_first: bool = True,
) -> tuple[int, int]:
    """(models served, replicas placed) of the best assignment; with ``served_first=False``
    the most replicas regardless of how many models they serve (served is then 0)."""
    left = {node.node: node.memory_mb for node in nodes}
    footprint = {demand.model: demand.footprint_mb for demand in demands}
    held: dict[str, set[str]] = {demand.model: set() for demand in demands}
    for model, node in fixed:
        if model in held and node in left:
            held[model].add(node)
            left[node] -= footprint[model]
    if any(value < 0 for value in left.values()):
        return (-1, -1)  # the fixed pairs alone do not fit
    order = list(demands)
    ids = [node.node for node in nodes]
    best = (-1, -1)

    def explore(index: int, served: int, placed: int) -> None:
        nonlocal best
        if index == len(order):
            best = max(best, (served if served_first else 0, placed))
            return
        rest = order[index:]
        bound = (served + len(rest) if served_first else 0, placed + sum(d.replicas for d in rest))
        if bound <= best:
            return
        demand = order[index]
        have = held[demand.model]
        free = [node for node in ids if node not in have and left[node] >= demand.footprint_mb]
        room = max(0, demand.replicas - len(have))
        for size in range(min(room, len(free)), -1, -1):
            for chosen in combinations(free, size):
                for node in chosen:
                    left[node] -= demand.footprint_mb
                count = min(len(have), demand.replicas) + size
                explore(index + 1, served + (count > 0), placed + count)
                for node in chosen:
                    left[node] += demand.footprint_mb

    explore(0, 0, 0)
    return best


def best_placed(
    nodes: Sequence[NodeCapacity],
    demands: Sequence[Demand],
    fixed: Iterable[tuple[str, str]] = (),
) -> int:
    """The most replicas (fixed ones included) any valid assignment places."""
    return max(0, optimum(nodes, demands, fixed, served_first=False)[1])
