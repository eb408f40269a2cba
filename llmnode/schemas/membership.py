"""SWIM membership messages, gossip items and the origin-signed node record (no I/O).

Top-level messages (they derive :class:`WireMessage` and join the union codec): ``Ping``,
``Ack``, ``PingReq``, ``Nack`` (Lifeguard), ``Gossip`` (a dissemination round with no reply
wanted), ``RecordPull`` (fetch announced records) and ``PushPull`` (anti-entropy and join).
Ping, Ack and Gossip carry a list of gossip items: plain tagged structs (``Alive``, ``Suspect``,
``Dead``, ``Left``, ``SignedRecord``) that are never messages on their own. A new record is
announced as a :class:`RecordVersion` in ``announce`` (last, with a default: older nodes ignore
it) rather than pushed whole.

A :class:`SignedRecord` is a node's versioned state (``payload`` = msgpack of
:class:`llmnode.schemas.state.NodeState`, opaque to membership) signed by its origin over
:meth:`SignedRecord.signed_content`, so a relay cannot forge or alter it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from llmnode.schemas.base import NODE_ID_BYTES, NODE_ID_DESCRIPTION, WireMessage

MAX_ADDRESS_BYTES = 256
MAX_RECORD_BYTES = 64 * 1024
MAX_GOSSIP_ITEMS = 512
MAX_MEMBERS = 100_000
RECORD_DOMAIN = b"llmnode-record-v1\x00"

MemberId = Annotated[
    bytes,
    msgspec.Meta(
        min_length=NODE_ID_BYTES,
        max_length=NODE_ID_BYTES,
        description=NODE_ID_DESCRIPTION,
    ),
]
Address = Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS_BYTES)]
Counter = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
MemberStateName = Literal["alive", "suspect", "dead", "left"]


class SignedRecord(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """A node's state record, version ``version``, signed by ``origin`` (newest version wins)."""

    origin: MemberId
    version: Counter
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_RECORD_BYTES)]
    signature: Annotated[bytes, msgspec.Meta(max_length=128)]

    def signed_content(self) -> bytes:
        """The bytes the origin signs: a domain tag, the origin, the version, the payload."""
        return signed_record_content(self.origin, self.version, self.payload)


def signed_record_content(origin: bytes, version: int, payload: bytes) -> bytes:
    """What an origin signs for a record (before the record exists to call the method on)."""
    return RECORD_DOMAIN + origin + version.to_bytes(8, "big") + payload


class Alive(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """``node`` is alive at ``incarnation`` and reachable at ``address``."""

    node: MemberId
    incarnation: Counter
    address: Address


class Suspect(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """``accuser`` failed to probe ``node`` at ``incarnation``."""

    node: MemberId
    incarnation: Counter
    accuser: MemberId


class Dead(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """``accuser``'s suspicion of ``node`` at ``incarnation`` timed out."""

    node: MemberId
    incarnation: Counter
    accuser: MemberId


class Left(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """``node`` left the mesh on purpose at ``incarnation`` (seen as left, not dead)."""

    node: MemberId
    incarnation: Counter


GossipItem = Alive | Suspect | Dead | Left | SignedRecord
GossipList = Annotated[list[GossipItem], msgspec.Meta(max_length=MAX_GOSSIP_ITEMS)]


class RecordVersion(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """``origin``'s record exists at ``version``: announced instead of the record itself (the
    receiver pulls the body with :class:`RecordPull` if it is newer than what it holds)."""

    origin: MemberId
    version: Counter


Announcements = Annotated[list[RecordVersion], msgspec.Meta(max_length=MAX_GOSSIP_ITEMS)]
MemberIds = Annotated[list[MemberId], msgspec.Meta(max_length=MAX_MEMBERS)]


class MemberSnapshot(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """One member as the sender of a push-pull sees it."""

    node: MemberId
    address: Address
    incarnation: Counter
    state: MemberStateName


class Ping(WireMessage, frozen=True):
    """A probe of ``target`` (the receiver acks only if it is ``target``)."""

    seq: Counter
    target: MemberId
    gossip: GossipList = msgspec.field(default_factory=list)
    source_address: Address = ""  # where to send the Ack when the sender is not yet known
    announce: Announcements = msgspec.field(default_factory=list)  # new records, lazily


class Ack(WireMessage, frozen=True):
    """Answer to a Ping; a relay forwards it to the PingReq's sender with that sender's seq."""

    seq: Counter
    gossip: GossipList = msgspec.field(default_factory=list)
    announce: Announcements = msgspec.field(default_factory=list)


class PingReq(WireMessage, frozen=True):
    """Ask the receiver to probe ``target`` on our behalf and relay the Ack (or a Nack)."""

    seq: Counter
    target: MemberId
    target_address: Address
    gossip: GossipList = msgspec.field(default_factory=list)
    source_address: Address = ""
    announce: Announcements = msgspec.field(default_factory=list)


class Nack(WireMessage, frozen=True):
    """Lifeguard: a relay heard nothing from the target in time (so the relay is alive)."""

    seq: Counter


class Gossip(WireMessage, frozen=True):
    """A dissemination round: gossip items, no reply wanted."""

    gossip: GossipList = msgspec.field(default_factory=list)
    announce: Announcements = msgspec.field(default_factory=list)


class RecordPull(WireMessage, frozen=True):
    """Send me the records of ``origins`` (answering an announcement; the answer is a
    :class:`Gossip` holding them)."""

    origins: Annotated[list[MemberId], msgspec.Meta(max_length=MAX_GOSSIP_ITEMS)]


class PushPull(WireMessage, frozen=True):
    """State exchange: anti-entropy, and the first message of a join.

    Whole (a join, or an older node): every member and record. By digest (the later fields,
    which older nodes ignore): ``digest`` holds one hash per bucket of the sender's view; the
    receiver answers with ``members`` and record ``versions`` of the buckets that differ
    (``buckets`` of ``bucket_count``); the first sender answers those buckets with its members,
    the records the other lacks, and the ones it ``want``s, which come back in a last PushPull.
    """

    members: Annotated[list[MemberSnapshot], msgspec.Meta(max_length=MAX_MEMBERS)]
    records: Annotated[list[SignedRecord], msgspec.Meta(max_length=MAX_MEMBERS)] = msgspec.field(
        default_factory=list
    )
    join: bool = False
    reply: bool = False
    digest: Annotated[list[int], msgspec.Meta(max_length=MAX_MEMBERS)] = msgspec.field(
        default_factory=list
    )
    buckets: Annotated[list[int], msgspec.Meta(max_length=MAX_MEMBERS)] = msgspec.field(
        default_factory=list
    )
    bucket_count: Counter = 0
    versions: Annotated[list[RecordVersion], msgspec.Meta(max_length=MAX_MEMBERS)] = msgspec.field(
        default_factory=list
    )
    want: MemberIds = msgspec.field(default_factory=list)


MembershipMessage = Ping | Ack | PingReq | Nack | Gossip | RecordPull | PushPull

_item_encoder = msgspec.msgpack.Encoder()


def item_size(item: GossipItem | RecordVersion) -> int:
    """Encoded size of one gossip item in bytes (for piggyback budgets)."""
    return len(_item_encoder.encode(item))
