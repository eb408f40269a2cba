"""The node process: wires bus, membership, state, scheduler and control socket together (I/O).

A :class:`Node` runs until stopped, under one ``asyncio.TaskGroup``: the receive loop dispatches
frames to membership or the request path, the membership ticker probes and gossips, the state loop
re-signs the state record when capabilities change (not load), the control socket serves local
clients and the join loop finds the seeds. ``stop()`` leaves: peers see it as left, not dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, get_args

import msgspec

from llmnode._version import __version__
from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity, node_id_from_text, node_id_to_text
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.lan import beacon_binding
from llmnode.bus.transport import Transport
from llmnode.errors import MeshError, Rejected
from llmnode.log import RateLimitedLogger, bind_node, get_logger
from llmnode.nodes.control.dispatch import AttachedClients
from llmnode.nodes.control.server import KEYRING_FILE, ControlServer, control_address
from llmnode.nodes.discovery.beacon import Beacon
from llmnode.nodes.discovery.seeds import join_seeds
from llmnode.nodes.instruments import instrument
from llmnode.nodes.membership import Membership, MembershipConfig, Outbound
from llmnode.nodes.mesh import reports, resources
from llmnode.nodes.mesh.records import decode_state, needs_signing, sign_record, verify_record
from llmnode.nodes.mesh.view import MeshView
from llmnode.nodes.placement.host import NodePlacement
from llmnode.nodes.requests.router import Answer, Router
from llmnode.nodes.requests.server import RequestServer
from llmnode.nodes.requests.service import Service
from llmnode.schemas import membership as membership_messages
from llmnode.schemas.base import WireMessage
from llmnode.schemas.config import NodeConfig
from llmnode.schemas.requests import (
    Cancel,
    LoadQuery,
    LoadReport,
    OneWay,
    Request,
)
from llmnode.schemas.state import NodeState, Resources, ServiceInfo

log = get_logger(__name__)

_MEMBERSHIP_TYPES = tuple(
    cls
    for cls in vars(membership_messages).values()
    if isinstance(cls, type) and issubclass(cls, WireMessage) and cls is not WireMessage
)
_REPLY_TYPES = (*get_args(Answer), LoadReport)  # what the router takes in


class Node:
    def __init__(
        self,
        config: NodeConfig,
        identity: Identity,
        keyring: MeshKeyRing,
        transport: Transport,
        *,
        services: Sequence[Service] = (),
        incarnation: int = 0,
        membership_config: MembershipConfig | None = None,
    ) -> None:
        # memberlist's LAN timings, every one scaled by the probe interval (tests: faster)
        self._membership_config = membership_config or MembershipConfig().scaled(
            1.0 / config.probe_interval
        )
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.node_text = identity.name
        self.name = config.name or self.node_text[:8]
        self.data_dir = Path(config.data_dir)
        self.started_at = time.time()
        self.bus = Bus(identity, keyring, transport, allowlist=_allowlist(config.allowlist))
        self.view = MeshView(self.node_id, self.node_text)
        self.server = RequestServer(
            self.node_text,
            heartbeat_s=config.probe_interval,
            slow_chunk_s=config.fault_slow_ms / 1000.0,
        )
        for service in services:
            self.server.services[service.info().name] = service
        self.router = Router(
            self.view,
            self.server,
            self._send,
            heartbeat_s=config.probe_interval,
            hedge=config.hedge,
        )
        self.clients = AttachedClients(self)
        self.control = ControlServer(
            self.data_dir,
            control_address(self.data_dir, config.control),
            self.clients.handle,
            on_disconnect=self.clients.disconnected,
        )
        self._incarnation = incarnation
        self.membership: Membership | None = None
        self._record_version = 0
        self._published: tuple[NodeState | None, float] = (None, 0.0)  # last signed, when
        self._resources = resources.probe(config.capacity)
        self._stopping = asyncio.Event()
        self._state_dirty = asyncio.Event()
        self._rejections = RateLimitedLogger(log)
        self.ready = asyncio.Event()
        #: Bad input refused by the node itself, by (source, reason); see ``instruments``.
        self.rejections: Counter[tuple[str, str]] = Counter()
        self.api_keys: list[str] = []  # HTTP API key hashes, gossiped in the state record
        self.loops: list[Callable[[], Coroutine[Any, Any, None]]] = []  # more, e.g. HTTP
        self.placement: NodePlacement | None = None  # set by the composition root; run in loops
        self.http_address = ""  # HOST:PORT of this node's HTTP server, advertised once bound
        self.observe_probe_rtt: Callable[[float], None] | None = None  # set by ``instrument``
        self.metrics = instrument(self)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        bind_node(self.node_text, self.name)
        await self.bus.start()
        await self.control.start()
        address = self.bus.address
        self.membership = Membership(
            self.node_id,
            address,
            self._membership_config,
            rng=random.Random(),
            incarnation=self._incarnation,
            verify_record=verify_record,
        )
        self.membership.on_probe_rtt = self.observe_probe_rtt
        self.view.members = self.membership
        self._publish_state()
        log.info(
            "node_started",
            address=address,
            control=self.control.address,
            incarnation=self._incarnation,
            resources=self._resources.source,
        )
        self.ready.set()
        try:
            await self._run_loops()
        except* _Stop:
            pass
        except* Exception as group:
            for error in group.exceptions:
                log.error("node_failed", error=f"{type(error).__name__}: {error}", exc_info=error)
            raise
        finally:
            await self._shutdown()

    async def _run_loops(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._receive_loop())
            group.create_task(self._tick_loop())
            group.create_task(self._state_loop())
            group.create_task(self.control.serve())
            group.create_task(self.clients.watchdog())
            group.create_task(self._join_loop())
            binding = beacon_binding(self.config.listen) if self.config.beacon else None
            if binding is not None:
                beacon = Beacon(
                    self.bus,
                    self.config.beacon_port,
                    self._on_beacon_peer,
                    lambda reason: self._reject(reason, "beacon", source="beacon"),
                    binding=binding,
                )
                group.create_task(beacon.run())
            for loop in self.loops:
                group.create_task(loop())
            group.create_task(self._until_stopped())

    async def _until_stopped(self) -> None:
        await self._stopping.wait()
        raise _Stop

    def stop(self) -> None:
        self._stopping.set()

    async def _shutdown(self) -> None:
        if self.membership is not None:
            self._send_all(self.membership.leave(time.time()))
            await asyncio.sleep(min(0.3, self.config.probe_interval))  # let Left go out
        await self.clients.close()
        await self.server.close()
        self.control.close()
        await self.bus.close()
        log.info("node_stopped")

    # -- membership --------------------------------------------------------------------------

    def _send(self, node: bytes, message: WireMessage) -> bool:
        """Send ``message`` to ``node``; to this node it is dispatched in place, so a request
        served here takes the same path (server, replies, cancel) as one from another node."""
        if node == self.node_id:
            self._dispatch(node, message)
            return True
        return self.bus.send(node, message)

    def _send_all(self, outbound: list[Outbound]) -> None:
        for item in outbound:
            if item.address and self.bus.peer_address(item.to) is None:
                self.bus.add_peer(item.to, item.address)
            self.bus.send(item.to, item.message)

    def _after_membership(self) -> None:
        """Act on what membership decided: peers to reach, peers gone, newer state records."""
        assert self.membership is not None
        for event in self.membership.drain_events():
            node, kind = event.node, event.kind
            if kind == "forgotten":  # its tombstone expired: nothing of it stays anywhere
                self.view.forget(node)
                self.bus.forget_peer(node)
                continue
            if event.address and node != self.node_id:
                self.bus.add_peer(node, event.address)
            if kind in ("dead", "left"):
                self.router.on_peer_down(node)
                self.clients.on_peer_down(node)
            record = event.record
            if record is not None and record.version > self.view.record_version(node):
                try:
                    state = decode_state(record)
                except Rejected as error:
                    self.rejections["record", error.reason] += 1
                else:
                    text = node_id_to_text(node)
                    self.view.set_record(node, text, state, record.version, time.time())
            if kind != "record_updated":
                log.info(
                    "member_" + kind, peer=node_id_to_text(node)[:12], incarnation=event.incarnation
                )

    async def _receive_loop(self) -> None:
        while True:
            inbound = await self.bus.receive()
            self._dispatch(inbound.sender, inbound.message)

    def _dispatch(self, sender: bytes, message: WireMessage) -> None:
        """Hand one message from ``sender`` (another node, or this one) to the part it is for."""
        try:
            if isinstance(message, _MEMBERSHIP_TYPES):
                assert self.membership is not None
                self._send_all(self.membership.receive(sender, message, time.time()))
                self._after_membership()
            elif isinstance(message, Request):
                self.server.handle(
                    sender,
                    node_id_to_text(sender),
                    message,
                    functools.partial(self._send, sender),
                )
            elif isinstance(message, _REPLY_TYPES):
                self.router.on_reply(sender, message)
            elif isinstance(message, Cancel):
                self.server.cancel(sender, message.id)
            elif isinstance(message, LoadQuery):
                self._send(sender, self.server.load_report(message))
            elif isinstance(message, OneWay):
                self.clients.deliver(sender, message)
            elif self.placement is None or not self.placement.handle(sender, message):
                self._reject("unexpected_message", type(message).__name__)
        except MeshError as error:
            self._reject(getattr(error, "reason", error.code), str(error))

    def _reject(self, reason: str, detail: str, *, source: str = "node") -> None:
        self.rejections[source, reason] += 1
        self._rejections.warning("message_rejected", reason, reason=reason, detail=detail[:120])

    async def _tick_loop(self) -> None:
        assert self.membership is not None
        while True:
            now = time.time()
            self._send_all(self.membership.tick(now))
            self._after_membership()
            delay = self.membership.next_deadline() - time.time()
            await asyncio.sleep(min(max(delay, 0.005), self.config.probe_interval))

    def _on_beacon_peer(self, node: bytes, address: str) -> None:
        if self.membership is not None and self.membership.member(node) is None:
            self.bus.add_peer(node, address)
            self._send_all(self.membership.join([(node, address)], time.time()))

    async def _join_loop(self) -> None:
        """Handshake with every seed until at least one answers; keep retrying the others."""
        assert self.membership is not None
        membership = self.membership

        def joined(peer: bytes, address: str) -> None:
            self._send_all(membership.join([(peer, address)], time.time()))

        await join_seeds(self.bus, list(self.config.join), joined)

    # -- state -------------------------------------------------------------------------------

    def services_info(self) -> list[ServiceInfo]:
        infos = []
        for name, service in self.server.services.items():
            info = service.info()
            load = self.server.load_of(name, service)
            infos.append(msgspec.structs.replace(info, load=load) if load else info)
        return infos + self.clients.subscription_infos()

    def state(self) -> NodeState:
        placement = self.placement
        return NodeState(
            node_id=self.node_text,
            name=self.name,
            endpoints=[self.bus.address],
            version=__version__,
            started_at=self.started_at,
            resources=self._resources,
            services=self.services_info(),
            requests_served=self.server.counters["served"],
            api_keys=self.api_keys,
            models_stored=sorted(placement.side.stored()) if placement else [],
            models_pinned=sorted(placement.pinned) if placement else [],
            model_memory_mb=placement.memory_mb() if placement else 0,
            http=self.http_address,
        )

    def _publish_state(self) -> None:
        assert self.membership is not None
        # Versions must rise across restarts: others may still hold our last run's record.
        self._record_version = max(
            self._record_version + 1, int(time.time() * 1000), self.membership.own_record_floor + 1
        )
        state = self.state()
        self._published = (state, time.time())
        record = sign_record(self.identity, self._record_version, state)
        self.membership.set_local_record(record)
        self.view.set_record(self.node_id, self.node_text, state, self._record_version, time.time())

    def reload_keys(self) -> int:
        """Make the live key ring equal the ring file (see :meth:`MeshKeyRing.follow`)."""
        live = self.bus.keyring
        live.follow(MeshKeyRing.load(self.data_dir / KEYRING_FILE))
        log.info("mesh_keys_reloaded", keys=len(live.keys))
        return len(live.keys)

    def state_changed(self) -> None:
        """Something advertised changed (an agent registered): publish a new record soon."""
        self._state_dirty.set()

    async def _state_loop(self) -> None:
        refresh = self.config.state_refresh_s
        last_probe = time.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(refresh):
                    await self._state_dirty.wait()
            self._state_dirty.clear()
            if time.time() - last_probe > 5.0:
                self._resources = await asyncio.to_thread(resources.probe, self.config.capacity)
                last_probe = time.time()
            if needs_signing(self.state(), self._published, self.config.record_refresh_s):
                self._publish_state()  # capabilities changed (load is not gossiped)

    def status(self) -> dict[str, object]:
        return reports.status_report(self)

    def peers(self) -> list[dict[str, object]]:
        return reports.peers_report(self)

    @property
    def resources_now(self) -> Resources:
        return self._resources


class _Stop(Exception):
    """Raised inside the task group to stop every loop."""


def _allowlist(texts: list[str]) -> set[bytes] | None:
    return {node_id_from_text(text) for text in texts} if texts else None
