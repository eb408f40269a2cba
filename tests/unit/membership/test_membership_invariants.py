"""Hypothesis: invariants of the membership state machine under arbitrary input sequences."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llmnode.nodes.membership import Membership, MembershipConfig
from llmnode.schemas.membership import (
    Ack,
    Alive,
    Dead,
    Gossip,
    Left,
    MemberSnapshot,
    Nack,
    Ping,
    PingReq,
    PushPull,
    SignedRecord,
    Suspect,
)

SELF = bytes([1]) * 32
NODES = [bytes([index]) * 32 for index in range(1, 6)]  # self and four others
CONFIG = MembershipConfig(tombstone_timeout=20.0)

nodes = st.sampled_from(NODES)
incarnations = st.integers(min_value=0, max_value=6)
addresses = st.sampled_from(["mem://a", "mem://b"])
items = st.one_of(
    st.builds(Alive, nodes, incarnations, addresses),
    st.builds(Suspect, nodes, incarnations, nodes),
    st.builds(Dead, nodes, incarnations, nodes),
    st.builds(Left, nodes, incarnations),
    st.builds(
        SignedRecord,
        nodes,
        st.integers(min_value=0, max_value=5),
        st.binary(max_size=4),
        st.sampled_from([b"good", b"bad"]),
    ),
)
gossip = st.lists(items, max_size=4)
snapshots = st.lists(
    st.builds(
        MemberSnapshot,
        nodes,
        addresses,
        incarnations,
        st.sampled_from(["alive", "suspect", "dead", "left"]),
    ),
    max_size=5,
)
sequences = st.integers(min_value=0, max_value=8)
messages = st.one_of(
    st.builds(lambda s, t, g: Ping(seq=s, target=t, gossip=g), sequences, nodes, gossip),
    st.builds(lambda s, g: Ack(seq=s, gossip=g), sequences, gossip),
    st.builds(lambda s: Nack(seq=s), sequences),
    st.builds(
        lambda s, t, g: PingReq(seq=s, target=t, target_address="mem://t", gossip=g),
        sequences,
        nodes,
        gossip,
    ),
    st.builds(lambda g: Gossip(gossip=g), gossip),
    st.builds(lambda m, r: PushPull(members=m, reply=r, join=r), snapshots, st.booleans()),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), nodes, messages),
        st.tuples(st.just("tick"), st.floats(min_value=0.0, max_value=15.0), st.none()),
        st.tuples(st.just("join"), st.none(), st.none()),
    ),
    max_size=40,
)


def own_items(outbound: list[Any]) -> list[Any]:
    found = []
    for item in outbound:
        for entry in getattr(item.message, "gossip", []):
            if getattr(entry, "node", None) == SELF:
                found.append(entry)
    return found


@settings(max_examples=300, deadline=None)
@given(steps=steps, leave_at=st.integers(min_value=0, max_value=60))
def test_membership_invariants_hold_for_any_input(steps: list[Any], leave_at: int) -> None:
    machine = Membership(
        SELF,
        "mem://self",
        CONFIG,
        rng=random.Random(0),
        verify_record=lambda record: record.signature == b"good",
    )
    now = 0.0
    own_incarnation = 0
    incarnations_seen: dict[bytes, int] = {}
    for index, (kind, argument, message) in enumerate(steps):
        if index == leave_at:
            machine.leave(now)
        if kind == "receive":
            out = machine.receive(argument, message, now)
        elif kind == "tick":
            now += argument
            out = machine.tick(now)
            # tick leaves nothing overdue, so a shell sleeping until next_deadline cannot spin
            assert machine.next_deadline() > now
        else:
            out = machine.join([(NODES[1], "mem://2")], now)
        # our incarnation never decreases, and we never announce ourselves suspect or dead
        assert machine.incarnation >= own_incarnation
        own_incarnation = machine.incarnation
        assert not [i for i in own_items(out) if isinstance(i, (Suspect, Dead))]
        me = machine.member(SELF)
        assert me is not None and me.state in ("alive", "left")
        # no message is addressed to ourselves
        assert all(o.to != SELF for o in out)
        # alive_count matches the members alive or suspect
        members = machine.members()
        assert machine.alive_count == sum(m.state in ("alive", "suspect") for m in members)
        # a member's incarnation never decreases while it is remembered
        for member in members:
            previous = incarnations_seen.get(member.node)
            assert previous is None or member.incarnation >= previous
            incarnations_seen[member.node] = member.incarnation
        incarnations_seen = {m.node: m.incarnation for m in members}
        # only verified records are kept
        for member in members:
            assert member.record is None or member.record.signature == b"good"
