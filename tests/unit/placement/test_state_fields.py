"""The placement fields of NodeState are last and have defaults: a record from a node that
predates them still decodes, and one that has them round-trips."""

from __future__ import annotations

import msgspec

from llmnode.schemas.state import NodeState, Resources

RESOURCES = Resources(cpu_cores=2, ram_total_mb=4096, ram_free_mb=2048)


class OldNodeState(msgspec.Struct, frozen=True, kw_only=True):
    """NodeState as nodes before placement wrote it."""

    node_id: str
    name: str
    endpoints: list[str]
    version: str
    started_at: float
    resources: Resources
    api_keys: list[str] = []


def test_a_record_without_the_placement_fields_decodes_with_their_defaults() -> None:
    old = OldNodeState(
        node_id="n",
        name="old",
        endpoints=["tcp://x"],
        version="0.1",
        started_at=1.0,
        resources=RESOURCES,
    )
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=NodeState)
    assert (state.models_stored, state.models_pinned, state.model_memory_mb) == ([], [], 0)


def test_the_placement_fields_round_trip() -> None:
    state = NodeState(
        node_id="n",
        name="new",
        endpoints=[],
        version="0.2",
        started_at=1.0,
        resources=RESOURCES,
        models_stored=["a", "b"],
        models_pinned=["a"],
        model_memory_mb=3000,
    )
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=NodeState)
    assert again == state
