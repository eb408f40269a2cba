"""Runs Agent instances attached to a node (does I/O through the node's control socket).

An :class:`AgentHost` registers its agents with the node (``CtlRegister``), which advertises them
in its signed gossip state and forwards their traffic here: ``CtlCall`` (a request; answered with
``CtlAgentReply``, or ``CtlAgentChunk``s then the reply for streams; a ``send`` call is answered
as soon as a handler takes it), ``CtlDelivery`` (a one-way message or a topic publication) and
``CtlCallCancelled``. Handlers run concurrently, at most
``Agent.slots`` at a time per agent, each within its call's deadline. A handler that raises
answers the requester with a :class:`~llmnode.errors.HandlerError` and the agent keeps serving.
The host heartbeats the node (a ``CtlStatus`` every 2 s; the node drops agents of a client it has
not heard from for 10 s, or at once when its connection closes) and registers its agents again
when the node comes back (the heartbeat reconnects to a restarted node).

The node's ``--agent pkg.module:Class`` runs one of these in its own process (supervised by
:mod:`llmnode.agents.supervisor`)::

    client = ControlClient(address, token); await client.connect()
    host = AgentHost(Mesh(client)); await host.start(load_agent_class("pkg.module:Class")())
    ...
    await host.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmnode.agents.agent import Agent, Context, HandlerSpec
from llmnode.client.envelope import convert_body, decode_envelope, encode_envelope
from llmnode.errors import (
    ConfigError,
    DeadlineExceeded,
    HandlerError,
    MeshError,
)
from llmnode.log import get_logger
from llmnode.schemas.base import WireMessage
from llmnode.schemas.control import (
    CtlAgentChunk,
    CtlAgentReply,
    CtlCall,
    CtlCallCancelled,
    CtlDelivery,
    CtlRegister,
    CtlStatus,
    CtlUnregister,
)
from llmnode.schemas.requests import SEND_METHOD

if TYPE_CHECKING:
    from llmnode.client.connection import ControlClient
    from llmnode.client.mesh import Mesh

log = get_logger(__name__)

HEARTBEAT_INTERVAL = 2.0
STOP_GRACE = 5.0  # seconds in-flight handlers get to finish on stop


def load_agent_class(spec: str) -> type[Agent]:
    """The Agent subclass named by ``"pkg.module:Class"``; ConfigError with the reason if not.

    As ``python -m`` does, the current directory is searched first, so the README's
    ``--agent examples.qa_pipeline:Writer`` works from a checkout with the installed command."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"agent {spec!r}: expected pkg.module:Class")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"agent {spec!r}: cannot import {module_name}: {error}") from error
    except Exception as error:
        raise ConfigError(
            f"agent {spec!r}: importing {module_name} failed: {type(error).__name__}: {error}"
        ) from error
    agent_class = getattr(module, class_name, None)
    if agent_class is None:
        raise ConfigError(f"agent {spec!r}: {module_name} has no {class_name}")
    if not (isinstance(agent_class, type) and issubclass(agent_class, Agent)):
        raise ConfigError(f"agent {spec!r}: {class_name} is not a subclass of llmnode.Agent")
    return agent_class


@dataclass
class _Hosted:
    agent: Agent
    context: Context
    slots: asyncio.Semaphore
    calls: dict[int, asyncio.Task[None]] = field(default_factory=dict)


class AgentHost:
    """Hosts agents on the node behind ``mesh``: ``start(*agents)`` then ``stop()``.

    The host takes the mesh it is given (it never builds one), so it needs the SDK only for
    types: the SDK's ``Mesh.serving`` builds hosts, and no import circle joins the two."""

    def __init__(self, mesh: Mesh, *, heartbeat_interval: float = HEARTBEAT_INTERVAL) -> None:
        self.mesh = mesh  # the agents' own view of the mesh (their Context uses it)
        self.client: ControlClient = mesh.client
        self._heartbeat_interval = heartbeat_interval
        self._agents: dict[str, _Hosted] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancelled_calls: set[int] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._node_id = ""
        self._started = False
        self._generation = 0  # the client's connection our agents are registered on

    @property
    def agents(self) -> list[Agent]:
        return [hosted.agent for hosted in self._agents.values()]

    async def __aenter__(self) -> AgentHost:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, *agents: Agent) -> None:
        """Start hosting: each agent's ``on_start`` runs, then it is registered."""
        if not self._started:
            self._started = True
            status = await self.mesh.status()
            self._node_id = str(status.get("node_id", ""))
            self._generation = self.client.generation
            self.client.add_listener(self._on_message)
            self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="agent_heartbeat")
        for agent in agents:
            await self.add(agent)

    async def run(self, agents: Iterable[Agent]) -> None:
        """Host ``agents`` until cancelled (or the host fails), then stop them."""
        try:
            await self.start(*agents)
            await self.wait_failed()
        finally:
            await asyncio.shield(self.stop())

    async def wait_failed(self) -> None:
        """Return never while the host is healthy; raise what broke it (its heartbeat died)."""
        if self._heartbeat is None:
            raise ConfigError("the agent host has not started")
        await asyncio.shield(self._heartbeat)

    async def add(self, agent: Agent) -> None:
        name = type(agent).name
        if name in self._agents:
            raise ConfigError(f"an agent named {name!r} is already hosted here")
        context = Context(self.mesh, agent=name, node_id=self._node_id)
        await agent.on_start(context)
        hosted = _Hosted(agent, context, asyncio.Semaphore(max(1, type(agent).slots)))
        self._agents[name] = hosted
        try:
            await self._register(agent)
        except BaseException:
            del self._agents[name]
            raise
        log.info("agent_started", agent=name, topics=type(agent).all_topics())

    async def _register(self, agent: Agent) -> None:
        agent_class = type(agent)
        await self.client.call(
            CtlRegister(
                id=self.client.next_id(),
                name=agent_class.name,
                topics=agent_class.all_topics(),
                allow=list(agent_class.allow),
                slots=max(1, agent_class.slots),
                queue_limit=agent_class.queue_limit,
            )
        )

    async def stop(self) -> None:
        """Withdraw every agent, let in-flight handlers finish (briefly), then ``on_stop``."""
        if not self._started:
            return
        self._started = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for name in list(self._agents):
            with contextlib.suppress(MeshError):
                await self.client.call(CtlUnregister(id=self.client.next_id(), name=name))
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self.client.remove_listener(self._on_message)
        for name, hosted in list(self._agents.items()):
            try:
                await hosted.agent.on_stop()
            except Exception as error:
                log.exception("agent_stop_failed", agent=name, error=str(error))
            log.info("agent_stopped", agent=name)
        self._agents.clear()

    async def _heartbeat_loop(self) -> None:
        lost = False
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            try:
                await self.client.call(CtlStatus(id=self.client.next_id()), timeout=5.0)
            except MeshError as error:
                if not lost:
                    log.warning("node_heartbeat_failed", error=str(error))
                lost = True
                continue
            if lost or self.client.generation != self._generation:
                lost = False
                self._generation = self.client.generation
                log.info("node_reachable_again", agents=sorted(self._agents))
                for hosted in list(self._agents.values()):
                    try:
                        await self._register(hosted.agent)
                    except MeshError as error:
                        log.warning(
                            "agent_register_failed", agent=type(hosted.agent).name, error=str(error)
                        )
                        lost = True

    # ---- inbound -----------------------------------------------------------------------------

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_message(self, message: WireMessage) -> None:
        if isinstance(message, CtlCall):
            hosted = self._agents.get(message.service.partition("@")[0])
            if hosted is None:
                self._spawn(self._refuse(message), "agent_refuse")
                return
            task = self._spawn(self._serve_call(hosted, message), f"agent_call_{message.call_id}")
            hosted.calls[message.call_id] = task
        elif isinstance(message, CtlCallCancelled):
            for hosted in self._agents.values():
                running = hosted.calls.get(message.call_id)
                if running is not None:
                    self._cancelled_calls.add(message.call_id)
                    running.cancel()
        elif isinstance(message, CtlDelivery):
            if message.service in self._agents:
                targets = [self._agents[message.service]]
            elif message.topic:
                targets = [
                    hosted
                    for hosted in self._agents.values()
                    if message.topic in type(hosted.agent).all_topics()
                ]
            else:
                targets = []
            for hosted in targets:
                self._spawn(self._serve_delivery(hosted, message), "agent_delivery")

    async def _refuse(self, call: CtlCall) -> None:
        await self._reply(
            CtlAgentReply(
                call_id=call.call_id,
                error_code="unknown_agent",
                error_message=f"no agent {call.service!r} is hosted here",
            )
        )

    async def _reply(self, message: WireMessage) -> None:
        try:
            await self.client.send(message)
        except MeshError as error:
            log.warning("agent_reply_failed", error=str(error))

    async def _serve_call(self, hosted: _Hosted, call: CtlCall) -> None:
        agent_class = type(hosted.agent)
        reply: CtlAgentReply
        try:
            tag, body = decode_envelope(call.payload)
            spec = agent_class.handler_for(tag)
            message = convert_body(body, spec.message_type)
        except MeshError as error:
            await self._reply(
                CtlAgentReply(call_id=call.call_id, error_code=error.code, error_message=str(error))
            )
            hosted.calls.pop(call.call_id, None)
            return
        sending = call.method == SEND_METHOD  # one-way: no deadline, as a CtlDelivery has none
        until, by = None if sending else call.deadline, call.caller_node
        context = hosted.context.for_call(caller=call.caller, caller_node=by, deadline=until)
        if sending:  # taken: answer now and let the handler run on
            hosted.calls.pop(call.call_id, None)
            self._spawn(self._run_dropping(hosted, spec, message, context), "agent_delivery")
            await self._reply(CtlAgentReply(call_id=call.call_id, data=encode_envelope(None)))
            return
        function = getattr(hosted.agent, spec.attribute)
        arguments = (message, context) if spec.takes_context else (message,)
        deadline = asyncio.get_running_loop().time() + max(0.0, call.deadline - time.time())
        try:
            async with hosted.slots, asyncio.timeout_at(deadline) as scope:
                if spec.streams:
                    seq = 0
                    async for item in function(*arguments):
                        await self.client.send(
                            CtlAgentChunk(call_id=call.call_id, seq=seq, data=encode_envelope(item))
                        )
                        seq += 1
                    result: Any = None
                else:
                    result = await function(*arguments)
            reply = CtlAgentReply(call_id=call.call_id, data=encode_envelope(result))
        except asyncio.CancelledError:
            if call.call_id not in self._cancelled_calls:
                raise  # the host is stopping
            self._cancelled_calls.discard(call.call_id)
            log.info("agent_call_cancelled", agent=agent_class.name, call_id=call.call_id)
            return
        except TimeoutError as error:
            if not scope.expired():
                reply = self._handler_failed(call.call_id, agent_class.name, spec.attribute, error)
            else:
                reply = CtlAgentReply(
                    call_id=call.call_id,
                    error_code=DeadlineExceeded.code,
                    error_message=f"{agent_class.name}.{spec.attribute} passed its deadline",
                )
        except Exception as error:
            reply = self._handler_failed(call.call_id, agent_class.name, spec.attribute, error)
        finally:
            hosted.calls.pop(call.call_id, None)
        await self._reply(reply)

    def _handler_failed(
        self, call_id: int, agent: str, attribute: str, error: Exception
    ) -> CtlAgentReply:
        log.exception("agent_handler_failed", agent=agent, handler=attribute, error=str(error))
        failure = HandlerError(
            f"handler {agent}.{attribute} raised {type(error).__name__}: {error}",
            remote_type=type(error).__name__,
        )
        return CtlAgentReply(
            call_id=call_id,
            error_code=failure.code,
            error_message=str(failure),
            error_remote_type=failure.remote_type,
        )

    async def _serve_delivery(self, hosted: _Hosted, delivery: CtlDelivery) -> None:
        agent_class = type(hosted.agent)
        try:
            tag, body = decode_envelope(delivery.payload)
            spec = agent_class.handler_for(tag, topic=delivery.topic)
            message = convert_body(body, spec.message_type)
        except MeshError as error:
            log.warning("agent_delivery_refused", agent=agent_class.name, error=str(error))
            return
        context = hosted.context.for_call(
            caller=delivery.caller, caller_node=delivery.caller_node, deadline=None
        )
        await self._run_dropping(hosted, spec, message, context)

    async def _run_dropping(
        self, hosted: _Hosted, spec: HandlerSpec, message: Any, context: Context
    ) -> None:  # a one-way message's handler: its result is dropped, its failure logged
        agent_class = type(hosted.agent)
        function = getattr(hosted.agent, spec.attribute)
        arguments = (message, context) if spec.takes_context else (message,)
        try:
            async with hosted.slots:
                if spec.streams:
                    async for _item in function(*arguments):
                        pass
                else:
                    await function(*arguments)
        except Exception as error:
            log.exception(
                "agent_handler_failed",
                agent=agent_class.name,
                handler=spec.attribute,
                error=str(error),
            )
