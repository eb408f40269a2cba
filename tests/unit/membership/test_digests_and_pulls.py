"""Digest push-pull and lazily pulled records: machines called directly, messages through the
real codec, and a simulated mesh counting what crosses the wire."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from llmnode.nodes.membership import Membership, MembershipConfig, Outbound
from llmnode.nodes.membership.digests import bucket_count, differing, digest
from llmnode.nodes.membership.simulation import Simulation, node_id
from llmnode.schemas.membership import (
    Dead,
    Gossip,
    MemberSnapshot,
    Ping,
    PushPull,
    RecordPull,
    RecordVersion,
    SignedRecord,
)
from llmnode.schemas.messages import decode, encode

CONFIG = MembershipConfig()


def machine(index: int) -> Membership:
    return Membership(
        node_id(index),
        f"mem://{index}",
        CONFIG,
        rng=random.Random(index),
        verify_record=lambda record: True,
    )


def record(origin: int, version: int) -> SignedRecord:
    return SignedRecord(node_id(origin), version, bytes(100), bytes(64))


def view(members: int, versions: dict[int, int]) -> PushPull:
    snapshot = [MemberSnapshot(node_id(i), f"mem://{i}", 0, "alive") for i in range(members)]
    return PushPull(members=snapshot, records=[record(o, v) for o, v in versions.items()])


def deliver(out: list[Outbound], machines: dict[bytes, Membership], sender: bytes) -> list[bytes]:
    """Deliver ``out`` (from ``sender``) through the codec until nothing is left to send;
    the encoded messages, in order."""
    wire: list[bytes] = []
    queue = [(sender, item) for item in out]
    while queue:
        source, item = queue.pop(0)
        data = encode(item.message)
        wire.append(data)
        target = machines[item.to]
        queue.extend((item.to, reply) for reply in target.receive(source, decode(data), 1.0))
    return wire


def push_pull(first: Membership, second: Membership) -> list[bytes]:
    """The first periodic push-pull from ``first`` to ``second`` (its only live member), with
    everything it sets off; the encoded messages."""
    machines = {first.self_id: first, second.self_id: second}
    for _ in range(10_000):
        out = [o for o in first.tick(max(1.0, first.next_deadline())) if o.to in machines]
        sent = [o for o in out if isinstance(o.message, PushPull)]
        if sent:
            return deliver(sent, machines, first.self_id)
        deliver(out, machines, first.self_id)  # probes: answered, so it stays alive
    raise AssertionError("no push-pull")


def pair(members: int, versions: dict[int, int]) -> tuple[Membership, Membership]:
    """Two machines with the same view: ``members`` members (all but the two dead, their
    records kept until their tombstones expire) and records at ``versions``."""
    a, b = machine(0), machine(1)
    dead = Gossip(gossip=[Dead(node_id(i), 0, node_id(0)) for i in range(2, members)])
    for subject in (a, b):
        subject.receive(node_id(1 - subject.self_id[-1]), view(members, versions), 0.0)
        subject.receive(node_id(1 - subject.self_id[-1]), dead, 0.0)
        subject.drain_events()
    return a, b


def test_two_nodes_that_agree_exchange_one_digest_and_nothing_else() -> None:
    a, b = pair(200, {i: 3 for i in range(2, 200)})
    wire = push_pull(a, b)
    assert len(wire) == 1  # the digest; the other side agrees and answers nothing
    message = decode(wire[0])
    assert isinstance(message, PushPull)
    assert message.digest and not message.members and not message.records
    assert b.stats["push_pull_agreed"] == 1
    whole = len(encode(view(200, {i: 3 for i in range(2, 200)})))
    assert len(wire[0]) * 20 < whole


def test_a_digest_exchange_repairs_only_what_differs_both_ways() -> None:
    a, b = pair(200, {i: 3 for i in range(2, 200)})
    a.receive(node_id(7), PushPull(members=[], records=[record(7, 9)]), 0.5)  # only a has v9
    b.receive(node_id(9), PushPull(members=[], records=[record(9, 8)]), 0.5)  # only b has v8
    wire = push_pull(a, b)
    assert a.record(node_id(9)) == record(9, 8)
    assert b.record(node_id(7)) == record(7, 9)
    assert a._digest(16) == b._digest(16)
    carried = sum(len(decode(data).records) for data in wire)  # type: ignore[attr-defined]
    assert carried == 2  # the two records that differed, not the other 196
    assert sum(map(len, wire)) * 4 < len(encode(view(200, {i: 3 for i in range(2, 200)})))


def test_an_older_node_asking_without_a_digest_gets_the_whole_view() -> None:
    a, b = pair(50, {i: 1 for i in range(2, 50)})
    old_style = PushPull(members=[], reply=True)  # what a node before digests sends
    out = b.receive(a.self_id, decode(encode(old_style)), 1.0)
    (reply,) = out
    assert isinstance(reply.message, PushPull)
    assert len(reply.message.members) == 50 and len(reply.message.records) == 48


def test_an_announced_record_is_pulled_from_the_announcer_once() -> None:
    a, b = pair(5, {})
    a.set_local_record(record(0, 5))
    machines = {a.self_id: a, b.self_id: b}
    ping = Ping(seq=1, target=b.self_id, announce=[RecordVersion(node_id(0), 5)])
    out = b.receive(a.self_id, decode(encode(ping)), 1.0)
    pulls = [o for o in out if isinstance(o.message, RecordPull)]
    assert [p.message.origins for p in pulls] == [[node_id(0)]]  # type: ignore[union-attr]
    again = b.receive(a.self_id, ping, 1.01)  # announced again before the pull is answered
    assert not [o for o in again if isinstance(o.message, RecordPull)]
    deliver(pulls, machines, b.self_id)
    assert b.record(node_id(0)) == record(0, 5)
    later = b.receive(a.self_id, ping, 2.0)
    assert not [o for o in later if isinstance(o.message, RecordPull)]


def test_each_node_receives_each_new_record_about_once() -> None:
    simulation = Simulation.create(CONFIG, seed=5)
    simulation.bootstrap(60, lambda index: record(index, 1))
    simulation.run_for(10.0)
    bodies = 0
    original = simulation.network.send

    def counting(source: str, address: str, payload: tuple[bytes, object]) -> None:
        nonlocal bodies
        message = payload[1]
        if isinstance(message, Gossip | PushPull):
            bodies += sum(isinstance(item, SignedRecord) for item in getattr(message, "gossip", []))
            bodies += len(getattr(message, "records", []))
        original(source, address, payload)

    simulation.network.send = counting  # type: ignore[method-assign]
    for index in range(10):
        simulation.set_record(index, record(index, 2))
    simulation.run_for(20.0)
    holders = simulation.count(lambda m: all(m.record(node_id(i)).version == 2 for i in range(10)))
    assert holders == 60
    assert bodies <= 10 * 59 * 1.2  # pushed whole, each would travel 4·⌈log10 61⌉ = 8 times


@settings(max_examples=60, deadline=None)
@given(
    entries=st.dictionaries(
        st.integers(0, 5000),
        st.tuples(st.integers(0, 9), st.sampled_from(["alive", "suspect", "dead", "left"])),
        max_size=80,
    ),
    changed=st.integers(0, 5000),
)
def test_digests_differ_exactly_in_the_bucket_of_a_changed_member(
    entries: dict[int, tuple[int, str]], changed: int
) -> None:
    count = bucket_count(len(entries) + 1)
    rows = [(node_id(n), inc, state, 0) for n, (inc, state) in entries.items()]
    before = digest(rows, count)
    assert digest(list(reversed(rows)), count) == before  # order does not matter
    incarnation, state = entries.get(changed, (0, "alive"))
    others = [row for row in rows if row[0] != node_id(changed)]
    after = digest([*others, (node_id(changed), incarnation + 1, state, 0)], count)
    assert differing(before, after) == [int.from_bytes(node_id(changed)[-4:], "big") % count]
