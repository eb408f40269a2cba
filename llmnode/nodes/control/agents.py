"""Agents hosted by local client processes, served as services of this node (no sockets).

An agent host registers its agents over the control socket; each becomes a :class:`ProxyService`
in the node's request server, so an agent living in another process is served exactly like a
model hosted in the node. :class:`RemoteAgents` is the registry: it adds and withdraws them,
routes their replies and stream chunks back to the calls waiting for them, and lets a gracefully
unregistered agent answer the calls it is serving for ``DRAIN_S`` before they fail.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, MutableMapping

from llmnode.bus.identity import node_id_to_text
from llmnode.errors import AccessDenied, AgentLost, MeshError, UnknownAgent, error_from_code
from llmnode.log import get_logger
from llmnode.nodes.requests.service import Emit, Service, ServiceCall
from llmnode.schemas.base import WireMessage
from llmnode.schemas.control import (
    CtlAgentChunk,
    CtlAgentReply,
    CtlCall,
    CtlCallCancelled,
    CtlDelivery,
    CtlRegister,
)
from llmnode.schemas.requests import OneWay
from llmnode.schemas.state import ServiceInfo, ServiceLoad

log = get_logger(__name__)

DRAIN_S = 10.0  # how long a gracefully unregistered agent may still answer its calls in flight

Send = Callable[[bytes, WireMessage], bool]


class ProxyService:
    """An agent hosted by a local client process, served through the control socket."""

    def __init__(self, owner: RemoteAgents, client: bytes, register: CtlRegister) -> None:
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


class RemoteAgents:
    """The agents local clients host, as services of this node.

    ``services`` is the node's service table (the request server's); ``send`` writes a control
    message to one client; ``changed`` tells the node its advertised state changed."""

    def __init__(
        self,
        node_id: bytes,
        services: MutableMapping[str, Service],
        send: Send,
        changed: Callable[[], None],
    ) -> None:
        self._node_id = node_id
        self._services = services
        self.send = send
        self._changed = changed
        self._proxies: dict[str, ProxyService] = {}
        # Unregistered agents whose calls in flight may still be answered (a graceful stop).
        self._draining: set[ProxyService] = set()
        self._call_ids = itertools.count(1)

    def next_call_id(self) -> int:
        return next(self._call_ids)

    def subscribed(self, topic: str) -> list[ProxyService]:
        """The registered agents with a handler for ``topic``."""
        return [proxy for proxy in self._proxies.values() if topic in proxy.register.topics]

    def _answering(self) -> Iterator[ProxyService]:
        """Proxies whose agents may send replies: registered ones and draining ones."""
        return itertools.chain(self._proxies.values(), self._draining)

    # -- registration ------------------------------------------------------------------------

    def register(self, client: bytes, message: CtlRegister) -> None:
        existing = self._services.get(message.name)
        if existing is not None and not isinstance(existing, ProxyService):
            raise MeshError(f"{message.name!r} is already a service of this node")
        proxy = ProxyService(self, client, message)
        self._proxies[message.name] = proxy
        self._services[message.name] = proxy
        self._changed()
        log.info("agent_registered", agent=message.name, topics=message.topics)

    def unregister(self, name: str, *, drain: bool = True) -> None:
        """Withdraw an agent: no new calls reach it. With ``drain`` (its host stops gracefully
        and is still connected) the calls it is serving may still be answered for
        ``DRAIN_S``; otherwise, or after that, they fail with AgentLost."""
        proxy = self._proxies.pop(name, None)
        if proxy is None:
            return
        self._services.pop(name, None)
        if drain and proxy.in_flight:
            self._draining.add(proxy)
            asyncio.get_running_loop().call_later(DRAIN_S, self._drained, proxy)
        else:
            proxy.fail_all(f"agent {name!r} stopped")
        self._changed()
        log.info("agent_unregistered", agent=name, draining=proxy.in_flight if drain else 0)

    def _drained(self, proxy: ProxyService) -> None:
        if proxy in self._draining:
            self._draining.discard(proxy)
            proxy.fail_all(f"agent {proxy.register.name!r} stopped before answering")

    def withdraw(self, client: bytes) -> None:
        """The client is gone: its agents go now, and their calls in flight fail (AgentLost)."""
        for name, proxy in list(self._proxies.items()):
            if proxy.client == client:
                self.unregister(name, drain=False)
        for proxy in [p for p in self._draining if p.client == client]:
            self._draining.discard(proxy)
            proxy.fail_all(f"agent {proxy.register.name!r} stopped")

    def close(self) -> None:
        """The node is stopping: every call in flight to an agent fails."""
        for proxy in list(self._answering()):
            proxy.fail_all("the node is stopping")
        self._draining.clear()

    # -- traffic from the agents' hosts ------------------------------------------------------

    def reply(self, client: bytes, message: CtlAgentReply) -> None:
        for proxy in self._answering():
            if proxy.client == client:
                proxy.reply(message)

    async def chunk(self, client: bytes, message: CtlAgentChunk) -> None:
        for proxy in list(self._answering()):  # a copy: the awaits below may change them
            if proxy.client == client:
                try:
                    await proxy.chunk(message)
                except MeshError as error:
                    log.warning("agent_chunk_failed", agent=proxy.register.name, error=str(error))

    # -- one-way messages to an agent --------------------------------------------------------

    def deliver(self, sender: bytes, message: OneWay) -> None:
        """A one-way message for agent ``message.service`` hosted here; raises UnknownAgent or
        AccessDenied when it cannot take it."""
        proxy = self._proxies.get(message.service)
        if proxy is None:
            raise UnknownAgent(f"no agent {message.service!r} on this node")
        sender_text = node_id_to_text(sender)
        allow = proxy.register.allow
        if allow and sender_text not in allow and sender != self._node_id:
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
