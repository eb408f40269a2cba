"""What one node does to follow an assignment: fetch, load, unload (no I/O).

The node's placement loop calls :func:`reconcile` after each change of the view or of the
deployments, then carries the actions out (a pull over the mesh, loading a model, unloading one)
and advertises a replica only once it is loaded and warm. Rules:

- fetch: a model assigned here and not in the store, from the nodes that hold it, those not
  serving it first (their links are not carrying requests), then by a rendezvous hash of
  (model, this node, holder), so many fetchers spread over the holders;
- unload, make before break: a model loaded here and no longer assigned (and not pinned) is
  unloaded once the mesh has as many replicas of it loaded elsewhere as it is assigned, or at
  once when it is no longer deployed;
- load: a model assigned here, in the store, once the memory it needs is free, counting the
  unloads of this round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmnode.nodes.placement.assign import Assignment, NodeCapacity, rendezvous


@dataclass(frozen=True, slots=True)
class Actions:
    fetch: Mapping[str, tuple[str, ...]]  # model -> holders to try, in order
    load: tuple[str, ...]
    unload: tuple[str, ...]
    waiting: tuple[str, ...]  # assigned, in the store, but the memory is not free yet


def reconcile(
    me: str,
    assignment: Assignment,
    nodes: Sequence[NodeCapacity],
    footprints: Mapping[str, int],
    loaded_mb: Mapping[str, int],
    deployed: frozenset[str],
) -> Actions:
    """This node's actions. ``loaded_mb``: what each model loaded here uses now."""
    by_id = {node.node: node for node in nodes}
    own = by_id[me]
    assigned = assignment.models_on(me)
    unload: list[str] = []
    for model in sorted(own.loaded - assigned - own.pinned):
        elsewhere = sum(1 for n in nodes if n.node != me and model in n.loaded)
        if model not in deployed or elsewhere >= len(assignment.nodes_for(model)):
            unload.append(model)
    free = own.memory_mb - sum(
        mb for model, mb in loaded_mb.items() if model in own.loaded and model not in unload
    )
    fetch: dict[str, tuple[str, ...]] = {}
    load: list[str] = []
    waiting: list[str] = []
    for model in sorted(assigned - own.loaded):
        if model not in own.stored:
            holders = [n for n in nodes if n.node != me and model in n.stored]
            holders.sort(key=lambda n: (model in n.loaded, -rendezvous(model, f"{me}\x00{n.node}")))
            fetch[model] = tuple(n.node for n in holders)
        elif footprints.get(model, 0) <= free:
            load.append(model)
            free -= footprints.get(model, 0)
        else:
            waiting.append(model)
    return Actions(fetch=fetch, load=tuple(load), unload=tuple(unload), waiting=tuple(waiting))
