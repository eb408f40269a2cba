"""This node's view of the mesh: every member's latest state record and observed load (no I/O).

Who is alive, suspect, dead or left is membership's to say, and only membership's: the view asks
it (:class:`MemberStates`) and keeps what membership does not: the verified, decoded state records
(name, resources, services), round-trip times and the load piggybacked on replies. Read by the
request path (:mod:`llmnode.nodes.requests.candidates`), ``llmnode peers`` and pub/sub. A member
membership forgets (its tombstone expired) is forgotten here too, so the view stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import msgspec

from llmnode.nodes.membership.members import LIVE_STATES
from llmnode.schemas.membership import MemberStateName
from llmnode.schemas.state import NodeState, ServiceInfo, ServiceLoad

LIVE = LIVE_STATES  # membership's rule of who is still a member, read here, not a second copy


class MemberStates(Protocol):
    """Where liveness comes from: :class:`llmnode.nodes.membership.Membership`."""

    def state_of(self, node: bytes) -> MemberStateName | None: ...


@dataclass(slots=True)
class Peer:
    """What this node knows about one member besides its liveness."""

    node: bytes
    node_text: str
    record: NodeState | None = None
    record_version: int = 0
    record_time: float = 0.0  # when we received that record


class SeenLoad(NamedTuple):
    """A service's load as a reply or load report told it (records do not carry load)."""

    queue_depth: int
    in_flight: int
    at: float  # when we heard it
    service_ms: float = 0.0  # the node's smoothed service time then; 0 means not told


class LoadBearing(Protocol):
    """A reply that carries its service's load: ``Accept``, ``Result``, ``LoadReport``."""

    @property
    def queue_depth(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def ewma_service_ms(self) -> float: ...


class MeshView:
    def __init__(self, self_id: bytes, self_text: str) -> None:
        self.self_id = self_id
        self.members: MemberStates | None = None  # set once membership runs
        self.peers: dict[bytes, Peer] = {self_id: Peer(node=self_id, node_text=self_text)}
        self.rtt_ms: dict[bytes, float] = {}
        # (node, service) -> the load piggybacked on its replies and load reports: fresher than
        # the record, which carries capabilities.
        self.fresh_load: dict[tuple[bytes, str], SeenLoad] = {}
        # Bumped whenever a record is stored or a member forgotten: whoever indexes the records
        # (:class:`llmnode.nodes.requests.candidates.ServiceIndex`) rebuilds when it moves.
        self.records_version = 0

    def state_of(self, node: bytes) -> str:
        """alive, suspect, dead or left, as membership says (this node: always alive)."""
        if node == self.self_id or self.members is None:
            return "alive"
        return self.members.state_of(node) or "dead"

    def set_record(
        self, node: bytes, node_text: str, record: NodeState, version: int, now: float
    ) -> None:
        peer = self.peers.get(node)
        if peer is None:
            peer = self.peers[node] = Peer(node=node, node_text=node_text)
        if version >= peer.record_version:
            if record is not peer.record:
                self.records_version += 1
            peer.record, peer.record_version, peer.record_time = record, version, now

    def record_version(self, node: bytes) -> int:
        peer = self.peers.get(node)
        return 0 if peer is None else peer.record_version

    def forget(self, node: bytes) -> None:
        """Drop everything about ``node`` (membership forgot it)."""
        if node == self.self_id:
            return
        if self.peers.pop(node, None) is not None:
            self.records_version += 1
        self.rtt_ms.pop(node, None)
        for key in [key for key in self.fresh_load if key[0] == node]:
            del self.fresh_load[key]

    def observe_rtt(self, node: bytes, rtt_ms: float) -> None:
        previous = self.rtt_ms.get(node)
        self.rtt_ms[node] = rtt_ms if previous is None else 0.8 * previous + 0.2 * rtt_ms

    def observe_load(
        self,
        node: bytes,
        service: str,
        queue_depth: int,
        in_flight: int,
        now: float,
        service_ms: float = 0.0,
    ) -> None:
        if queue_depth >= 0 and in_flight >= 0 and node in self.peers:
            if not service_ms > 0.0:  # not told (or nonsense): keep the last one we were told
                previous = self.fresh_load.get((node, service))
                service_ms = 0.0 if previous is None else previous.service_ms
            self.fresh_load[(node, service)] = SeenLoad(queue_depth, in_flight, now, service_ms)

    def observe_reply(self, node: bytes, service: str, reply: LoadBearing, now: float) -> None:
        """The load ``reply`` carries (see :meth:`observe_load`)."""
        self.observe_load(
            node, service, reply.queue_depth, reply.in_flight, now, reply.ewma_service_ms
        )

    def resolve(self, target: str) -> bytes | None:
        """A node named ``target``: its name, or a prefix (≥ 6 chars) of its base32 id."""
        for peer in self.peers.values():
            record = peer.record
            if record is not None and record.name == target:
                return peer.node
        if len(target) >= 6:
            for peer in self.peers.values():
                if peer.node_text.startswith(target):
                    return peer.node
        return None

    def hosts(self, service: str) -> list[tuple[Peer, ServiceInfo]]:
        """Live (alive or suspect) peers advertising ``service``, with its info."""
        found: list[tuple[Peer, ServiceInfo]] = []
        for peer in self.peers.values():
            if peer.record is None or self.state_of(peer.node) not in LIVE:
                continue
            for info in peer.record.services:
                if info.name == service:
                    found.append((peer, info))
        return found

    def current_load(self, peer: Peer, info: ServiceInfo) -> ServiceLoad:
        """``info``'s load with the freshest queue, in-flight count and service time known: from
        replies and load reports when newer than the record (records do not carry live load)."""
        fresh = self.fresh_load.get((peer.node, info.name))
        if fresh is None or fresh.at <= peer.record_time:
            return info.load
        return msgspec.structs.replace(
            info.load,
            queue_depth=fresh.queue_depth,
            in_flight=fresh.in_flight,
            ewma_service_ms=fresh.service_ms or info.load.ewma_service_ms,
        )

    def advertised_anywhere(self, service: str, only: bytes | None = None) -> bool:
        """Whether any node (or node ``only``) advertises ``service``, whatever its state."""
        return any(
            info.name == service
            for peer in self.peers.values()
            if peer.record is not None and only in (None, peer.node)
            for info in peer.record.services
        )

    def topic_nodes(self, topic: str) -> list[bytes]:
        """Live nodes with at least one subscriber to ``topic``."""
        return [
            peer.node
            for peer in self.peers.values()
            if peer.record is not None
            and self.state_of(peer.node) in LIVE
            and any(topic in info.topics for info in peer.record.services)
        ]
