"""The state of one node's membership view and the bookkeeping every part shares (no I/O).

:class:`MembershipState` holds the member table, records, suspicions, tombstones, the
broadcast queue, the local health score and the timers. Failure detection
(:mod:`~llmnode.nodes.membership.probing`) and dissemination
(:mod:`~llmnode.nodes.membership.dissemination`) build on it; :class:`Membership` in
:mod:`~llmnode.nodes.membership.machine` is the public face.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmnode.nodes.membership.broadcasts import BroadcastQueue
from llmnode.nodes.membership.config import MembershipConfig, retransmit_limit
from llmnode.nodes.membership.digests import DigestCache
from llmnode.nodes.membership.members import (
    LIVE_STATES,
    EventKind,
    KnownNode,
    Member,
    MemberEvent,
)
from llmnode.nodes.membership.suspicion import Suspicion
from llmnode.schemas.membership import (
    Alive,
    GossipItem,
    MemberStateName,
    RecordVersion,
    SignedRecord,
)

if TYPE_CHECKING:
    from llmnode.nodes.membership.probing import Probe, Relay


class MembershipState:
    """The fields of one node's view and the helpers that keep them consistent (``_live``
    counts, tombstones, events). Not used alone: :class:`Membership` is the public face."""

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
        #: Suspicions and deaths this node declared itself (not learned from gossip), by state.
        self.declared: Counter[str] = Counter()
        #: Called with each direct probe's round-trip time, in seconds (the node's histogram).
        self.on_probe_rtt: Callable[[float], None] | None = None
        self.stats: Counter[str] = Counter()  # push-pull outcomes, record pulls
        self._rng = rng
        self._verify_record = verify_record
        self._self = KnownNode(self_id, address, incarnation, 0.0)
        self._members: dict[bytes, KnownNode] = {self_id: self._self}
        self._records: dict[bytes, SignedRecord] = {}
        self._peers: list[bytes] = []  # probe order: every other known node
        self._peer_set: set[bytes] = set()
        self._probe_index = 0
        self._suspicions: dict[bytes, Suspicion] = {}
        self._tombstones: dict[bytes, float] = {}
        self._relays: dict[int, Relay] = {}
        self._probe: Probe | None = None
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
        self._next_join_sync = math.inf  # the next push-pull of a join's sync rounds
        self._join_syncs_done = 0
        self.own_record_floor = 0  # highest version of our own record seen from others
        self._wanted: dict[bytes, tuple[int, float]] = {}  # origin -> (version, pulled at)
        self._digests = DigestCache()

    def _retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_multiplier, self._live)

    def _piggyback(self) -> tuple[list[GossipItem], list[RecordVersion]]:
        """What rides on the next message: gossip items, and record announcements."""
        taken = self._broadcasts.take(self.config.max_gossip_bytes, self._retransmit_limit())
        gossip: list[GossipItem] = []
        announce: list[RecordVersion] = []
        for item in taken:
            if isinstance(item, RecordVersion):
                announce.append(item)
            else:
                gossip.append(item)
        return gossip, announce

    def _adjust_awareness(self, delta: int) -> None:
        limit = self.config.awareness_max_multiplier - 1
        self._awareness = min(limit, max(0, self._awareness + delta))

    def _refute(self, accused_incarnation: int) -> None:
        self._self.incarnation = max(self._self.incarnation, accused_incarnation) + 1
        self._adjust_awareness(1)
        self._broadcasts.enqueue(self.self_id, self._own_alive())

    def _set_state(self, member: KnownNode, state: MemberStateName, now: float) -> None:
        was_live = member.state in LIVE_STATES
        member.state = state
        member.state_changed = now
        is_live = state in LIVE_STATES
        self._live += int(is_live) - int(was_live)
        if state != "suspect":
            self._suspicions.pop(member.node, None)
        if is_live:
            self._tombstones.pop(member.node, None)
        elif member is not self._self:
            self._tombstones[member.node] = now

    def _reap(self, now: float) -> None:
        if self._wanted:  # pulls never answered: forget them (a later announcement retries)
            horizon = now - self.config.push_pull_interval
            for origin in [o for o, (_, at) in self._wanted.items() if at < horizon]:
                del self._wanted[origin]
        if not self._tombstones:
            return
        timeout = self.config.tombstone_timeout
        for node, since in list(self._tombstones.items()):
            if since + timeout <= now:  # the same sum as next_deadline, so it cannot spin
                del self._tombstones[node]
                member = self._members.pop(node, None)
                self._records.pop(node, None)
                self._peer_set.discard(node)
                if member is not None:  # the shell forgets it too (bus peer, view record)
                    self._events.append(
                        MemberEvent("forgotten", node, member.address, member.incarnation, now)
                    )

    def _own_alive(self) -> Alive:
        return Alive(self.self_id, self._self.incarnation, self.address)

    def _address_of(self, node: bytes, fallback: str) -> str:
        member = self._members.get(node)
        return member.address if member is not None else fallback

    def _random_members(self, count: int, accept: Callable[[KnownNode], bool]) -> list[KnownNode]:
        """Up to ``count`` distinct random other members that ``accept`` (memberlist's
        kRandomNodes: at most 3n random draws)."""
        peers = self._peers
        total = len(peers)
        chosen: list[KnownNode] = []
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

    def _emit(self, kind: EventKind, member: KnownNode, now: float) -> None:
        record = self._records.get(member.node)
        self._events.append(
            MemberEvent(kind, member.node, member.address, member.incarnation, now, record)
        )

    def _snapshot(self, member: KnownNode) -> Member:
        return Member(
            node=member.node,
            address=member.address,
            state=member.state,
            incarnation=member.incarnation,
            last_heard=member.last_heard,
            record=self._records.get(member.node),
            state_changed=member.state_changed,
        )
