"""`llmnode peers` shows a peer's load as fresh as this node knows it, or says it is not known
(load is not gossiped: the record's queue and in-flight counts are those of when it was signed)."""

from __future__ import annotations

from llmnode.cli.node import load_text
from llmnode.nodes.mesh.reports import peer_load
from llmnode.nodes.mesh.view import MeshView
from llmnode.schemas.state import NodeState, Resources, ServiceInfo, ServiceLoad

MODEL = "model:tiny"
PEER = bytes(range(32))


def record(queue: int, in_flight: int) -> NodeState:
    load = ServiceLoad(queue_depth=queue, in_flight=in_flight, ewma_service_ms=120.0)
    return NodeState(
        node_id="peer",
        name="peer",
        endpoints=["tcp://127.0.0.1:1"],
        version="0",
        started_at=0.0,
        resources=Resources(cpu_cores=2, ram_total_mb=1024, ram_free_mb=512),
        services=[ServiceInfo(name=MODEL, kind="model", load=load)],
    )


def view_with_peer(state: NodeState) -> MeshView:
    view = MeshView(bytes(32), "self")
    view.set_record(PEER, "peer", state, 1, 100.0)
    return view


def test_a_peer_never_heard_from_shows_load_not_known_not_the_records_stale_counts() -> None:
    state = record(queue=7, in_flight=3)  # as signed, long ago
    load = peer_load(view_with_peer(state), PEER, state, 500.0)
    assert load == {MODEL: {"queue": None, "in_flight": None, "service_ms": 120.0, "age_s": None}}
    assert load_text(load[MODEL]) == "load not known ~120.0ms"


def test_load_seen_on_replies_is_shown_with_its_age() -> None:
    state = record(queue=7, in_flight=3)
    view = view_with_peer(state)
    view.observe_load(PEER, MODEL, 1, 2, 490.0)
    load = peer_load(view, PEER, state, 500.0)
    assert load == {MODEL: {"queue": 1, "in_flight": 2, "service_ms": 120.0, "age_s": 10.0}}
    assert load_text(load[MODEL]) == "q1 f2 10s ago ~120.0ms"


def test_this_nodes_own_load_is_live_and_has_no_age_in_the_table() -> None:
    assert (
        load_text({"queue": 0, "in_flight": 1, "service_ms": 5.0, "age_s": 0.0}) == "q0 f1 ~5.0ms"
    )
