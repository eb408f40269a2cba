"""The pure placement function: which nodes serve which model, from memory and holdings (no I/O).

``place(nodes, deployments, previous)`` returns an :class:`Assignment`, the same on every node
that sees the same inputs. Rules, in order of precedence:

1. A node is never given more model footprint than its memory for models (pinned replicas, from
   ``--model``, are facts: they count against the node's memory and toward the replica count).
2. The replicas of one model are on distinct nodes.
3. Stability: every replica of ``previous`` or already loaded (the ``loaded`` sets every node
   gossips, so nodes agree on them) on a node still alive is kept while it fits, so when a node
   dies only the replicas it held move, and a joining node moves nothing. This is the "bounded
   loads" half of consistent hashing, with what is loaded as the ring. The one exception: a
   replica moves when that lets a model with no replica get one.
4. New replicas go first to nodes that already have the model loaded, then to nodes holding its
   files (no transfer), then to the node with the most memory left; ties are broken by a
   rendezvous hash of (model, node), so the choice is spread and does not depend on order.

Greedy first-fit-decreasing misses some packings; when it leaves a replica unplaced, a bounded
branch-and-bound search (deterministic, same preference order, :data:`SEARCH_BUDGET` steps)
looks for the assignment placing the most replicas around the kept ones; on small meshes it
finds as many as the exhaustive optimum (:mod:`llmnode.nodes.placement.optimum`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SEARCH_BUDGET = 20_000  # backtracking steps before giving up on a full assignment


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """One alive node as placement sees it."""

    node: str  # node id (base32 text); the hash tie-break uses it
    memory_mb: int  # memory this node can give to models (loaded ones included)
    stored: frozenset[str] = frozenset()  # models in its store
    loaded: frozenset[str] = frozenset()  # models it has loaded now
    pinned: frozenset[str] = frozenset()  # models it was started with (--model): always kept


@dataclass(frozen=True, slots=True)
class Demand:
    """One deployment as placement sees it: ``replicas`` already resolved (auto included)."""

    model: str
    replicas: int
    footprint_mb: int


@dataclass(frozen=True, slots=True)
class Assignment:
    """Model -> the nodes that should serve it (sorted), and what could not be placed."""

    replicas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unplaced: Mapping[str, int] = field(default_factory=dict)  # model -> replicas missing

    def nodes_for(self, model: str) -> tuple[str, ...]:
        return self.replicas.get(model, ())

    def models_on(self, node: str) -> frozenset[str]:
        return frozenset(model for model, nodes in self.replicas.items() if node in nodes)

    def pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset((model, node) for model, nodes in self.replicas.items() for node in nodes)


def moves(before: Assignment, after: Assignment) -> int:
    """Replicas in ``after`` that ``before`` did not have (each one is a load, maybe a copy)."""
    return len(after.pairs() - before.pairs())


@functools.lru_cache(maxsize=1 << 16)
def rendezvous(model: str, node: str) -> int:
    """Highest-random-weight hash of (model, node): the deterministic tie-break."""
    digest = hashlib.blake2b(f"{model}\x00{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class _Plan:
    """Memory left per node and replicas chosen so far, while placing."""

    def __init__(self, nodes: Sequence[NodeCapacity]) -> None:
        self.left = {node.node: node.memory_mb for node in nodes}
        self.chosen: dict[str, list[str]] = {}

    def fits(self, node: str, demand: Demand) -> bool:
        return self.left[node] >= demand.footprint_mb and node not in self.chosen.get(
            demand.model, ()
        )

    def add(self, node: str, demand: Demand) -> None:
        self.left[node] -= demand.footprint_mb
        self.chosen.setdefault(demand.model, []).append(node)

    def remove(self, node: str, demand: Demand) -> None:
        self.left[node] += demand.footprint_mb
        self.chosen[demand.model].remove(node)

    def count(self, model: str) -> int:
        return len(self.chosen.get(model, ()))


def _order(deployments: Iterable[Demand]) -> list[Demand]:
    """Largest first (first-fit decreasing), then by name: the same order on every node."""
    merged: dict[str, Demand] = {}
    for demand in deployments:
        if demand.replicas > 0:
            merged[demand.model] = demand
    return sorted(merged.values(), key=lambda d: (-d.footprint_mb, d.model))


def _preference(
    demand: Demand, node: NodeCapacity, left: int, previous: frozenset[str]
) -> tuple[int, int, int, int, int]:
    return (
        node.node in previous,
        demand.model in node.loaded,
        demand.model in node.stored,
        left,
        rendezvous(demand.model, node.node),
    )


def place(
    nodes: Iterable[NodeCapacity],
    deployments: Iterable[Demand],
    previous: Assignment | None = None,
) -> Assignment:
    """The assignment of every deployment to nodes (see the module docstring)."""
    alive = sorted(nodes, key=lambda n: n.node)
    by_id = {node.node: node for node in alive}
    demands = _order(deployments)
    plan = _Plan(alive)
    before = previous.replicas if previous is not None else {}

    # 1. Pinned replicas are facts. They count toward their deployment's replicas.
    wanted = {demand.model: demand for demand in demands}
    for node in alive:
        for model in sorted(node.pinned):
            if model in wanted and plan.fits(node.node, wanted[model]):
                plan.add(node.node, wanted[model])
            elif model in wanted:  # pinned beyond its memory: still served, nothing else there
                plan.left[node.node] = min(plan.left[node.node], 0)
                plan.chosen.setdefault(model, []).append(node.node)
    pinned_pairs = _pairs(plan)

    # 2. Keep what is there: previous replicas and loaded models on nodes still alive.
    for demand in demands:
        kept = {n for n in before.get(demand.model, ()) if n in by_id}
        kept |= {n.node for n in alive if demand.model in n.loaded}
        ranked = sorted(
            kept,
            key=lambda n: _preference(demand, by_id[n], 0, frozenset(before.get(demand.model, ()))),
            reverse=True,
        )
        for node_id in ranked:
            if plan.count(demand.model) >= demand.replicas:
                break
            if plan.fits(node_id, demand):
                plan.add(node_id, demand)

    kept_pairs = _pairs(plan)
    # 3. Fill the rest greedily, by preference.
    for demand in demands:
        _fill(plan, demand, alive, frozenset())

    if _short(plan, demands, len(alive)):
        # Keep every replica already placed and place the most around them. Moving a replica
        # (a transfer and a load elsewhere) is worth it only to serve a model that would
        # otherwise have none.
        stable = _search(alive, demands, kept_pairs, before, kept_pairs)
        if (_served(stable), _total(stable)) > (_served(plan), _total(plan)):
            plan = stable
        if _served(plan) < len(demands):
            free = _search(alive, demands, pinned_pairs, before, kept_pairs)
            if _served(free) > _served(plan):
                plan = free
    return _result(plan, demands)


def _pairs(plan: _Plan) -> set[tuple[str, str]]:
    return {(model, node) for model, nodes in plan.chosen.items() for node in nodes}


def _short(plan: _Plan, demands: Sequence[Demand], alive: int) -> bool:
    return any(plan.count(d.model) < min(d.replicas, alive) for d in demands)


def _fill(
    plan: _Plan, demand: Demand, alive: Sequence[NodeCapacity], previous: frozenset[str]
) -> None:
    while plan.count(demand.model) < demand.replicas:
        options = [node for node in alive if plan.fits(node.node, demand)]
        if not options:
            return
        best = max(options, key=lambda n: _preference(demand, n, plan.left[n.node], previous))
        plan.add(best.node, demand)


def _search(
    alive: Sequence[NodeCapacity],
    demands: Sequence[Demand],
    fixed: set[tuple[str, str]],
    before: Mapping[str, tuple[str, ...]],
    keep: set[tuple[str, str]],
) -> _Plan:
    """The best plan around ``fixed`` found by bounded branch and bound: most models served,
    then most of the ``keep`` pairs kept, then most replicas (preferred nodes tried first)."""
    plan = _Plan(alive)
    for model, node_id in sorted(fixed):
        demand = next(d for d in demands if d.model == model)
        if plan.fits(node_id, demand):
            plan.add(node_id, demand)
        else:
            plan.left[node_id] = min(plan.left[node_id], 0)
            plan.chosen.setdefault(model, []).append(node_id)
    slots: list[Demand] = []
    for demand in demands:
        slots += [demand] * max(0, min(demand.replicas, len(alive)) - plan.count(demand.model))
    next_model = [len(slots)] * len(slots)  # index of the first slot of the next model
    for index in range(len(slots) - 2, -1, -1):
        same = slots[index + 1].model == slots[index].model
        next_model[index] = next_model[index + 1] if same else index + 1
    ranked = {
        demand.model: sorted(
            alive,
            key=lambda n: _preference(
                demand, n, n.memory_mb, frozenset(before.get(demand.model, ()))
            ),
            reverse=True,
        )
        for demand in demands
    }
    later = [frozenset(d.model for d in slots[index:]) for index in range(len(slots) + 1)]
    keep_later = [sum(1 for m, _ in keep if m in models) for models in later]
    best: tuple[tuple[int, int, int], dict[str, list[str]]] = ((-1, -1, -1), {})
    steps = 0

    def solve(index: int, floor: int, placed: int, kept: int) -> bool:
        """Explore from slot ``index``; True stops the search (nothing better can exist)."""
        nonlocal steps, best
        served = sum(1 for nodes in plan.chosen.values() if nodes)
        if (served, kept, placed) > best[0]:
            best = ((served, kept, placed), {m: list(ns) for m, ns in plan.chosen.items()})
        if index == len(slots):
            return placed == len(slots) and keep <= _pairs(plan)
        unserved = sum(1 for model in later[index] if not plan.chosen.get(model))
        bound = (served + unserved, kept + keep_later[index], placed + len(slots) - index)
        if bound <= best[0] or steps > SEARCH_BUDGET:
            return False
        demand = slots[index]
        order = ranked[demand.model]
        same_next = next_model[index] > index + 1
        for position in range(floor, len(order)):
            steps += 1
            node_id = order[position].node
            if not plan.fits(node_id, demand):
                continue
            plan.add(node_id, demand)
            gained = (demand.model, node_id) in keep
            found = solve(index + 1, position + 1 if same_next else 0, placed + 1, kept + gained)
            plan.remove(node_id, demand)
            if found:
                return True
        # Or leave this and the model's remaining slots empty.
        return solve(next_model[index], 0, placed, kept)

    solve(0, 0, 0, sum(1 for pair in _pairs(plan) if pair in keep))
    result = _Plan(alive)
    for model, nodes in best[1].items():
        demand = next(d for d in demands if d.model == model)
        for node_id in nodes:
            result.left[node_id] -= demand.footprint_mb
            result.chosen.setdefault(model, []).append(node_id)
    return result


def _served(plan: _Plan) -> int:
    return sum(1 for nodes in plan.chosen.values() if nodes)


def _total(plan: _Plan) -> int:
    return sum(len(nodes) for nodes in plan.chosen.values())


def _result(plan: _Plan, demands: Sequence[Demand]) -> Assignment:
    replicas = {model: tuple(sorted(nodes)) for model, nodes in plan.chosen.items() if nodes}
    unplaced = {
        d.model: d.replicas - plan.count(d.model)
        for d in demands
        if plan.count(d.model) < d.replicas
    }
    return Assignment(replicas=replicas, unplaced=unplaced)
