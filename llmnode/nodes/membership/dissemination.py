"""Dissemination: gossip rounds, push-pull anti-entropy, and merging what others say (no I/O).

Every state change travels as a gossip item, piggybacked on Pings and Acks and sent in Gossip
messages to ``gossip_nodes`` random members every gossip interval. A new state record travels
lazily: its :class:`RecordVersion` is gossiped like an item, and a node that holds an older
version pulls the record from whoever announced it (:class:`RecordPull`), so each node receives
each record about once instead of once per retransmission. Push-pull repairs what gossip missed:
a join exchanges whole views; the periodic round sends a digest per bucket of the view
(:mod:`~llmnode.nodes.membership.digests`) and only the buckets that differ follow. Merging an
item applies SWIM's rules: a higher incarnation wins, Suspect/Dead/Left about ourselves are
refuted, and a new item is passed on once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from llmnode.nodes.membership.config import suspicion_timeout
from llmnode.nodes.membership.digests import bucket_count, bucket_of, differing
from llmnode.nodes.membership.members import (
    LIVE_STATES,
    EventKind,
    KnownNode,
    MemberEvent,
    Outbound,
)
from llmnode.nodes.membership.state import MembershipState
from llmnode.nodes.membership.suspicion import Suspicion
from llmnode.schemas.membership import (
    Alive,
    Dead,
    Gossip,
    GossipItem,
    Left,
    MemberSnapshot,
    PushPull,
    RecordPull,
    RecordVersion,
    SignedRecord,
    Suspect,
)

_PULL_ANSWER_BYTES = 60_000  # records answering one RecordPull, per Gossip message

_STATE_EVENTS: dict[str, EventKind] = {"suspect": "suspected", "dead": "dead", "left": "left"}


class Dissemination(MembershipState):
    """Spreads and merges gossip items and push-pull views."""

    def _gossip(self, now: float, out: list[Outbound]) -> None:
        if not self._broadcasts:
            return
        horizon = now - self.config.gossip_to_the_dead_time

        def gossipable(member: KnownNode) -> bool:
            return member.state in LIVE_STATES or (
                member.state == "dead" and member.state_changed > horizon
            )

        for target in self._random_members(self.config.gossip_nodes, gossipable):
            items, announce = self._piggyback()
            if not items and not announce:
                return
            message = Gossip(gossip=items, announce=announce)
            out.append(Outbound(target.node, target.address, message))

    def _push_pull_round(self, out: list[Outbound]) -> None:
        targets = self._random_members(1, lambda member: member.state == "alive")
        if targets and self.config.digest_push_pull:
            count = bucket_count(len(self._members))
            message = PushPull(members=[], reply=True, digest=self._digest(count))
            out.extend(Outbound(t.node, t.address, message) for t in targets)
        elif targets:
            message = self._push_pull(join=False, reply=True)
            out.extend(Outbound(t.node, t.address, message) for t in targets)
        elif self._seeds and not self._leaving:
            out.extend(self._join_seeds())  # alone: keep trying the seeds

    def _digest(self, count: int) -> list[int]:
        records = self._records
        return self._digests.digest(
            (
                (m.node, m.incarnation, m.state, r.version if (r := records.get(m.node)) else 0)
                for m in self._members.values()
            ),
            count,
        )

    def _answer_push_pull(self, sender: bytes, message: PushPull, out: list[Outbound]) -> None:
        """Reply to a push-pull already merged: records it wants, then its ``reply`` request
        (to a digest: the buckets that differ; to those buckets: ours, and what we want)."""
        address = self._address_of(sender, "")
        if not address:
            return
        if message.want:
            wanted = [self._records[o] for o in message.want if o in self._records]
            if wanted:
                out.append(Outbound(sender, address, PushPull(members=[], records=wanted)))
        if not message.reply:
            return
        if message.digest:
            count = len(message.digest)
            diff = differing(self._digest(count), message.digest)
            self.stats["push_pull_agreed" if not diff else "push_pull_differed"] += 1
            if diff:
                members, versions = self._buckets(set(diff), count)
                reply = PushPull(
                    members=members,
                    versions=versions,
                    buckets=diff,
                    bucket_count=count,
                    reply=True,
                )
                out.append(Outbound(sender, address, reply))
        elif message.bucket_count:
            count, chosen = message.bucket_count, set(message.buckets)
            members, _ = self._buckets(chosen, count)
            theirs = {v.origin: v.version for v in message.versions}
            records = [
                record
                for origin, record in self._records.items()
                if bucket_of(origin, count) in chosen and theirs.get(origin, 0) < record.version
            ]
            want = [
                origin
                for origin, version in theirs.items()
                if origin != self.self_id
                and version > (r.version if (r := self._records.get(origin)) else 0)
            ]
            reply = PushPull(
                members=members,
                records=records,
                want=want,
                buckets=message.buckets,
                bucket_count=count,
            )
            out.append(Outbound(sender, address, reply))
        else:
            out.append(Outbound(sender, address, self._push_pull(join=False, reply=False)))

    def _buckets(
        self, chosen: set[int], count: int
    ) -> tuple[list[MemberSnapshot], list[RecordVersion]]:
        """Our members and record versions in the buckets ``chosen`` of ``count``."""
        members = [
            MemberSnapshot(m.node, m.address, m.incarnation, m.state)
            for m in self._members.values()
            if bucket_of(m.node, count) in chosen
        ]
        versions = [
            RecordVersion(origin, record.version)
            for origin, record in self._records.items()
            if bucket_of(origin, count) in chosen
        ]
        return members, versions

    def _merge_announcements(
        self, sender: bytes, address: str, announce: list[RecordVersion], now: float
    ) -> list[Outbound]:
        """Pull the announced records newer than ours from ``sender`` (once per timeout)."""
        pull: list[bytes] = []
        for item in announce:
            origin = item.origin
            if origin == self.self_id:
                self.own_record_floor = max(self.own_record_floor, item.version)
                continue
            current = self._records.get(origin)
            if current is not None and current.version >= item.version:
                continue
            asked = self._wanted.get(origin)
            if (
                asked is not None
                and asked[0] >= item.version
                and asked[1] + self.config.probe_timeout > now
            ):
                continue  # already asked someone; retry elsewhere only after a timeout
            self._wanted[origin] = (item.version, now)
            pull.append(origin)
        address = self._address_of(sender, address)
        if not pull or not address:
            return []
        self.stats["record_pulls"] += 1
        return [Outbound(sender, address, RecordPull(origins=pull))]

    def _answer_pull(self, sender: bytes, message: RecordPull, out: list[Outbound]) -> None:
        address = self._address_of(sender, "")
        if not address:
            return
        batch: list[GossipItem] = []
        size = 0
        for origin in message.origins:
            record = self._records.get(origin)
            if record is None:
                continue
            if batch and size + len(record.payload) > _PULL_ANSWER_BYTES:
                out.append(Outbound(sender, address, Gossip(gossip=batch)))
                batch, size = [], 0
            batch.append(record)
            size += len(record.payload)
        if batch:
            out.append(Outbound(sender, address, Gossip(gossip=batch)))

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

    def _record_item(self, record: SignedRecord) -> GossipItem | RecordVersion:
        """What is gossiped about a new record: its announcement (or itself, the old way)."""
        if self.config.lazy_records:
            return RecordVersion(record.origin, record.version)
        return record

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

    def _apply_alive(self, item: Alive, now: float, announce: bool) -> None:
        if item.node == self.self_id:
            if item.incarnation > self._self.incarnation and not self._leaving:
                self._refute(item.incarnation)  # an echo of a previous life
            return
        member = self._members.get(item.node)
        if member is None:
            member = KnownNode(item.node, item.address, item.incarnation, now)
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
        self._suspicions[item.node] = Suspicion(
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

    def _accused(self, node: bytes, incarnation: int) -> KnownNode | None:
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
        member: KnownNode,
        item: Suspect | Dead | Left,
        state: Literal["suspect", "dead", "left"],
        now: float,
        announce: bool,
    ) -> None:
        """Apply an accusation that holds: take its incarnation and ``state``, tell the shell,
        and pass the item on when ``announce``."""
        member.incarnation = item.incarnation
        if not isinstance(item, Left) and item.accuser == self.self_id:
            self.declared[state] += 1
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
        asked = self._wanted.get(record.origin)
        if asked is not None and asked[0] <= record.version:
            del self._wanted[record.origin]
        member = self._members.get(record.origin)
        address = member.address if member is not None else ""
        incarnation = member.incarnation if member is not None else 0
        self._events.append(
            MemberEvent("record_updated", record.origin, address, incarnation, now, record)
        )
        if announce:
            self._broadcasts.enqueue((b"record", record.origin), self._record_item(record))
