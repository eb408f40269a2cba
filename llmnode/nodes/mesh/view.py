"""This node's view of the mesh: members and their latest state records (no I/O).

Fed by the membership state machine (who is alive, suspect, dead, left) and by decoded, verified
state records; read by the request path (:mod:`llmnode.nodes.requests.candidates`), ``llmnode
peers`` and pub/sub.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmnode.schemas.state import NodeState, ServiceInfo


@dataclass(slots=True)
class Peer:
    node: bytes
    node_text: str
    state: str = "alive"  # alive | suspect | dead | left
    incarnation: int = 0
    address: str = ""
    last_heard: float = 0.0
    record: NodeState | None = None
    record_version: int = 0
    record_time: float = 0.0  # when we received that record


class MeshView:
    def __init__(
        self,
        self_id: bytes,
        self_text: str,
    ) -> None:
        self.self_id = self_id
        self.peers: dict[bytes, Peer] = {}
        self.rtt_ms: dict[bytes, float] = {}
        # (node, service) -> (queue depth, in flight, when): load piggybacked on replies,
        # fresher than the gossiped record.
        self.fresh_load: dict[tuple[bytes, str], tuple[int, int, float]] = {}
        self.peers[self_id] = Peer(node=self_id, node_text=self_text)

    def peer(self, node: bytes, node_text: str) -> Peer:
        found = self.peers.get(node)
        if found is None:
            found = self.peers[node] = Peer(node=node, node_text=node_text)
        return found

    def set_record(
        self, node: bytes, node_text: str, record: NodeState, version: int, now: float
    ) -> None:
        peer = self.peer(node, node_text)
        if version >= peer.record_version:
            peer.record, peer.record_version, peer.record_time = record, version, now

    def observe_rtt(self, node: bytes, rtt_ms: float) -> None:
        previous = self.rtt_ms.get(node)
        self.rtt_ms[node] = rtt_ms if previous is None else 0.8 * previous + 0.2 * rtt_ms

    def observe_load(
        self, node: bytes, service: str, queue_depth: int, in_flight: int, now: float
    ) -> None:
        if queue_depth >= 0 and in_flight >= 0:
            self.fresh_load[(node, service)] = (queue_depth, in_flight, now)

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
            if peer.state not in ("alive", "suspect") or peer.record is None:
                continue
            for info in peer.record.services:
                if info.name == service:
                    found.append((peer, info))
        return found

    def advertised_anywhere(self, service: str) -> bool:
        return any(
            info.name == service
            for peer in self.peers.values()
            if peer.record is not None
            for info in peer.record.services
        )

    def topic_nodes(self, topic: str) -> list[bytes]:
        """Live nodes with at least one subscriber to ``topic``."""
        return [
            peer.node
            for peer in self.peers.values()
            if peer.state in ("alive", "suspect")
            and peer.record is not None
            and any(topic in info.topics for info in peer.record.services)
        ]
