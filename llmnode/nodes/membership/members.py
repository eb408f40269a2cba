"""What the membership machine says about members: its outputs and its per-member entry (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmnode.schemas.membership import MembershipMessage, MemberStateName, SignedRecord

EventKind = Literal["joined", "suspected", "alive", "dead", "left", "record_updated", "forgotten"]
LIVE_STATES = ("alive", "suspect")  # still members: probed, gossiped to, counted


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
    ``record_updated`` (a newer verified state record), ``forgotten`` (its tombstone expired: the
    member is gone from the table, and the shell drops what it kept about it)."""

    kind: EventKind
    node: bytes
    address: str
    incarnation: int
    at: float
    record: SignedRecord | None = None


class KnownNode:
    """One known member, mutable: what :class:`Member` snapshots."""

    __slots__ = (
        "address",
        "incarnation",
        "last_heard",
        "learned_at",
        "node",
        "state",
        "state_changed",
    )

    def __init__(self, node: bytes, address: str, incarnation: int, now: float) -> None:
        self.node = node
        self.address = address
        self.state: MemberStateName = "alive"
        self.incarnation = incarnation
        self.last_heard = now
        self.state_changed = now
        self.learned_at = now  # when this node first heard of it (see new_member_grace)
