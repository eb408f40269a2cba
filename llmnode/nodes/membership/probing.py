"""Failure detection: SWIM probes, indirect probes through relays, and Lifeguard health (no I/O).

One member is probed per probe interval (round-robin over a shuffled list). When the direct
probe times out, ``indirect_checks`` members are asked to probe it; relays send a Nack when the
target stays silent. A probe nobody answers makes the target suspect; a suspicion that times out
unrefuted makes it dead. Missed Nacks and failed probes raise the local health score
("awareness"), which stretches our own probe interval and timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmnode.nodes.membership.dissemination import Dissemination
from llmnode.nodes.membership.members import LIVE_STATES, KnownNode, Outbound
from llmnode.schemas.membership import Ack, Dead, GossipItem, Nack, Ping, PingReq, Suspect


class Probe:
    """Our probe in flight: the target, and when to go indirect and when to give up."""

    __slots__ = (
        "deadline",
        "expected_nacks",
        "indirect_at",
        "indirect_sent",
        "nacks",
        "sent_at",
        "seq",
        "target",
    )

    def __init__(
        self, target: bytes, seq: int, indirect_at: float, deadline: float, sent_at: float = 0.0
    ) -> None:
        self.sent_at = sent_at
        self.target = target
        self.seq = seq
        self.indirect_at = indirect_at
        self.deadline = deadline
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


@dataclass(slots=True)
class Relay:
    """A probe we run for another member's PingReq: whom to answer, and by when."""

    requester: bytes
    address: str
    seq: int
    deadline: float


class FailureDetection(Dissemination):
    """Probes members, relays others' indirect probes, and times out suspicions."""

    def _expire_suspicions(self, now: float) -> None:
        for node, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline():
                del self._suspicions[node]
                member = self._members.get(node)
                if member is not None and member.state == "suspect":
                    self._apply_dead(Dead(node, member.incarnation, self.self_id), now, True)

    def _expire_relays(self, now: float, out: list[Outbound]) -> None:
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                out.append(Outbound(relay.requester, relay.address, Nack(seq=relay.seq)))

    def _on_nack(self, seq: int) -> None:
        if self._probe is not None and seq == self._probe.seq:
            self._probe.nacks += 1

    def _scaled(self, timeout: float) -> float:
        return timeout * (self._awareness + 1)

    def _tick_probe(self, now: float, out: list[Outbound]) -> None:
        probe = self._probe
        if probe is not None and not probe.indirect_sent and now >= probe.indirect_at:
            probe.indirect_sent = True
            target = self._members.get(probe.target)
            if target is not None:
                request = PingReq(
                    seq=probe.seq,
                    target=probe.target,
                    target_address=target.address,
                    source_address=self.address,
                )
                relays = self._random_members(
                    self.config.indirect_checks,
                    lambda member: member.state == "alive" and member.node != probe.target,
                )
                probe.expected_nacks = len(relays)
                out.extend(Outbound(relay.node, relay.address, request) for relay in relays)
        if probe is not None and now >= probe.deadline:
            self._probe = None
            if probe.expected_nacks > 0:
                self._adjust_awareness(probe.expected_nacks - probe.nacks)
            else:
                self._adjust_awareness(1)
            target = self._members.get(probe.target)
            if target is not None and target.state in LIVE_STATES:
                self._apply_suspect(
                    Suspect(target.node, target.incarnation, self.self_id), now, True
                )
        if self._probe is None and now >= self._next_probe:
            self._next_probe = now + self._scaled(self.config.probe_interval)
            if self._leaving:
                return
            target = self._next_probe_target(now)
            if target is None:
                return
            self._sequence += 1
            self._probe = Probe(
                target.node,
                self._sequence,
                indirect_at=now + self._scaled(self.config.probe_timeout),
                deadline=self._next_probe,
                sent_at=now,
            )
            gossip: list[GossipItem] = []
            if target.state == "suspect":  # let it refute at once
                gossip.append(Suspect(target.node, target.incarnation, self.self_id))
            items, announce = self._piggyback()
            gossip.extend(items)
            ping = Ping(
                seq=self._sequence,
                target=target.node,
                gossip=gossip,
                source_address=self.address,
                announce=announce,
            )
            out.append(Outbound(target.node, target.address, ping))

    def _next_probe_target(self, now: float) -> KnownNode | None:
        """The next live member in the shuffled round-robin order. A member learned less than
        ``new_member_grace`` ago is passed over and stays next in line: the shell has only just
        opened its connection, and a probe now would time out on the connection's set-up, not
        on the member (32 real nodes joining at once: about 200 suspicions, all refuted)."""
        grace = self.config.new_member_grace
        for _ in range(2):
            deferred: list[bytes] = []
            while self._probe_index < len(self._peers):
                node = self._peers[self._probe_index]
                self._probe_index += 1
                member = self._members.get(node)
                if member is None or member.state not in LIVE_STATES:
                    continue
                if now - member.learned_at < grace:
                    deferred.append(node)
                    continue
                self._peers[self._probe_index : self._probe_index] = deferred
                return member
            if deferred:  # all that is left is new: probe nobody this interval
                self._peers[self._probe_index : self._probe_index] = deferred
                return None
            self._peers = [node for node in self._members if node != self.self_id]
            self._peer_set = set(self._peers)
            self._rng.shuffle(self._peers)
            self._probe_index = 0
        return None

    def _on_ack(self, seq: int, out: list[Outbound], now: float) -> None:
        probe = self._probe
        if probe is not None and seq == probe.seq:
            self._probe = None
            if self.on_probe_rtt is not None and not probe.indirect_sent:
                self.on_probe_rtt(max(0.0, now - probe.sent_at))
            self._adjust_awareness(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            gossip, announce = self._piggyback()
            ack = Ack(seq=relay.seq, gossip=gossip, announce=announce)
            out.append(Outbound(relay.requester, relay.address, ack))

    def _relay(self, sender: bytes, request: PingReq, now: float, out: list[Outbound]) -> None:
        address = self._address_of(sender, request.source_address)
        if not address:
            self.rejections["unknown_sender"] += 1
            return
        if request.target == self.self_id:  # asked to probe ourselves: we are evidently alive
            out.append(Outbound(sender, address, Ack(seq=request.seq)))
            return
        self._sequence += 1
        deadline = now + self.config.probe_timeout
        self._relays[self._sequence] = Relay(sender, address, request.seq, deadline)
        gossip, announce = self._piggyback()
        ping = Ping(
            seq=self._sequence,
            target=request.target,
            gossip=gossip,
            source_address=self.address,
            announce=announce,
        )
        out.append(Outbound(request.target, request.target_address, ping))
