"""Many membership state machines over a memory network on a virtual clock (no real I/O).

:class:`Simulation` is the event loop the node process would be, for N nodes in one process:
it delivers due messages to :meth:`Membership.receive`, calls :meth:`Membership.tick` at each
node's :meth:`Membership.next_deadline`, and routes every :class:`Outbound` through a
:class:`MemoryNetwork` (loss, delay, partitions, slow nodes). Messages travel as objects; with
``codec=True`` each one is encoded with the real msgspec codec (and decoded on arrival), and
the bytes are counted in :attr:`Simulation.bytes_sent`. Used by tests and benchmarks/gossip.py.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from llmnode.bus.memory import MemoryNetwork
from llmnode.nodes.membership import MemberEvent, Membership, MembershipConfig, Outbound
from llmnode.nodes.membership.config import suspicion_timeout
from llmnode.schemas.membership import MemberSnapshot, PushPull, SignedRecord
from llmnode.schemas.messages import decode, encode

Payload = tuple[bytes, object]  # (sender, message or its encoded bytes)


def node_id(index: int) -> bytes:
    """The 32-byte node id of simulated node ``index``."""
    return index.to_bytes(32, "big")


def node_address(index: int) -> str:
    return f"mem://node-{index}"


def accept_any_record(record: SignedRecord) -> bool:
    return True


def epidemic_rounds(members: int, fanout: int, fraction: float = 0.999) -> float:
    """Rounds for a push epidemic to reach ``fraction`` of ``members``: solves
    fraction = 1 / (1 + (N + 1) · e^(−fanout · r / 2)) for r."""
    return 2.0 / fanout * math.log((members + 1) / (1.0 / fraction - 1.0))


def detection_bound(config: MembershipConfig, members: int) -> float:
    """Seconds within which every live member should declare a crashed node dead: until
    someone probes it (at most min(N−1, 10) probe intervals: round-robin probing hits each
    member once per N−1 intervals per prober, and with many probers a miss for 10 intervals
    has odds e^−10), the failed probe itself (one interval), the maximum suspicion timeout,
    and 1.5× the epidemic model's rounds to spread the Dead item."""
    first_probe = min(members - 1, 10) * config.probe_interval + config.probe_interval
    minimum = suspicion_timeout(config.suspicion_multiplier, members, config.probe_interval)
    maximum = config.suspicion_max_timeout_multiplier * minimum
    spread = 1.5 * epidemic_rounds(members, config.gossip_nodes) * config.gossip_interval
    return first_probe + maximum + spread


def dissemination_rounds(
    config: MembershipConfig,
    members: int,
    seed: int,
    *,
    record: SignedRecord,
    window_rounds: int = 40,
    fraction: float = 0.999,
) -> tuple[float | None, float | None]:
    """Gossip rounds for a join, then for ``record`` (node 1's new state), to reach ``fraction``
    of ``members`` simulated nodes; None where it did not within ``window_rounds``."""
    simulation = Simulation.create(config, seed=seed)
    simulation.bootstrap(members)
    simulation.run_for(3.0)
    needed = math.ceil(fraction * members)
    interval = config.gossip_interval
    start = simulation.now
    simulation.join(members, seeds=[0])
    simulation.run_for(window_rounds * interval)
    joined = simulation.time_to_reach("joined", node_id(members), needed)
    start_record = simulation.now
    simulation.set_record(1, record)
    simulation.run_for(window_rounds * interval)
    updated = simulation.time_to_reach("record_updated", node_id(1), needed - 1)
    return (
        None if joined is None else (joined - start) / interval,
        None if updated is None else (updated - start_record) / interval,
    )


def join_storm(
    config: MembershipConfig,
    members: int,
    seed: int,
    *,
    spread: float = 1.5,
    loss: float = 0.0,
    connect_delay: float = 0.0,
    limit: float = 60.0,
) -> tuple[float | None, Simulation]:
    """Node 0 starts alone; the other ``members`` − 1 join through it at random times within
    ``spread`` seconds (as 31 processes started at once come up). Seconds from the last join
    until every node sees all ``members`` alive (None: not within ``limit``), and the
    simulation (its events: suspicions on the way)."""
    simulation = Simulation.create(config, seed=seed, loss=loss, connect_delay=connect_delay)
    simulation.join(0, seeds=[])
    simulation.run_for(2.0)
    rng = random.Random(seed)
    start = simulation.now
    for index, at in enumerate(sorted(rng.uniform(0, spread) for _ in range(members - 1)), 1):
        simulation.run_until(start + at)
        simulation.join(index, seeds=[0])
    last = simulation.now
    step = config.gossip_interval / 4
    while simulation.now - last < limit:
        simulation.run_for(step)
        if simulation.count(lambda machine: _all_alive(machine, members)) == members:
            return simulation.now - last, simulation
    return None, simulation


def _all_alive(machine: Membership, members: int) -> bool:
    return machine.alive_count == members and all(
        member.state == "alive" for member in machine.members()
    )


@dataclass
class ObservedEvent:
    at: float
    observer: bytes
    event: MemberEvent


@dataclass
class Simulation:
    """N simulated nodes. Build with :meth:`create`; add nodes, crash, restart, run."""

    config: MembershipConfig
    network: MemoryNetwork[Payload]
    seed: int = 0
    codec: bool = False
    verify_record: Callable[[SignedRecord], bool] = accept_any_record
    nodes: dict[bytes, Membership] = field(default_factory=dict)
    addresses: dict[str, bytes] = field(default_factory=dict)
    crashed: set[bytes] = field(default_factory=set)
    events: list[ObservedEvent] = field(default_factory=list)
    bytes_sent: int = 0
    frames_sent: int = 0
    record_events: bool = True
    _deadlines: list[tuple[float, int, bytes]] = field(default_factory=list)
    _stamp: dict[bytes, int] = field(default_factory=dict)
    _counter: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def create(
        cls,
        config: MembershipConfig,
        *,
        seed: int = 0,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.0005, 0.002),
        duplicate: float = 0.0,
        connect_delay: float = 0.0,
        codec: bool = False,
        verify_record: Callable[[SignedRecord], bool] = accept_any_record,
    ) -> Simulation:
        network: MemoryNetwork[Payload] = MemoryNetwork(
            seed=seed, loss=loss, delay=delay, duplicate=duplicate, connect_delay=connect_delay
        )
        return cls(
            config=config,
            network=network,
            seed=seed,
            codec=codec,
            verify_record=verify_record,
            _rng=random.Random(seed ^ 0x5EED),
        )

    @property
    def now(self) -> float:
        return self.network.now

    # ---- building the mesh -----------------------------------------------------------------

    def add_node(self, index: int, incarnation: int = 0) -> Membership:
        """A new machine for node ``index`` (replacing a crashed one); it knows nobody yet."""
        node = node_id(index)
        address = node_address(index)
        machine = Membership(
            node,
            address,
            self.config,
            rng=random.Random(self._rng.getrandbits(64)),
            incarnation=incarnation,
            verify_record=self.verify_record,
        )
        self.nodes[node] = machine
        self.addresses[address] = node
        self.crashed.discard(node)
        return machine

    def bootstrap(self, count: int, record: Callable[[int], SignedRecord] | None = None) -> None:
        """``count`` nodes that already know each other (as after a completed join): each gets
        one push-pull holding every member (and, with ``record``, every node's record ``record(
        index)``, its own set as its local record), delivered directly. Events are discarded."""
        for index in range(count):
            self.add_node(index)
        snapshot = [
            MemberSnapshot(node, machine.address, 0, "alive")
            for node, machine in self.nodes.items()
        ]
        records = [] if record is None else [record(index) for index in range(count)]
        for index, own in enumerate(records):
            self.nodes[node_id(index)].set_local_record(own)
        message = PushPull(members=snapshot, records=records)
        sender = node_id(0)
        for node, machine in self.nodes.items():
            machine.receive(node_id(1) if node == sender else sender, message, self.now)
            machine.drain_events()
            self._schedule(node)

    def join(self, index: int, seeds: Iterable[int], incarnation: int = 0) -> Membership:
        """Start node ``index`` (fresh, or restarted after a crash) and join through ``seeds``."""
        machine = self.add_node(index, incarnation)
        seed_list = [(node_id(seed), node_address(seed)) for seed in seeds]
        for _, address in seed_list:  # the shell joins after a handshake: both ways are up
            self.network.connect(machine.address, address, established=True)
            self.network.connect(address, machine.address, established=True)
        self._send(machine, machine.join(seed_list, self.now))
        self._after(machine)
        return machine

    def crash(self, index: int) -> None:
        """Node ``index`` stops: it neither answers nor ticks (messages to it are lost)."""
        self.crashed.add(node_id(index))

    def leave(self, index: int) -> None:
        machine = self.nodes[node_id(index)]
        self._send(machine, machine.leave(self.now))
        self._after(machine)

    def set_record(self, index: int, record: SignedRecord) -> None:
        machine = self.nodes[node_id(index)]
        machine.set_local_record(record)

    # ---- running ---------------------------------------------------------------------------

    def run_until(self, until: float) -> None:
        """Run the mesh until virtual time ``until``."""
        network = self.network
        deadlines = self._deadlines
        while True:
            message_due = network.next_due()
            tick_due = deadlines[0][0] if deadlines else None
            if (
                message_due is not None
                and message_due <= until
                and (tick_due is None or message_due <= tick_due)
            ):
                network.run_until(message_due, self._deliver)
                continue
            if tick_due is None or tick_due > until:
                break
            due, stamp, node = heapq.heappop(deadlines)
            if self._stamp.get(node) != stamp or node in self.crashed:
                continue
            network.now = max(network.now, due)
            machine = self.nodes[node]
            self._send(machine, machine.tick(network.now))
            self._after(machine)
        network.now = max(network.now, until)

    def time_to_reach(self, kind: str, about: bytes, needed: int) -> float | None:
        """When the ``needed``-th distinct member saw an event ``kind`` about ``about``."""
        seen: set[bytes] = set()
        for observed in self.events:
            event = observed.event
            if event.kind == kind and event.node == about and observed.observer not in seen:
                seen.add(observed.observer)
                if len(seen) >= needed:
                    return observed.at
        return None

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def count(self, predicate: Callable[[Membership], bool]) -> int:
        """How many running (not crashed) nodes satisfy ``predicate``."""
        return sum(
            1
            for node, machine in self.nodes.items()
            if node not in self.crashed and predicate(machine)
        )

    # ---- internals -------------------------------------------------------------------------

    def _deliver(self, address: str, payload: Payload) -> None:
        node = self.addresses.get(address)
        if node is None or node in self.crashed:
            return
        sender, message = payload
        if isinstance(message, bytes):
            message = decode(message)
        machine = self.nodes[node]
        self._send(machine, machine.receive(sender, message, self.network.now))
        self._after(machine)

    def _send(self, machine: Membership, outbound: list[Outbound]) -> None:
        for item in outbound:
            message: object = item.message
            if self.codec:
                data = encode(item.message)
                self.bytes_sent += len(data)
                message = data
            self.frames_sent += 1
            self.network.send(machine.address, item.address, (machine.self_id, message))

    def _after(self, machine: Membership) -> None:
        events = machine.drain_events()
        if self.network.connect_delay:  # the shell opens a connection to each member it learns
            for event in events:
                if event.kind == "joined":
                    self.network.connect(machine.address, event.address)
        if events and self.record_events:
            now = self.network.now
            self.events.extend(ObservedEvent(now, machine.self_id, event) for event in events)
        self._schedule(machine.self_id)

    def _schedule(self, node: bytes) -> None:
        deadline = self.nodes[node].next_deadline()
        self._counter += 1
        self._stamp[node] = self._counter
        heapq.heappush(self._deadlines, (max(deadline, self.network.now), self._counter, node))
