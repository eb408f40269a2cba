"""Local clients of a node (SDK, CLI, attached agents): what their control messages do (no sockets).

The control socket hands every valid client message to :class:`AttachedClients`, which answers
status/peers, routes requests through the router (streaming chunks back), and hands agent
registrations to :class:`~llmnode.nodes.control.agents.RemoteAgents` and subscriptions and
publications to :class:`~llmnode.nodes.control.topics.Topics`. Every ``CtlRequest`` gets exactly
one terminal answer (``CtlOk`` or a typed ``CtlError``), whatever the router or a service raises.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from llmnode.errors import ConfigError, MeshError, error_fields
from llmnode.log import get_logger
from llmnode.nodes.control.agents import RemoteAgents
from llmnode.nodes.control.tool_chat import run_tool_chat
from llmnode.nodes.control.topics import Topics
from llmnode.schemas.base import WireMessage
from llmnode.schemas.control import (
    CtlAgentChunk,
    CtlAgentReply,
    CtlCancel,
    CtlChatTools,
    CtlChunk,
    CtlDeploy,
    CtlDeployments,
    CtlError,
    CtlOk,
    CtlPeers,
    CtlPublish,
    CtlPullModel,
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
from llmnode.schemas.state import ServiceInfo

if TYPE_CHECKING:
    from llmnode.nodes.node import Node

log = get_logger(__name__)
_encode = msgspec.msgpack.Encoder().encode
CLIENT_TIMEOUT_S = 10.0
INTERNAL = "internal"  # the code of a CtlError for a failure that is not a MeshError (a bug)


@dataclass
class _Client:
    ident: bytes
    last_seen: float
    requests: dict[int, asyncio.Task[None]] = field(default_factory=dict)


class AttachedClients:
    """The node's side of its control socket: one entry point per event (message, disconnect,
    peer down, one-way delivery), and the agents and subscriptions its clients hold."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._clients: dict[bytes, _Client] = {}
        self.agents = RemoteAgents(
            node.node_id, node.server.services, self.send, node.state_changed
        )
        self.topics = Topics(
            node.node_id,
            self.agents,
            bus_send=node.bus.send,
            topic_nodes=node.view.topic_nodes,
            changed=node.state_changed,
        )

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
            elif isinstance(message, CtlRequest | CtlChatTools):
                task = asyncio.create_task(self._request(ident, message))
                client.requests[message.id] = task
                task.add_done_callback(functools.partial(_forget, client.requests, message.id))
            elif isinstance(message, CtlCancel):
                running = client.requests.get(message.id)
                if running is not None:
                    running.cancel()
            elif isinstance(message, CtlSend):
                node.router.send_one_way(message.service, message.payload, message.caller)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlPublish):
                self.topics.publish(message.topic, message.payload, message.caller)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlSubscribe):
                self.topics.subscribe(ident, message.id, message.topic)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlUnsubscribe):
                self.topics.unsubscribe(ident, message.topic)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlReloadKeys):
                keys = node.reload_keys()
                self.send(ident, CtlOk(id=message.id, data=_encode({"keys": keys})))
            elif isinstance(message, CtlRegister):
                self.agents.register(ident, message)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlUnregister):
                self.agents.unregister(message.name)
                self.send(ident, CtlOk(id=message.id))
            elif isinstance(message, CtlDeploy | CtlDeployments | CtlPullModel):
                task = asyncio.create_task(self._placement(ident, message))
                client.requests[message.id] = task
                task.add_done_callback(functools.partial(_forget, client.requests, message.id))
            elif isinstance(message, CtlAgentReply):
                self.agents.reply(ident, message)
            elif isinstance(message, CtlAgentChunk):
                return self.agents.chunk(ident, message)
            else:
                node.control.rejections["unexpected_message"] += 1
        except Exception as error:  # one answer per message, a bug included
            self.send(ident, control_error(getattr(message, "id", 0), error))
            if not isinstance(error, MeshError):
                raise  # the control server logs it with its traceback
        return None

    async def _request(self, ident: bytes, message: CtlRequest | CtlChatTools) -> None:
        """Route one client request, or run a chat with tools; answer it exactly once,
        whatever happens on the way (chunks: the stream's, or the chat's steps)."""
        sequence = 0

        async def on_chunk(data: bytes) -> None:
            nonlocal sequence
            self.send(ident, CtlChunk(id=message.id, seq=sequence, data=data))
            sequence += 1

        try:
            if isinstance(message, CtlChatTools):
                await run_tool_chat(self._node.router, message, on_chunk)
                result = b""
            else:
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
        except asyncio.CancelledError:
            self.send(ident, CtlError(id=message.id, code="cancelled", message="cancelled"))
            raise
        except Exception as error:
            if not isinstance(error, MeshError):
                service = message.model if isinstance(message, CtlChatTools) else message.service
                log.exception("control_request_failed", service=service, error=str(error))
            self.send(ident, control_error(message.id, error))
            return
        self.send(ident, CtlOk(id=message.id, data=result))

    async def _placement(
        self, ident: bytes, message: CtlDeploy | CtlDeployments | CtlPullModel
    ) -> None:
        """``models deploy / undeploy / deployments / pull --from-mesh``: one answer each."""
        placement = self._node.placement
        try:
            if placement is None:
                raise ConfigError("this node does not run placement")
            if isinstance(message, CtlDeployments):
                answer: object = placement.report()
            elif isinstance(message, CtlPullModel):
                answer = await placement.pull(message.model)
            elif message.deployed:
                answer = await placement.deploy(
                    message.model,
                    message.replicas,
                    auto=message.auto,
                    max_replicas=message.max_replicas,
                )
            else:
                answer = await placement.undeploy(message.model)
        except Exception as error:
            if not isinstance(error, MeshError):
                log.exception("control_placement_failed", error=str(error))
            self.send(ident, control_error(message.id, error))
            return
        self.send(ident, CtlOk(id=message.id, data=_encode(answer)))

    # -- the clients' lifetimes --------------------------------------------------------------

    async def watchdog(self) -> None:
        """Drop the agents of clients that stopped sending heartbeats."""
        while True:
            await asyncio.sleep(1.0)
            cutoff = time.time() - CLIENT_TIMEOUT_S
            for ident, client in list(self._clients.items()):
                if client.last_seen < cutoff and not client.requests:
                    self._withdraw(ident)  # silent: presumed hung
                    del self._clients[ident]

    def disconnected(self, ident: bytes) -> None:
        """A client's connection closed: its agents and subscriptions go at once, and the
        requests it was waiting for are cancelled (nobody can receive their answers)."""
        client = self._clients.pop(ident, None)
        if client is None:
            return
        for task in list(client.requests.values()):
            task.cancel()
        self._withdraw(ident)

    def _withdraw(self, ident: bytes) -> None:
        """The client is gone: its agents (their calls in flight fail) and subscriptions go."""
        self.agents.withdraw(ident)
        self.topics.drop(ident)

    async def close(self) -> None:
        """The node is stopping: end every request its clients have in flight."""
        tasks = [task for client in self._clients.values() for task in client.requests.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.agents.close()

    # -- events from the mesh ----------------------------------------------------------------

    def deliver(self, sender: bytes, message: OneWay) -> None:
        """A one-way message or publication arriving at this node."""
        self.topics.deliver(sender, message)

    def subscription_infos(self) -> list[ServiceInfo]:
        return self.topics.infos()

    def on_peer_down(self, node: bytes) -> None:
        """Nothing to do today: requests to a dead node are retried by the router."""


def _forget(requests: dict[int, asyncio.Task[None]], request_id: int, _: object) -> None:
    requests.pop(request_id, None)


def control_error(request_id: int, error: Exception) -> CtlError:
    """The answer to a request that failed: its typed error, or ``internal`` for a bug."""
    if isinstance(error, MeshError):
        code, message, remote_type, reason = error_fields(error)
    else:
        code, remote_type, reason = INTERNAL, type(error).__name__, ""
        message = f"internal error in the node: {type(error).__name__}: {error}"
    return CtlError(
        id=request_id, code=code, message=message, remote_type=remote_type, reason=reason
    )
