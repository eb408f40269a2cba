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
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from llmnode.errors import ProtocolError
from llmnode.nodes.membership.broadcasts import BroadcastQueue
from llmnode.nodes.membership.config import (
    MembershipConfig,
    push_pull_scale,
    remaining_suspicion,
    retransmit_limit,
    suspicion_timeout,
)
from llmnode.schemas.membership import (
    Ack,
    Alive,
    Dead,
    Gossip,
    GossipItem,
    Left,
    MembershipMessage,
    MemberSnapshot,
    MemberStateName,
    Nack,
    Ping,
    PingReq,
    PushPull,
    SignedRecord,
    Suspect,
)

EventKind = Literal["joined", "suspected", "alive", "dead", "left", "record_updated"]
_LIVE = ("alive", "suspect")
_STATE_EVENTS: dict[str, EventKind] = {"suspect": "suspected", "dead": "dead", "left": "left"}


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message for the shell to send to node ``to`` at ``address``."""

    to: bytes
    address: str
    message: MembershipMessage


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one member as this node sees it."""

    node: bytes
    address: str
    state: MemberStateName
    incarnation: int
    last_heard: float
    record: SignedRecord | None
    state_changed: float = 0.0


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """Something changed about ``node``: ``joined`` (new, or back after leaving), ``suspected``,
    ``alive`` (refuted a suspicion or came back from dead), ``dead``, ``left``,
    ``record_updated`` (a newer verified state record)."""

    kind: EventKind
    node: bytes
    address: str
    incarnation: int
    at: float
    record: SignedRecord | None = None


class _Node:
    __slots__ = ("address", "incarnation", "last_heard", "node", "state", "state_changed")

    def __init__(self, node: bytes, address: str, incarnation: int, now: float) -> None:
        self.node = node
        self.address = address
        self.state: MemberStateName = "alive"
        self.incarnation = incarnation
        self.last_heard = now
        self.state_changed = now


class _Suspicion:
    __slots__ = ("confirmations", "expected", "incarnation", "maximum", "minimum", "started")

    def __init__(
        self, incarnation: int, accuser: bytes, now: float, bounds: tuple[float, float], k: int
    ) -> None:
        self.incarnation = incarnation
        self.started = now
        self.minimum, self.maximum = bounds
        self.expected = k
        self.confirmations = {accuser}  # the first accuser does not count as a confirmation

    def confirm(self, accuser: bytes) -> bool:
        if len(self.confirmations) - 1 >= self.expected or accuser in self.confirmations:
            return False
        self.confirmations.add(accuser)
        return True

    def deadline(self) -> float:
        timeout = remaining_suspicion(
            len(self.confirmations) - 1, self.expected, self.minimum, self.maximum
        )
        return self.started + timeout


class _Probe:
    __slots__ = (
        "deadline",
        "expected_nacks",
        "indirect_at",
        "indirect_sent",
        "nacks",
        "seq",
        "target",
    )

    def __init__(self, target: bytes, seq: int, indirect_at: float, deadline: float) -> None:
        self.target = target
        self.seq = seq
        self.indirect_at = indirect_at
        self.deadline = deadline
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


@dataclass(slots=True)
class _Relay:
    requester: bytes
    address: str
    seq: int
    deadline: float


class Membership:
    """One node's view of the mesh. Pure: time comes in as ``now`` (seconds, any epoch)."""

    def __init__(
        self,
        self_id: bytes,
        address: str,
        config: MembershipConfig,
        *,
        rng: random.Random,
        incarnation: int = 0,
        verify_record: Callable[[SignedRecord], bool],
    ) -> None:
        self.self_id = self_id
        self.address = address
        self.config = config
        self.rejections: Counter[str] = Counter()
        self._rng = rng
        self._verify_record = verify_record
        self._self = _Node(self_id, address, incarnation, 0.0)
        self._members: dict[bytes, _Node] = {self_id: self._self}
        self._records: dict[bytes, SignedRecord] = {}
        self._peers: list[bytes] = []  # probe order: every other known node
        self._peer_set: set[bytes] = set()
        self._probe_index = 0
        self._suspicions: dict[bytes, _Suspicion] = {}
        self._tombstones: dict[bytes, float] = {}
        self._relays: dict[int, _Relay] = {}
        self._probe: _Probe | None = None
        self._broadcasts = BroadcastQueue(config.max_broadcast_queue)
        self._events: list[MemberEvent] = []
        self._seeds: list[tuple[bytes, str]] = []
        self._awareness = 0
        self._sequence = 0
        self._live = 1  # members alive or suspect, self included
        self._leaving = False
        self._started = False
        self._next_probe = 0.0
        self._next_gossip = 0.0
        self._next_push_pull = 0.0
        self.own_record_floor = 0  # highest version of our own record seen from others

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

    def record(self, node: bytes) -> SignedRecord | None:
        return self._records.get(node)

    def drain_events(self) -> list[MemberEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float:
        """When :meth:`tick` should run next (0.0 before the first join, receive or tick)."""
        if not self._started:
            return 0.0
        deadline = min(self._next_probe, self._next_gossip, self._next_push_pull)
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
        """Push-pull our state to every seed; their replies fill in the mesh."""
        self._start(now)
        self._seeds = [(node, address) for node, address in seeds if node != self.self_id]
        self._broadcasts.enqueue(self.self_id, self._own_alive())
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
        targets = self._random_members(count, lambda member: member.state in _LIVE)
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
        self._broadcasts.enqueue((b"record", self.self_id), record)

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
        if isinstance(message, Ping):
            self._merge(message.gossip, now)
            if message.target != self.self_id:
                self.rejections["wrong_target"] += 1
                return out
            address = self._address_of(sender, message.source_address)
            if address:
                ack = Ack(seq=message.seq, gossip=self._piggyback())
                out.append(Outbound(sender, address, ack))
        elif isinstance(message, Ack):
            self._merge(message.gossip, now)
            self._on_ack(message.seq, out)
        elif isinstance(message, Nack):
            if self._probe is not None and message.seq == self._probe.seq:
                self._probe.nacks += 1
        elif isinstance(message, PingReq):
            self._merge(message.gossip, now)
            self._relay(sender, message, now, out)
        elif isinstance(message, Gossip):
            self._merge(message.gossip, now)
        elif isinstance(message, PushPull):
            self._merge_push_pull(sender, message, now)
            if message.reply:
                address = self._address_of(sender, "")
                if address:
                    out.append(Outbound(sender, address, self._push_pull(join=False, reply=False)))
        else:
            self.rejections["unexpected_message"] += 1
        return out

    def tick(self, now: float) -> list[Outbound]:
        """Advance timers to ``now``: suspicions, relays, probes, gossip, push-pull, reaping."""
        self._start(now)
        out: list[Outbound] = []
        for node, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline():
                del self._suspicions[node]
                member = self._members.get(node)
                if member is not None and member.state == "suspect":
                    self._apply_dead(Dead(node, member.incarnation, self.self_id), now, True)
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                out.append(Outbound(relay.requester, relay.address, Nack(seq=relay.seq)))
        self._tick_probe(now, out)
        if now >= self._next_gossip:
            self._next_gossip = _advance(self._next_gossip, self.config.gossip_interval, now)
            self._gossip(now, out)
        if now >= self._next_push_pull:
            interval = push_pull_scale(self.config.push_pull_interval, self._live)
            self._next_push_pull = _advance(self._next_push_pull, interval, now)
            self._push_pull_round(out)
        self._reap(now)
        return out

    # ---- probing ---------------------------------------------------------------------------

    def _scaled(self, timeout: float) -> float:
        return timeout * (self._awareness + 1)

    def _adjust_awareness(self, delta: int) -> None:
        limit = self.config.awareness_max_multiplier - 1
        self._awareness = min(limit, max(0, self._awareness + delta))

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
            if target is not None and target.state in _LIVE:
                self._apply_suspect(
                    Suspect(target.node, target.incarnation, self.self_id), now, True
                )
        if self._probe is None and now >= self._next_probe:
            self._next_probe = now + self._scaled(self.config.probe_interval)
            if self._leaving:
                return
            target = self._next_probe_target()
            if target is None:
                return
            self._sequence += 1
            self._probe = _Probe(
                target.node,
                self._sequence,
                indirect_at=now + self._scaled(self.config.probe_timeout),
                deadline=self._next_probe,
            )
            gossip: list[GossipItem] = []
            if target.state == "suspect":  # let it refute at once
                gossip.append(Suspect(target.node, target.incarnation, self.self_id))
            gossip.extend(self._piggyback())
            ping = Ping(
                seq=self._sequence, target=target.node, gossip=gossip, source_address=self.address
            )
            out.append(Outbound(target.node, target.address, ping))

    def _next_probe_target(self) -> _Node | None:
        for _ in range(2):
            while self._probe_index < len(self._peers):
                node = self._peers[self._probe_index]
                self._probe_index += 1
                member = self._members.get(node)
                if member is not None and member.state in _LIVE:
                    return member
            self._peers = [node for node in self._members if node != self.self_id]
            self._peer_set = set(self._peers)
            self._rng.shuffle(self._peers)
            self._probe_index = 0
        return None

    def _on_ack(self, seq: int, out: list[Outbound]) -> None:
        probe = self._probe
        if probe is not None and seq == probe.seq:
            self._probe = None
            self._adjust_awareness(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            ack = Ack(seq=relay.seq, gossip=self._piggyback())
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
        self._relays[self._sequence] = _Relay(sender, address, request.seq, deadline)
        ping = Ping(
            seq=self._sequence,
            target=request.target,
            gossip=self._piggyback(),
            source_address=self.address,
        )
        out.append(Outbound(request.target, request.target_address, ping))

    # ---- dissemination ---------------------------------------------------------------------

    def _retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_multiplier, self._live)

    def _piggyback(self) -> list[GossipItem]:
        return self._broadcasts.take(self.config.max_gossip_bytes, self._retransmit_limit())

    def _gossip(self, now: float, out: list[Outbound]) -> None:
        if not self._broadcasts:
            return
        horizon = now - self.config.gossip_to_the_dead_time

        def gossipable(member: _Node) -> bool:
            return member.state in _LIVE or (
                member.state == "dead" and member.state_changed > horizon
            )

        for target in self._random_members(self.config.gossip_nodes, gossipable):
            items = self._piggyback()
            if not items:
                return
            out.append(Outbound(target.node, target.address, Gossip(gossip=items)))

    def _push_pull_round(self, out: list[Outbound]) -> None:
        targets = self._random_members(1, lambda member: member.state == "alive")
        if targets:
            message = self._push_pull(join=False, reply=True)
            out.extend(Outbound(t.node, t.address, message) for t in targets)
        elif self._seeds and not self._leaving:
            out.extend(self._join_seeds())  # alone: keep trying the seeds

    def _join_seeds(self) -> list[Outbound]:
        message = self._push_pull(join=True, reply=True)
        return [Outbound(node, address, message) for node, address in self._seeds]

    def _push_pull(self, *, join: bool, reply: bool) -> PushPull:
        members = [
            MemberSnapshot(m.node, m.address, m.incarnation, m.state)
            for m in self._members.values()
        ]
        return PushPull(
            members=members, records=list(self._records.values()), join=join, reply=reply
        )

    def _merge(self, items: Iterable[GossipItem], now: float) -> None:
        for item in items:
            if isinstance(item, Alive):
                self._apply_alive(item, now, True)
            elif isinstance(item, Suspect):
                self._apply_suspect(item, now, True)
            elif isinstance(item, Dead):
                self._apply_dead(item, now, True)
            elif isinstance(item, Left):
                self._apply_left(item, now, True)
            else:
                self._apply_record(item, now, True)

    def _merge_push_pull(self, sender: bytes, message: PushPull, now: float) -> None:
        for snapshot in message.members:
            if snapshot.state == "alive":
                announce = message.join and snapshot.node == sender
                alive = Alive(snapshot.node, snapshot.incarnation, snapshot.address)
                self._apply_alive(alive, now, announce)
            elif snapshot.state == "left":
                self._apply_left(Left(snapshot.node, snapshot.incarnation), now, False)
            else:  # dead or suspect elsewhere: suspect here, so the node gets to refute
                self._apply_suspect(Suspect(snapshot.node, snapshot.incarnation, sender), now, True)
        for record in message.records:
            self._apply_record(record, now, False)

    # ---- state changes ---------------------------------------------------------------------

    def _apply_alive(self, item: Alive, now: float, announce: bool) -> None:
        if item.node == self.self_id:
            if item.incarnation > self._self.incarnation and not self._leaving:
                self._refute(item.incarnation)  # an echo of a previous life
            return
        member = self._members.get(item.node)
        if member is None:
            member = _Node(item.node, item.address, item.incarnation, now)
            self._members[item.node] = member
            self._live += 1
            if item.node not in self._peer_set:  # probe it soon: a random place in the order
                self._peer_set.add(item.node)
                self._peers.append(item.node)
                index = self._rng.randrange(len(self._peers))
                self._peers[index], self._peers[-1] = self._peers[-1], self._peers[index]
            self._emit("joined", member, now)
        elif item.incarnation > member.incarnation:
            previous = member.state
            member.incarnation = item.incarnation
            member.address = item.address
            member.last_heard = now
            if previous != "alive":
                self._set_state(member, "alive", now)
                self._emit("joined" if previous == "left" else "alive", member, now)
        else:
            return
        if announce:
            self._broadcasts.enqueue(item.node, item)

    def _apply_suspect(self, item: Suspect, now: float, announce: bool) -> None:
        member = self._accused(item.node, item.incarnation)
        if member is None:
            return
        if member.state == "suspect":
            suspicion = self._suspicions.get(item.node)
            if suspicion is not None and suspicion.confirm(item.accuser) and announce:
                self._broadcasts.enqueue(item.node, item)
            return
        if member.state != "alive":
            return
        minimum = suspicion_timeout(
            self.config.suspicion_multiplier, self._live, self.config.probe_interval
        )
        maximum = self.config.suspicion_max_timeout_multiplier * minimum
        expected = self.config.suspicion_confirmations
        if self._live - 2 < expected:
            expected = 0
        self._suspicions[item.node] = _Suspicion(
            item.incarnation, item.accuser, now, (minimum, maximum), expected
        )
        self._change_state(member, item, "suspect", now, announce)

    def _apply_dead(self, item: Dead, now: float, announce: bool) -> None:
        member = self._accused(item.node, item.incarnation)
        if member is not None and member.state not in ("dead", "left"):
            self._change_state(member, item, "dead", now, announce)

    def _apply_left(self, item: Left, now: float, announce: bool) -> None:
        member = self._accused(item.node, item.incarnation)
        if member is not None and member.state != "left":
            self._change_state(member, item, "left", now, announce)

    def _accused(self, node: bytes, incarnation: int) -> _Node | None:
        """The member a Suspect, Dead or Left item at ``incarnation`` applies to, or None (for
        an unknown node or a stale item). An item about ourselves is refuted instead."""
        if node == self.self_id:
            if incarnation >= self._self.incarnation and not self._leaving:
                self._refute(incarnation)
            return None
        member = self._members.get(node)
        if member is None or incarnation < member.incarnation:
            return None
        return member

    def _change_state(
        self,
        member: _Node,
        item: Suspect | Dead | Left,
        state: Literal["suspect", "dead", "left"],
        now: float,
        announce: bool,
    ) -> None:
        """Apply an accusation that holds: take its incarnation and ``state``, tell the shell,
        and pass the item on when ``announce``."""
        member.incarnation = item.incarnation
        self._set_state(member, state, now)
        self._emit(_STATE_EVENTS[state], member, now)
        if announce:
            self._broadcasts.enqueue(item.node, item)

    def _apply_record(self, record: SignedRecord, now: float, announce: bool) -> None:
        if record.origin == self.self_id:
            self.own_record_floor = max(self.own_record_floor, record.version)
            return
        current = self._records.get(record.origin)
        if current is not None and record.version <= current.version:
            return
        if not self._verify_record(record):
            self.rejections["bad_record"] += 1
            return
        self._records[record.origin] = record
        member = self._members.get(record.origin)
        address = member.address if member is not None else ""
        incarnation = member.incarnation if member is not None else 0
        self._events.append(
            MemberEvent("record_updated", record.origin, address, incarnation, now, record)
        )
        if announce:
            self._broadcasts.enqueue((b"record", record.origin), record)

    def _refute(self, accused_incarnation: int) -> None:
        self._self.incarnation = max(self._self.incarnation, accused_incarnation) + 1
        self._adjust_awareness(1)
        self._broadcasts.enqueue(self.self_id, self._own_alive())

    def _set_state(self, member: _Node, state: MemberStateName, now: float) -> None:
        was_live = member.state in _LIVE
        member.state = state
        member.state_changed = now
        is_live = state in _LIVE
        self._live += int(is_live) - int(was_live)
        if state != "suspect":
            self._suspicions.pop(member.node, None)
        if is_live:
            self._tombstones.pop(member.node, None)
        elif member is not self._self:
            self._tombstones[member.node] = now

    def _reap(self, now: float) -> None:
        if not self._tombstones:
            return
        timeout = self.config.tombstone_timeout
        for node, since in list(self._tombstones.items()):
            if since + timeout <= now:  # the same sum as next_deadline, so it cannot spin
                del self._tombstones[node]
                self._members.pop(node, None)
                self._records.pop(node, None)
                self._peer_set.discard(node)

    # ---- helpers ---------------------------------------------------------------------------

    def _start(self, now: float) -> None:
        if self._started:
            return
        self._started = True
        self._self.last_heard = self._self.state_changed = now
        # Random phases, so a mesh started at once does not probe and gossip in lockstep.
        self._next_probe = now + self._rng.uniform(0, self.config.probe_interval)
        self._next_gossip = now + self._rng.uniform(0, self.config.gossip_interval)
        self._next_push_pull = now + self._rng.uniform(0, self.config.push_pull_interval)

    def _own_alive(self) -> Alive:
        return Alive(self.self_id, self._self.incarnation, self.address)

    def _address_of(self, node: bytes, fallback: str) -> str:
        member = self._members.get(node)
        return member.address if member is not None else fallback

    def _random_members(self, count: int, accept: Callable[[_Node], bool]) -> list[_Node]:
        """Up to ``count`` distinct random other members that ``accept`` (memberlist's
        kRandomNodes: at most 3n random draws)."""
        peers = self._peers
        total = len(peers)
        chosen: list[_Node] = []
        seen: set[bytes] = set()
        for _ in range(3 * total):
            if len(chosen) >= count:
                break
            node = peers[self._rng.randrange(total)]
            if node in seen:
                continue
            seen.add(node)
            member = self._members.get(node)
            if member is not None and accept(member):
                chosen.append(member)
        return chosen

    def _emit(self, kind: EventKind, member: _Node, now: float) -> None:
        record = self._records.get(member.node)
        self._events.append(
            MemberEvent(kind, member.node, member.address, member.incarnation, now, record)
        )

    def _snapshot(self, member: _Node) -> Member:
        return Member(
            node=member.node,
            address=member.address,
            state=member.state,
            incarnation=member.incarnation,
            last_heard=member.last_heard,
            record=self._records.get(member.node),
            state_changed=member.state_changed,
        )


def _advance(previous: float, interval: float, now: float) -> float:
    """The next periodic deadline after ``previous``, skipping missed ones (no bursts)."""
    following = previous + interval
    return following if following > now else now + interval
