"""Deployment records: signed by their issuer, verified, newest version wins, in any order."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from llmnode.bus.identity import Identity
from llmnode.errors import Rejected
from llmnode.nodes.mesh.records import sign_record
from llmnode.nodes.placement.assign import Demand
from llmnode.nodes.placement.deployments import (
    Deployments,
    decode,
    demands,
    issue,
    next_version,
    verify,
)
from llmnode.schemas.messages import decode as decode_message
from llmnode.schemas.messages import encode
from llmnode.schemas.placement import Deployment, DeploymentSync, SignedDeployment
from llmnode.schemas.state import NodeState, Resources

ALICE, BOB = Identity.generate(), Identity.generate()
SMOLLM = "smollm2-135m-instruct"


def test_a_record_verifies_and_decodes_to_what_was_issued() -> None:
    deployment = Deployment(model=SMOLLM, replicas=2, footprint_mb=700)
    record = issue(ALICE, 5, deployment)
    assert verify(record)
    assert decode(record) == deployment
    assert record.origin == ALICE.node_id


def test_an_altered_record_does_not_verify() -> None:
    record = issue(ALICE, 5, Deployment(model=SMOLLM, replicas=2))
    forged_payload = msgspec.msgpack.encode(Deployment(model=SMOLLM, replicas=9))
    for forged in (
        msgspec.structs.replace(record, payload=forged_payload),
        msgspec.structs.replace(record, version=6),
        msgspec.structs.replace(record, origin=BOB.node_id),
    ):
        assert not verify(forged)
    with pytest.raises(Rejected, match="bad_signature"):
        Deployments().merge([msgspec.structs.replace(record, payload=forged_payload)])


def test_a_state_record_signature_never_passes_for_a_deployment() -> None:
    state = NodeState(
        node_id="x",
        name="n",
        endpoints=[],
        version="0",
        started_at=0.0,
        resources=Resources(cpu_cores=1, ram_total_mb=1, ram_free_mb=1),
    )
    signed = sign_record(ALICE, 1, state)
    as_deployment = SignedDeployment(
        origin=signed.origin, version=1, payload=signed.payload, signature=signed.signature
    )
    assert not verify(as_deployment)


def test_the_newest_version_wins_whatever_order_records_arrive_in() -> None:
    records = [
        issue(ALICE, 1, Deployment(model=SMOLLM, replicas=1)),
        issue(BOB, 2, Deployment(model=SMOLLM, replicas=3)),
        issue(ALICE, 3, Deployment(model=SMOLLM, replicas=0, deployed=False)),
        issue(BOB, 3, Deployment(model=SMOLLM, replicas=2)),  # same version: origin decides
        issue(ALICE, 1, Deployment(model="other", replicas=1)),
    ]
    outcomes = set()
    for order in itertools.permutations(records):
        known = Deployments()
        for record in order:
            known.merge([record])
        outcomes.add(
            tuple(sorted((m, msgspec.msgpack.encode(d)) for m, d in known.current().items()))
        )
    assert len(outcomes) == 1
    known = Deployments()
    known.merge(records)
    winner = max(ALICE.node_id, BOB.node_id)
    assert known.get(SMOLLM) is not None
    assert known.get(SMOLLM).origin == winner  # type: ignore[union-attr]


def test_merge_reports_only_what_changed() -> None:
    known = Deployments()
    first = issue(ALICE, 1, Deployment(model=SMOLLM, replicas=1))
    assert known.merge([first]) == [Deployment(model=SMOLLM, replicas=1)]
    assert known.merge([first]) == []
    assert known.merge([issue(BOB, 0, Deployment(model=SMOLLM, replicas=5))]) == []


def test_next_version_is_above_the_current_and_the_clock() -> None:
    assert next_version(None, 1000.0) == 1_000_000
    current = issue(ALICE, 2_000_000, Deployment(model=SMOLLM))
    assert next_version(current, 1000.0) == 2_000_001


def test_records_cross_the_wire_in_a_deployment_sync() -> None:
    record = issue(ALICE, 7, Deployment(model=SMOLLM, replicas=2, auto=True))
    message = decode_message(encode(DeploymentSync(records=[record])))
    assert isinstance(message, DeploymentSync)
    assert verify(message.records[0])


def test_bad_names_and_counts_are_refused_on_decode() -> None:
    for bad in ({"model": "../etc", "replicas": 1}, {"model": SMOLLM, "replicas": -1}):
        record = SignedDeployment(
            origin=ALICE.node_id, version=1, payload=msgspec.msgpack.encode(bad), signature=b""
        )
        with pytest.raises(Rejected, match="bad_deployment"):
            decode(record)


def test_demands_skip_undeployed_and_unknown_size_models_and_keep_auto_in_bounds() -> None:
    current = {
        "a": Deployment(model="a", replicas=2, footprint_mb=100),
        "b": Deployment(model="b", replicas=0, deployed=False),
        "c": Deployment(model="c", replicas=0, auto=True, min_replicas=1, max_replicas=4),
        "d": Deployment(model="d", replicas=9, auto=True, max_replicas=4, footprint_mb=5),
        "e": Deployment(model="e", replicas=1),  # footprint unknown: not placed blind
    }
    assert demands(current, {"c": 300}) == [
        Demand(model="a", replicas=2, footprint_mb=100),
        Demand(model="c", replicas=1, footprint_mb=300),
        Demand(model="d", replicas=4, footprint_mb=5),
    ]
