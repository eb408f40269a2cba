"""SWIM membership with Lifeguard as a pure state machine (no I/O, no clock reads).

A :class:`Membership` takes messages and the current time in, and returns the messages to send
(:class:`Outbound`). The node process (the shell) delivers what the bus received to
:meth:`Membership.receive`, calls :meth:`Membership.tick` at :meth:`Membership.next_deadline`,
sends every :class:`Outbound`, and reads :meth:`Membership.drain_events` to learn addresses and
log. The simulation drives thousands of these over a memory network on a virtual clock.

What it does, after hashicorp/memberlist: probes one member per probe interval (round-robin over
a shuffled list), asks ``indirect_checks`` members to probe it when the direct probe times out,
suspects it when nothing answers, and declares it dead when the suspicion times out unrefuted.
Lifeguard: relays send a Nack when the target stays silent; missed Nacks and failed probes raise
a local health score ("awareness", 0..7) that stretches our own probe interval and timeouts;
the suspicion timeout starts at its maximum and shrinks as independent accusers confirm it.
State changes travel as gossip items piggybacked on every Ping and Ack and in Gossip messages to
``gossip_nodes`` random members every gossip interval, each sent at most
``retransmit_multiplier × ceil(log10(N+1))`` times. Push-pull anti-entropy repairs the rest.
A node hearing itself suspected or declared dead refutes with a higher incarnation.

The parts: :mod:`~llmnode.nodes.membership.state` (the view and shared bookkeeping),
:mod:`~llmnode.nodes.membership.dissemination` (gossip, push-pull, merging items),
:mod:`~llmnode.nodes.membership.probing` (probes, relays, suspicion timeouts) and this module,
the public face.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from llmnode.errors import ProtocolError
from llmnode.nodes.membership.config import join_sync_delay, push_pull_scale
from llmnode.nodes.membership.members import LIVE_STATES, Member, MemberEvent, Outbound
from llmnode.nodes.membership.probing import FailureDetection
from llmnode.schemas.membership import (
    Ack,
    Gossip,
    Left,
    MemberStateName,
    Nack,
    Ping,
    PingReq,
    PushPull,
    RecordPull,
    SignedRecord,
)

__all__ = ["Member", "MemberEvent", "Membership", "Outbound"]


class Membership(FailureDetection):
    """One node's view of the mesh. Pure: time comes in as ``now`` (seconds, any epoch).

    ``Membership(self_id, address, config, *, rng, incarnation=0, verify_record)``.
    """

    # ---- queries ---------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    @property
    def awareness(self) -> int:
        """Lifeguard local health: 0 is healthy; timeouts are stretched by (awareness + 1)."""
        return self._awareness

    @property
    def alive_count(self) -> int:
        """Members alive or suspect (still members until declared dead), self included."""
        return self._live

    def members(self) -> list[Member]:
        return [self._snapshot(node) for node in self._members.values()]

    def member(self, node: bytes) -> Member | None:
        found = self._members.get(node)
        return None if found is None else self._snapshot(found)

    def state_of(self, node: bytes) -> MemberStateName | None:
        """``node``'s state as this node sees it (None: unknown, or forgotten); no snapshot."""
        found = self._members.get(node)
        return None if found is None else found.state

    def record(self, node: bytes) -> SignedRecord | None:
        return self._records.get(node)

    def drain_events(self) -> list[MemberEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float:
        """When :meth:`tick` should run next (0.0 before the first join, receive or tick)."""
        if not self._started:
            return 0.0
        deadline = min(
            self._next_probe, self._next_gossip, self._next_push_pull, self._next_join_sync
        )
        probe = self._probe
        if probe is not None:
            deadline = min(deadline, probe.deadline)
            if not probe.indirect_sent:
                deadline = min(deadline, probe.indirect_at)
        for suspicion in self._suspicions.values():
            deadline = min(deadline, suspicion.deadline())
        for relay in self._relays.values():
            deadline = min(deadline, relay.deadline)
        if self._tombstones:
            deadline = min(deadline, min(self._tombstones.values()) + self.config.tombstone_timeout)
        return deadline

    # ---- inputs ----------------------------------------------------------------------------

    def join(self, seeds: Iterable[tuple[bytes, str]], now: float) -> list[Outbound]:
        """Push-pull our state to every seed; their replies fill in the mesh. Then
        ``join_sync_rounds`` push-pulls with random members, soon after (see the config)."""
        self._start(now)
        self._seeds = [(node, address) for node, address in seeds if node != self.self_id]
        self._broadcasts.enqueue(self.self_id, self._own_alive())
        if self.config.join_sync_rounds > 0:
            self._join_syncs_done = 0
            self._next_join_sync = now + join_sync_delay(self.config.probe_interval, 0)
        return self._join_seeds()

    def leave(self, now: float) -> list[Outbound]:
        """Leave gracefully: others see us as left, not dead. Keep ticking a little while so
        the Left item spreads; it is also sent right away to a few members."""
        self._start(now)
        self._leaving = True
        self._set_state(self._self, "left", now)
        item = Left(self.self_id, self._self.incarnation)
        self._broadcasts.enqueue(self.self_id, item)
        count = max(self.config.gossip_nodes, self._retransmit_limit())
        targets = self._random_members(count, lambda member: member.state in LIVE_STATES)
        return [Outbound(t.node, t.address, Gossip(gossip=[item])) for t in targets]

    def set_local_record(self, record: SignedRecord) -> None:
        """Our own new state record, to be disseminated. Versions must grow, also across
        restarts (use e.g. microseconds since the epoch; see :attr:`own_record_floor`)."""
        if record.origin != self.self_id:
            raise ProtocolError("a local record must have this node as its origin")
        current = self._records.get(self.self_id)
        if current is not None and record.version <= current.version:
            raise ProtocolError(
                f"record version {record.version} is not newer than {current.version}"
            )
        self._records[self.self_id] = record
        self._broadcasts.enqueue((b"record", self.self_id), self._record_item(record))

    def receive(self, sender: bytes, message: object, now: float) -> list[Outbound]:
        """Handle one message that the bus authenticated as coming from ``sender``."""
        self._start(now)
        if sender == self.self_id:
            self.rejections["from_self"] += 1
            return []
        known = self._members.get(sender)
        if known is not None:
            known.last_heard = now
        out: list[Outbound] = []
        if isinstance(message, Ping | Ack | PingReq | Gossip):
            self._merge(message.gossip, now)
            source = message.source_address if isinstance(message, Ping | PingReq) else ""
            out.extend(self._merge_announcements(sender, source, message.announce, now))
        if isinstance(message, Ping):
            if message.target != self.self_id:
                self.rejections["wrong_target"] += 1
                return out
            address = self._address_of(sender, message.source_address)
            if address:
                gossip, announce = self._piggyback()
                ack = Ack(seq=message.seq, gossip=gossip, announce=announce)
                out.append(Outbound(sender, address, ack))
        elif isinstance(message, Ack):
            self._on_ack(message.seq, out, now)
        elif isinstance(message, Nack):
            self._on_nack(message.seq)
        elif isinstance(message, PingReq):
            self._relay(sender, message, now, out)
        elif isinstance(message, RecordPull):
            self._answer_pull(sender, message, out)
        elif isinstance(message, PushPull):
            self._merge_push_pull(sender, message, now)
            self._answer_push_pull(sender, message, out)
        elif not isinstance(message, Gossip):
            self.rejections["unexpected_message"] += 1
        return out

    def tick(self, now: float) -> list[Outbound]:
        """Advance timers to ``now``: suspicions, relays, probes, gossip, push-pull, reaping."""
        self._start(now)
        out: list[Outbound] = []
        self._expire_suspicions(now)
        self._expire_relays(now, out)
        self._tick_probe(now, out)
        if now >= self._next_gossip:
            self._next_gossip = _advance(self._next_gossip, self.config.gossip_interval, now)
            self._gossip(now, out)
        if now >= self._next_push_pull:
            interval = push_pull_scale(self.config.push_pull_interval, self._live)
            self._next_push_pull = _advance(self._next_push_pull, interval, now)
            self._push_pull_round(out)
        if now >= self._next_join_sync:
            self._join_syncs_done += 1
            if self._join_syncs_done >= self.config.join_sync_rounds:
                self._next_join_sync = math.inf
            else:
                delay = join_sync_delay(self.config.probe_interval, self._join_syncs_done)
                self._next_join_sync = now + delay
            self._push_pull_round(out)
        self._reap(now)
        return out

    def _start(self, now: float) -> None:
        if self._started:
            return
        self._started = True
        self._self.last_heard = self._self.state_changed = now
        # Random phases, so a mesh started at once does not probe and gossip in lockstep.
        self._next_probe = now + self._rng.uniform(0, self.config.probe_interval)
        self._next_gossip = now + self._rng.uniform(0, self.config.gossip_interval)
        self._next_push_pull = now + self._rng.uniform(0, self.config.push_pull_interval)


def _advance(previous: float, interval: float, now: float) -> float:
    """The next periodic deadline after ``previous``, skipping missed ones (no bursts)."""
    following = previous + interval
    return following if following > now else now + interval
