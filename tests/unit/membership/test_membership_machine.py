"""The SWIM state machine message by message: machines called directly, time passed in."""

from __future__ import annotations

import random
from typing import Any

import pytest

from llmnode.errors import ProtocolError
from llmnode.nodes.membership import Membership, MembershipConfig, Outbound
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
from llmnode.schemas.messages import decode, encode

CONFIG = MembershipConfig()


def node(index: int) -> bytes:
    return bytes([index]) * 32


def machine(index: int, *, verify: object = None, config: MembershipConfig = CONFIG) -> Membership:
    return Membership(
        node(index),
        f"mem://{index}",
        config,
        rng=random.Random(index),
        verify_record=verify if callable(verify) else (lambda record: True),  # type: ignore[arg-type]
    )


def introduce(subject: Membership, *others: int, now: float = 0.0) -> None:
    """Tell ``subject`` about ``others`` the way a push-pull reply does."""
    snapshot = [MemberSnapshot(node(i), f"mem://{i}", 0, "alive") for i in others]
    subject.receive(node(others[0]), PushPull(members=snapshot), now)
    subject.drain_events()


def first_probe(subject: Membership) -> tuple[float, Outbound]:
    """Tick ``subject`` at its deadlines until it sends a Ping; return when, and the Ping."""
    now = 0.0
    for _ in range(50):
        now = subject.next_deadline()
        for outbound in subject.tick(now):
            if isinstance(outbound.message, Ping):
                return now, outbound
    raise AssertionError("no probe sent")


def gossip_of(outbound: list[Outbound]) -> list[object]:
    items: list[object] = []
    for item in outbound:
        message = item.message
        if isinstance(message, (Ping, Ack, Gossip)):
            items.extend(message.gossip)
    return items


def test_ping_to_this_node_is_acked_with_the_same_sequence() -> None:
    subject = machine(1)
    introduce(subject, 2)
    replies = subject.receive(node(2), Ping(seq=41, target=node(1)), 1.0)
    assert len(replies) == 1
    assert replies[0].to == node(2) and replies[0].address == "mem://2"
    assert isinstance(replies[0].message, Ack) and replies[0].message.seq == 41


def test_ping_for_another_node_is_not_acked_and_is_counted() -> None:
    subject = machine(1)
    introduce(subject, 2)
    assert subject.receive(node(2), Ping(seq=1, target=node(9)), 1.0) == []
    assert subject.rejections["wrong_target"] == 1


def test_acked_probe_leaves_target_alive_and_sends_no_indirect_probe() -> None:
    prober = machine(1)
    targets = {node(2): machine(2), node(3): machine(3)}
    introduce(prober, 2, 3)
    for target in targets.values():
        introduce(target, 1, 2, 3)
    now, ping = first_probe(prober)
    (ack,) = targets[ping.to].receive(node(1), ping.message, now + 0.001)
    assert prober.receive(ping.to, ack.message, now + 0.002) == []
    later = prober.tick(now + CONFIG.probe_interval - 0.01)
    assert not any(isinstance(o.message, PingReq) for o in later)
    assert all(m.state == "alive" for m in prober.members())
    assert prober.awareness == 0


def test_probe_without_ack_asks_indirect_checks_relays() -> None:
    prober = machine(1)
    introduce(prober, 2, 3, 4, 5)
    now, ping = first_probe(prober)
    requests = prober.tick(now + CONFIG.probe_timeout)
    relays = [o for o in requests if isinstance(o.message, PingReq)]
    assert len(relays) == CONFIG.indirect_checks
    assert all(o.message.target == ping.to for o in relays if isinstance(o.message, PingReq))
    assert ping.to not in {o.to for o in relays}


def test_indirect_ack_through_a_relay_counts_as_success() -> None:
    prober, relay, target = machine(1), machine(2), machine(3)
    introduce(prober, 2, 3)
    introduce(relay, 1, 3)
    now, ping = first_probe(prober)
    if ping.to != node(3):  # probe order is shuffled: make the target node 3
        prober.receive(node(2), Ack(seq=ping.message.seq), now)  # type: ignore[union-attr]
        now, ping = first_probe(prober)
    (request,) = [o for o in prober.tick(now + 0.5) if isinstance(o.message, PingReq)]
    (relayed_ping,) = relay.receive(node(1), request.message, now + 0.51)
    assert relayed_ping.to == node(3) and isinstance(relayed_ping.message, Ping)
    (ack,) = target.receive(node(2), relayed_ping.message, now + 0.52)
    assert ack.address == "mem://2"  # unknown sender: answered at its source address
    (forwarded,) = relay.receive(node(3), ack.message, now + 0.53)
    assert forwarded.to == node(1)
    assert isinstance(forwarded.message, Ack) and forwarded.message.seq == ping.message.seq  # type: ignore[union-attr]
    prober.receive(node(2), forwarded.message, now + 0.54)
    prober.tick(now + 1.5)
    assert prober.member(node(3)).state == "alive"  # type: ignore[union-attr]


def test_relay_sends_nack_when_target_stays_silent() -> None:
    relay = machine(2)
    introduce(relay, 1, 3)
    request = PingReq(seq=7, target=node(3), target_address="mem://3")
    relay.receive(node(1), request, 10.0)
    out = relay.tick(10.0 + CONFIG.probe_timeout)
    nacks = [o for o in out if isinstance(o.message, Nack)]
    assert len(nacks) == 1 and nacks[0].to == node(1) and nacks[0].message.seq == 7  # type: ignore[union-attr]


def test_failed_probe_without_nacks_raises_awareness_and_suspects_target() -> None:
    prober = machine(1)
    introduce(prober, 2, 3, 4, 5)
    now, ping = first_probe(prober)
    prober.tick(now + CONFIG.probe_timeout)
    prober.tick(now + CONFIG.probe_interval)
    assert prober.awareness == CONFIG.indirect_checks  # one per missing Nack
    assert prober.member(ping.to).state == "suspect"  # type: ignore[union-attr]
    assert [e.kind for e in prober.drain_events()] == ["suspected"]


def test_failed_probe_with_all_nacks_keeps_awareness_at_zero() -> None:
    prober = machine(1)
    introduce(prober, 2, 3, 4, 5)
    now, ping = first_probe(prober)
    for request in prober.tick(now + CONFIG.probe_timeout):
        if isinstance(request.message, PingReq):
            prober.receive(request.to, Nack(seq=request.message.seq), now + 0.6)
    prober.tick(now + CONFIG.probe_interval)
    assert prober.awareness == 0
    assert prober.member(ping.to).state == "suspect"  # type: ignore[union-attr]


def test_awareness_stretches_the_probe_timeout_and_interval() -> None:
    prober = machine(1)
    introduce(prober, 2, 3, 4, 5)
    now, _ = first_probe(prober)
    prober.tick(now + CONFIG.probe_timeout)
    start = now + CONFIG.probe_interval
    out = prober.tick(start)  # the probe failed (awareness 3) and the next one starts
    assert prober.awareness == 3
    assert any(isinstance(o.message, Ping) for o in out)
    out = prober.tick(start + CONFIG.probe_timeout)  # the direct timeout is 4 × 0.5 s now
    assert not any(isinstance(o.message, PingReq) for o in out)
    out = prober.tick(start + 4 * CONFIG.probe_timeout)
    assert any(isinstance(o.message, PingReq) for o in out)
    assert prober.next_deadline() <= start + 4 * CONFIG.probe_interval


def test_suspect_becomes_dead_after_the_maximum_suspicion_timeout() -> None:
    subject = machine(1)
    introduce(subject, 2, 3, 4, 5, 6)
    subject.receive(node(2), Gossip(gossip=[Suspect(node(6), 0, node(2))]), 100.0)
    # min = 4 × max(1, log10(6 members)) × 1 s, max = 6 × min; no confirmation yet: max.
    minimum = 4.0
    subject.tick(100.0 + 6 * minimum - 0.01)
    assert subject.member(node(6)).state == "suspect"  # type: ignore[union-attr]
    subject.tick(100.0 + 6 * minimum + 0.01)
    assert subject.member(node(6)).state == "dead"  # type: ignore[union-attr]
    assert [e.kind for e in subject.drain_events()] == ["suspected", "dead"]


def test_independent_confirmations_shrink_the_suspicion_timeout_to_the_minimum() -> None:
    subject = machine(1)
    introduce(subject, 2, 3, 4, 5, 6, 7, 8, 9)
    accusation = [Suspect(node(9), 0, node(accuser)) for accuser in (2, 3, 4, 5)]
    subject.receive(node(2), Gossip(gossip=accusation), 0.0)
    minimum = 4.0  # 4 × max(1, log10(9 members)) × 1 s
    subject.tick(minimum + 0.01)
    assert subject.member(node(9)).state == "dead"  # type: ignore[union-attr]


def test_suspected_node_refutes_with_a_higher_incarnation() -> None:
    subject = machine(1)
    introduce(subject, 2, 3)
    subject.receive(node(2), Gossip(gossip=[Suspect(node(1), 0, node(2))]), 1.0)
    assert subject.incarnation == 1
    pong = subject.receive(node(3), Ping(seq=5, target=node(1)), 1.1)
    assert Alive(node(1), 1, "mem://1") in gossip_of(pong)


def test_node_declared_dead_refutes_instead_of_dying() -> None:
    subject = machine(1)
    introduce(subject, 2, 3)
    subject.receive(node(2), Gossip(gossip=[Dead(node(1), 3, node(2))]), 1.0)
    assert subject.incarnation == 4
    assert subject.member(node(1)).state == "alive"  # type: ignore[union-attr]


def test_refutation_clears_the_suspicion_elsewhere() -> None:
    subject = machine(1)
    introduce(subject, 2, 3)
    subject.receive(node(2), Gossip(gossip=[Suspect(node(3), 0, node(2))]), 1.0)
    subject.receive(node(3), Gossip(gossip=[Alive(node(3), 1, "mem://3")]), 1.5)
    member = subject.member(node(3))
    assert member is not None and member.state == "alive" and member.incarnation == 1
    assert [e.kind for e in subject.drain_events()] == ["suspected", "alive"]
    subject.tick(1000.0)
    assert subject.member(node(3)).state == "alive"  # type: ignore[union-attr]


def test_stale_suspicion_with_an_older_incarnation_is_ignored() -> None:
    subject = machine(1)
    introduce(subject, 2, 3)
    subject.receive(node(3), Gossip(gossip=[Alive(node(3), 2, "mem://3")]), 1.0)
    subject.receive(node(2), Gossip(gossip=[Suspect(node(3), 1, node(2))]), 1.1)
    assert subject.member(node(3)).state == "alive"  # type: ignore[union-attr]


def test_leaving_node_is_seen_as_left_and_never_dead() -> None:
    leaver, peer = machine(1), machine(2)
    introduce(leaver, 2, 3)
    introduce(peer, 1, 3)
    goodbyes = leaver.leave(5.0)
    assert goodbyes and all(isinstance(o.message, Gossip) for o in goodbyes)
    for goodbye in goodbyes:
        if goodbye.to == node(2):
            peer.receive(node(1), goodbye.message, 5.01)
    assert peer.member(node(1)).state == "left"  # type: ignore[union-attr]
    peer.receive(node(3), Gossip(gossip=[Suspect(node(1), 0, node(3))]), 6.0)
    peer.tick(500.0 - 1)
    # Left, then (its tombstone expired by now) forgotten: never dead.
    assert [e.kind for e in peer.drain_events()] == ["left", "forgotten"]
    # The leaver does not refute its own departure.
    leaver.receive(node(2), Gossip(gossip=[Left(node(1), 0)]), 6.0)
    assert leaver.incarnation == 0


def test_restarted_node_with_higher_incarnation_is_alive_again() -> None:
    subject = machine(1)
    introduce(subject, 2, 3)
    subject.receive(node(2), Gossip(gossip=[Dead(node(3), 0, node(2))]), 1.0)
    subject.receive(node(3), Gossip(gossip=[Alive(node(3), 0, "mem://3")]), 2.0)
    assert subject.member(node(3)).state == "dead"  # type: ignore[union-attr]
    subject.receive(node(3), Gossip(gossip=[Alive(node(3), 1, "mem://3b")]), 3.0)
    member = subject.member(node(3))
    assert member is not None and member.state == "alive" and member.address == "mem://3b"
    assert [e.kind for e in subject.drain_events()] == ["dead", "alive"]


def test_restarted_node_refutes_its_tombstone_from_the_join_reply() -> None:
    restarted = machine(3)
    (request,) = restarted.join([(node(1), "mem://1")], 50.0)
    assert isinstance(request.message, PushPull) and request.message.join
    reply = PushPull(
        members=[
            MemberSnapshot(node(1), "mem://1", 0, "alive"),
            MemberSnapshot(node(3), "mem://3", 7, "dead"),
        ]
    )
    restarted.receive(node(1), reply, 50.1)
    assert restarted.incarnation == 8
    out = restarted.receive(node(1), Ping(seq=1, target=node(3)), 50.2)
    assert Alive(node(3), 8, "mem://3") in gossip_of(out)


def test_join_announces_the_joiner_and_replies_with_full_state() -> None:
    seed = machine(1)
    introduce(seed, 2)
    (request,) = machine(3).join([(node(1), "mem://1")], 0.0)
    (reply,) = seed.receive(node(3), request.message, 0.1)
    assert isinstance(reply.message, PushPull) and not reply.message.reply
    assert {m.node for m in reply.message.members} == {node(1), node(2), node(3)}
    assert [e.kind for e in seed.drain_events()] == ["joined"]
    out = seed.receive(node(2), Ping(seq=1, target=node(1)), 0.2)
    assert Alive(node(3), 0, "mem://3") in gossip_of(out)


def test_tombstone_is_reaped_after_its_timeout() -> None:
    config = MembershipConfig(tombstone_timeout=60.0)
    subject = machine(1, config=config)
    introduce(subject, 2, 3)
    subject.receive(node(2), Gossip(gossip=[Dead(node(3), 0, node(2))]), 10.0)
    subject.tick(69.0)
    assert subject.member(node(3)) is not None
    subject.tick(70.0)
    assert subject.member(node(3)) is None
    assert subject.alive_count == 2


def test_gossip_item_is_retransmitted_a_bounded_number_of_times() -> None:
    subject = machine(1)
    introduce(subject, 2, 3, 4)
    subject.receive(node(2), Gossip(gossip=[Alive(node(9), 0, "mem://9")]), 1.0)
    sent = 0
    for seq in range(100):
        out = subject.receive(node(2), Ping(seq=seq, target=node(1)), 2.0)
        sent += gossip_of(out).count(Alive(node(9), 0, "mem://9"))
    assert sent == 4 * 1  # 4 × ceil(log10(5 + 1))


def test_newest_record_version_wins(signers: list[Any]) -> None:
    origin = signers[0]
    subject = machine(1, verify=origin.verify)
    subject.receive(node(2), Gossip(gossip=[origin.record(5, b"five")]), 1.0)
    subject.receive(node(2), Gossip(gossip=[origin.record(3, b"three")]), 1.1)
    assert subject.record(origin.node).payload == b"five"  # type: ignore[union-attr]
    subject.receive(node(2), Gossip(gossip=[origin.record(6, b"six")]), 1.2)
    assert subject.record(origin.node).payload == b"six"  # type: ignore[union-attr]
    updates = [e for e in subject.drain_events() if e.kind == "record_updated"]
    assert [e.record.version for e in updates] == [5, 6]  # type: ignore[union-attr]


def test_record_altered_by_a_relay_is_rejected_and_counted(signers: list[Any]) -> None:
    origin = signers[0]
    subject = machine(1, verify=origin.verify)
    genuine = origin.record(2, b"free_memory=10")
    forged = SignedRecord(genuine.origin, genuine.version, b"free_memory=99", genuine.signature)
    subject.receive(node(2), Gossip(gossip=[forged]), 1.0)
    assert subject.record(origin.node) is None
    assert subject.rejections["bad_record"] == 1
    subject.receive(node(2), Gossip(gossip=[genuine]), 1.1)
    assert subject.record(origin.node) == genuine


def test_record_signed_by_another_key_is_rejected_and_counted(signers: list[Any]) -> None:
    origin, impostor = signers[0], signers[1]
    subject = machine(1, verify=origin.verify)
    stolen = impostor.record(9, b"i am the origin")
    claimed = SignedRecord(origin.node, stolen.version, stolen.payload, stolen.signature)
    subject.receive(node(2), PushPull(members=[], records=[claimed]), 1.0)
    assert subject.record(origin.node) is None
    assert subject.rejections["bad_record"] == 1


def test_local_record_must_be_ours_and_newer(signers: list[Any]) -> None:
    own = signers[0]
    subject = Membership(
        own.node, "mem://own", CONFIG, rng=random.Random(0), verify_record=own.verify
    )
    subject.set_local_record(own.record(2, b"x"))
    with pytest.raises(ProtocolError):
        subject.set_local_record(own.record(2, b"y"))
    with pytest.raises(ProtocolError):
        subject.set_local_record(signers[1].record(3, b"z"))


def test_every_membership_message_round_trips_through_the_wire_codec() -> None:
    record = SignedRecord(node(1), 3, b"payload", b"s" * 64)
    items = [
        Alive(node(1), 1, "tcp://10.0.0.1:7946"),
        Suspect(node(2), 2, node(1)),
        Dead(node(3), 3, node(1)),
        Left(node(4), 4),
        record,
    ]
    messages = [
        Ping(seq=1, target=node(2), gossip=items, source_address="tcp://10.0.0.1:7946"),
        Ack(seq=1, gossip=items),
        PingReq(seq=2, target=node(3), target_address="tcp://10.0.0.3:7946"),
        Nack(seq=2),
        Gossip(gossip=items),
        PushPull(
            members=[
                MemberSnapshot(node(1), "a", 1, "alive"),
                MemberSnapshot(node(2), "b", 0, "left"),
            ],
            records=[record],
            join=True,
            reply=True,
        ),
    ]
    for message in messages:
        assert decode(encode(message)) == message
