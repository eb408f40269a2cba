"""Local clients of a node (SDK, CLI, attached agents) and the services they host (no sockets).

The control socket hands every valid client message to :class:`AttachedClients`, which answers
status/peers, routes requests through the router (streaming chunks back), fans publications out to
subscribed nodes, and turns agent registrations into :class:`ProxyService` entries, so an agent
living in another process is served exactly like a model hosted in the node.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from llmnode.bus.identity import node_id_to_text
from llmnode.errors import (
    AccessDenied,
    AgentLost,
    MeshError,
    UnknownAgent,
    error_fields,
    error_from_code,
)
from llmnode.log import get_logger
from llmnode.nodes.requests.service import Emit, ServiceCall
from llmnode.schemas.base import WireMessage
from llmnode.schemas.control import (
    CtlAgentChunk,
    CtlAgentReply,
    CtlCall,
    CtlCallCancelled,
    CtlCancel,
    CtlChunk,
    CtlDelivery,
    CtlError,
    CtlOk,
    CtlPeers,
    CtlPublish,
    CtlRegister,
    CtlReloadKeys,
    CtlRequest,
    CtlSend,
    CtlStatus,
    CtlSubscribe,
    CtlUnregister,
    CtlUnsubscribe,
)
from llmnode.schemas.requests import OneWay
from llmnode.schemas.state import ServiceInfo, ServiceLoad

if TYPE_CHECKING:
    from llmnode.nodes.node import Node

log = get_logger(__name__)
_encode = msgspec.msgpack.Encoder().encode
CLIENT_TIMEOUT_S = 10.0
DRAIN_S = 10.0  # how long a gracefully unregistered agent may still answer its calls in flight


@dataclass
class _Client:
    ident: bytes
    last_seen: float
    agents: set[str] = field(default_factory=set)
    subscriptions: dict[int, str] = field(default_factory=dict)  # subscription id -> topic
    requests: dict[int, asyncio.Task[None]] = field(default_factory=dict)


class ProxyService:
    """An agent hosted by a local client process, served through the control socket."""

    def __init__(self, owner: AttachedClients, client: bytes, register: CtlRegister) -> None:
        self._owner = owner
        self.client = client
        self.register = register
        self._calls: dict[int, tuple[asyncio.Future[bytes], Emit]] = {}
        self._ewma_ms = 0.0
        self._served = 0

    def info(self) -> ServiceInfo:
        in_flight = len(self._calls)
        slots = max(1, self.register.slots)
        return ServiceInfo(
            name=self.register.name,
            kind="agent",
            topics=list(self.register.topics),
            allow=list(self.register.allow),
            load=ServiceLoad(
                slots=slots,
                queue_limit=self.register.queue_limit,
                queue_depth=max(0, in_flight - slots),
                in_flight=min(in_flight, slots),
                ewma_service_ms=self._ewma_ms,
                served=self._served,
            ),
        )

    async def call(self, call: ServiceCall, emit: Emit) -> bytes:
        call_id = self._owner.next_call_id()  # unique per node: one client may host many agents
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = (future, emit)
        started = time.monotonic()
        try:
            sent = self._owner.send(
                self.client,
                CtlCall(
                    call_id=call_id,
                    service=call.service,
                    method=call.method,
                    payload=call.payload,
                    deadline=call.deadline,
                    caller_node=call.caller_node,
                    caller=call.caller,
                    stream=call.stream,
                ),
            )
            if not sent:
                raise MeshError(f"agent {self.register.name!r} is not reachable on this node")
            result = await future
        except asyncio.CancelledError:
            self._owner.send(self.client, CtlCallCancelled(call_id=call_id))
            raise
        finally:
            self._calls.pop(call_id, None)
        elapsed = (time.monotonic() - started) * 1000.0
        self._ewma_ms = elapsed if self._served == 0 else 0.8 * self._ewma_ms + 0.2 * elapsed
        self._served += 1
        return result

    def reply(self, message: CtlAgentReply) -> None:
        entry = self._calls.get(message.call_id)
        if entry is None or entry[0].done():
            return
        if message.error_code:
            entry[0].set_exception(
                error_from_code(
                    message.error_code,
                    message.error_message,
                    remote_type=message.error_remote_type,
                    reason=message.error_reason,
                )
            )
        else:
            entry[0].set_result(message.data)

    async def chunk(self, message: CtlAgentChunk) -> None:
        entry = self._calls.get(message.call_id)
        if entry is not None:
            await entry[1](message.data)

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def fail_all(self, reason: str) -> None:
        """The agent's process is gone: its calls in flight fail with :class:`AgentLost`."""
        for future, _ in self._calls.values():
            if not future.done():
                future.set_exception(AgentLost(reason))

    async def close(self) -> None:
        self.fail_all(f"agent {self.register.name!r} stopped")


class AttachedClients:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._clients: dict[bytes, _Client] = {}
        self._proxies: dict[str, ProxyService] = {}
        # Unregistered agents whose calls in flight may still be answered (a graceful stop).
        self._draining: set[ProxyService] = set()
        self._seen_messages: OrderedDict[bytes, None] = OrderedDict()
        self._call_ids = itertools.count(1)

    def next_call_id(self) -> int:
        return next(self._call_ids)

    def send(self, client: bytes, message: WireMessage) -> bool:
        return self._node.control.send(client, message)

    # -- control messages --------------------------------------------------------------------

    def handle(self, ident: bytes, message: WireMessage) -> Awaitable[None] | None:
        """Handle one control message now; an agent's stream chunk returns an awaitable (the
        control server runs later messages after it, keeping the chunks in order)."""
        now = time.time()
        client = self._clients.get(ident)
        if client is None:
            client = self._clients[ident] = _Client(ident=ident, last_seen=now)
        client.last_seen = now
        node = self._node
        try:
            if isinstance(message, CtlStatus):
                self.send(ident, CtlOk(id=message.id, data=_encode(node.status())))
            elif isinstance(message, CtlPeers):
                self.send(ident, CtlOk(id=message.id, data=_encode(node.peers())))
            elif isinstance(message, CtlRequest):
                task = asyncio.create_task(self._request(client, message))
                client.requests[message.id] = task
                task.add_done_callback(functools.partial(_forget, client.requests, message.id))
            elif isinstance(message, CtlCancel):
                running = client.requests.get(message.id)
                if running is not None:
                    running.cancel()
            elif isinstance(message, CtlSend):
                self._node.router.send_one_way(message.service, message.payload, message.caller)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlPublish):
                self.publish(message.topic, message.payload, message.caller)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlSubscribe):
                client.subscriptions[message.id] = message.topic
                node.state_changed()
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlUnsubscribe):
                for key, topic in list(client.subscriptions.items()):
                    if topic == message.topic:
                        del client.subscriptions[key]
                node.state_changed()
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlReloadKeys):
                keys = node.reload_keys()
                self.send(ident, CtlOk(id=message.id, data=_encode({"keys": keys})))
            elif isinstance(message, CtlRegister):
                self._register(client, message)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlUnregister):
                self._unregister(message.name)
                client.agents.discard(message.name)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlAgentReply):
                for proxy in self._answering():
                    if proxy.client == ident:
                        proxy.reply(message)
            elif isinstance(message, CtlAgentChunk):
                return self._chunk(ident, message)
            else:
                node.control.rejections["unexpected_message"] += 1
        except MeshError as error:
            request_id = getattr(message, "id", 0)
            self.send(ident, _control_error(request_id, error))
        return None

    def _answering(self) -> Iterator[ProxyService]:
        """Proxies whose agents may send replies: registered ones and draining ones."""
        return itertools.chain(self._proxies.values(), self._draining)

    async def _chunk(self, ident: bytes, message: CtlAgentChunk) -> None:
        for proxy in list(self._answering()):  # a copy: the awaits below may change them
            if proxy.client == ident:
                try:
                    await proxy.chunk(message)
                except MeshError as error:
                    log.warning("agent_chunk_failed", agent=proxy.register.name, error=str(error))

    async def _request(self, client: _Client, message: CtlRequest) -> None:
        sequence = 0

        async def on_chunk(data: bytes) -> None:
            nonlocal sequence
            self.send(client.ident, CtlChunk(id=message.id, seq=sequence, data=data))
            sequence += 1

        try:
            result = await self._node.router.call(
                message.service,
                message.method,
                message.payload,
                timeout=message.timeout,
                stream=message.stream,
                idempotent=message.idempotent,
                caller=message.caller,
                on_chunk=on_chunk,
            )
        except MeshError as error:
            self.send(client.ident, _control_error(message.id, error))
            return
        except asyncio.CancelledError:
            self.send(client.ident, CtlError(id=message.id, code="cancelled", message="cancelled"))
            raise
        self.send(client.ident, CtlOk(id=message.id, data=result))

    def _register(self, client: _Client, message: CtlRegister) -> None:
        existing = self._node.server.services.get(message.name)
        if existing is not None and not isinstance(existing, ProxyService):
            raise MeshError(f"{message.name!r} is already a service of this node")
        proxy = ProxyService(self, client.ident, message)
        self._proxies[message.name] = proxy
        self._node.server.services[message.name] = proxy
        client.agents.add(message.name)
        self._node.state_changed()
        log.info("agent_registered", agent=message.name, topics=message.topics)

    def _unregister(self, name: str, *, drain: bool = True) -> None:
        """Withdraw an agent: no new calls reach it. With ``drain`` (its host stops gracefully
        and is still connected) the calls it is serving may still be answered for
        ``DRAIN_S``; otherwise, or after that, they fail with AgentLost."""
        proxy = self._proxies.pop(name, None)
        if proxy is None:
            return
        self._node.server.services.pop(name, None)
        if drain and proxy.in_flight:
            self._draining.add(proxy)
            asyncio.get_running_loop().call_later(DRAIN_S, self._drained, proxy)
        else:
            proxy.fail_all(f"agent {name!r} stopped")
        self._node.state_changed()
        log.info("agent_unregistered", agent=name, draining=proxy.in_flight if drain else 0)

    def _drained(self, proxy: ProxyService) -> None:
        if proxy in self._draining:
            self._draining.discard(proxy)
            proxy.fail_all(f"agent {proxy.register.name!r} stopped before answering")

    async def watchdog(self) -> None:
        """Drop the agents of clients that stopped sending heartbeats."""
        while True:
            await asyncio.sleep(1.0)
            cutoff = time.time() - CLIENT_TIMEOUT_S
            for ident, client in list(self._clients.items()):
                if client.last_seen < cutoff and not client.requests:
                    self._withdraw(ident, client)  # silent: presumed hung
                    del self._clients[ident]

    # -- one-way messages and topics ---------------------------------------------------------

    def publish(self, topic: str, payload: bytes, caller: str) -> int:
        message = OneWay(
            service="topic:" + topic, payload=payload, caller=caller, message_id=os.urandom(16)
        )
        targets = self._node.view.topic_nodes(topic)
        for target in targets:
            if target == self._node.node_id:
                self.deliver(target, message)
            else:
                self._node.bus.send(target, message)
        return len(targets)

    def deliver(self, sender: bytes, message: OneWay) -> None:
        """A one-way message or publication arriving at this node."""
        if message.message_id:
            if message.message_id in self._seen_messages:
                return
            self._seen_messages[message.message_id] = None
            if len(self._seen_messages) > 10_000:
                self._seen_messages.popitem(last=False)
        sender_text = node_id_to_text(sender)
        if message.service.startswith("topic:"):
            topic = message.service.removeprefix("topic:")
            for client in self._clients.values():
                for subscription, subscribed in client.subscriptions.items():
                    if subscribed == topic:
                        self.send(
                            client.ident,
                            CtlDelivery(
                                service=topic,
                                payload=message.payload,
                                caller_node=sender_text,
                                caller=message.caller,
                                topic=topic,
                                subscription=subscription,
                            ),
                        )
            for proxy in self._proxies.values():
                if topic in proxy.register.topics:
                    self.send(
                        proxy.client,
                        CtlDelivery(
                            service=proxy.register.name,
                            payload=message.payload,
                            caller_node=sender_text,
                            caller=message.caller,
                            topic=topic,
                        ),
                    )
            return
        target = self._proxies.get(message.service)
        if target is None:
            raise UnknownAgent(f"no agent {message.service!r} on this node")
        proxy = target
        allow = proxy.register.allow
        if allow and sender_text not in allow and sender != self._node.node_id:
            raise AccessDenied(f"node {sender_text[:12]} may not message {message.service!r}")
        self.send(
            proxy.client,
            CtlDelivery(
                service=message.service,
                payload=message.payload,
                caller_node=sender_text,
                caller=message.caller,
            ),
        )

    def subscription_infos(self) -> list[ServiceInfo]:
        topics = sorted({t for c in self._clients.values() for t in c.subscriptions.values()})
        if not topics:
            return []
        return [ServiceInfo(name="subscriptions", kind="subscriptions", topics=topics)]

    def disconnected(self, ident: bytes) -> None:
        """A client's connection closed: its agents and subscriptions go at once, and the
        requests it was waiting for are cancelled (nobody can receive their answers)."""
        client = self._clients.pop(ident, None)
        if client is None:
            return
        for task in list(client.requests.values()):
            task.cancel()
        self._withdraw(ident, client)

    def _withdraw(self, ident: bytes, client: _Client) -> None:
        """The client is gone: its agents and subscriptions go now, and its agents' calls in
        flight fail (AgentLost)."""
        for name in list(client.agents):
            proxy = self._proxies.get(name)
            if proxy is not None and proxy.client == ident:
                self._unregister(name, drain=False)
        for proxy in [p for p in self._draining if p.client == ident]:
            self._draining.discard(proxy)
            proxy.fail_all(f"agent {proxy.register.name!r} stopped")
        if client.subscriptions:
            self._node.state_changed()

    async def close(self) -> None:
        """The node is stopping: end every request its clients have in flight."""
        tasks = [task for client in self._clients.values() for task in client.requests.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for proxy in list(self._answering()):
            proxy.fail_all("the node is stopping")
        self._draining.clear()

    def on_peer_down(self, node: bytes) -> None:
        """Nothing to do today: requests to a dead node are retried by the router."""


def _forget(requests: dict[int, asyncio.Task[None]], request_id: int, _: object) -> None:
    requests.pop(request_id, None)


def _control_error(request_id: int, error: MeshError) -> CtlError:
    code, message, remote_type, reason = error_fields(error)
    return CtlError(
        id=request_id, code=code, message=message, remote_type=remote_type, reason=reason
    )
