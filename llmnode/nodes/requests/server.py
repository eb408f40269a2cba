"""The serving side of the request path: admission, running hosted services, replies (no sockets).

A request for a hosted service is admitted or refused (``Busy`` when its queue is full, unknown
service, access denied); admitted ones run as tasks that emit chunks and a final result through a
``reply`` callable (the bus for remote callers, a queue for local ones). A running request keeps
its caller informed with periodic ``Accept`` heartbeats, so a caller can tell a slow node from a
dead one. Cancellation and deadlines reach the service by cancelling its task.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable

import msgspec

from llmnode.errors import (
    AccessDenied,
    Busy,
    DeadlineExceeded,
    MeshError,
    UnknownAgent,
    error_fields,
)
from llmnode.log import get_logger
from llmnode.nodes.requests.measures import RequestMeasures
from llmnode.nodes.requests.scheduler import is_full
from llmnode.nodes.requests.service import Emit, Service, ServiceCall
from llmnode.schemas.base import WireMessage
from llmnode.schemas.requests import (
    SEND_METHOD,
    Accept,
    Chunk,
    ErrorReply,
    LoadQuery,
    LoadReport,
    Refuse,
    Request,
    Result,
)
from llmnode.schemas.state import ServiceLoad

log = get_logger(__name__)

Reply = Callable[[WireMessage], bool]


class RequestServer:
    """Runs requests for the services this node hosts."""

    def __init__(
        self, node_id_text: str, *, heartbeat_s: float = 1.0, slow_chunk_s: float = 0.0
    ) -> None:
        self._node_id_text = node_id_text
        self._heartbeat_s = heartbeat_s
        self.slow_chunk_s = slow_chunk_s  # fault injection: a slow node
        self.services: dict[str, Service] = {}
        self._running: dict[tuple[bytes, bytes], asyncio.Task[None]] = {}
        # One heartbeat task for every running request (not one per request): it runs while
        # any request does, and answers each with an Accept every ``heartbeat_s``.
        self._beating: dict[tuple[bytes, bytes], tuple[str, Reply]] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Requests admitted and not yet answered, per service, remote and local alike. A request
        # holds its place until its result is sent, not only while its runtime computes it.
        self.active: Counter[str] = Counter()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.counters: Counter[str] = Counter()
        self.measures: RequestMeasures | None = None  # the node's histograms; None: not timed

    def load_of(self, name: str, service: Service | None = None) -> ServiceLoad | None:
        """The service's load as callers should see it: the runtime's own figures, raised to
        account for every request admitted and not yet answered."""
        service = service or self.services.get(name)
        if service is None:
            return None
        return _with_active(service.info().load, self.active[name])

    def load_report(self, query: LoadQuery) -> LoadReport:
        """The answer to a caller's :class:`LoadQuery` (-1: not served here)."""
        load = self.load_of(query.service)
        if load is None:
            return LoadReport(id=query.id, service=query.service)
        return LoadReport(
            id=query.id,
            service=query.service,
            queue_depth=load.queue_depth,
            in_flight=load.in_flight,
            ewma_service_ms=load.ewma_service_ms,
        )

    def begin(self, name: str) -> None:
        self.active[name] += 1

    def end(self, name: str) -> None:
        self.active[name] -= 1
        if self.active[name] <= 0:
            del self.active[name]

    def admit(self, service_name: str, caller_node: str, method: str = "") -> Service:
        """The service, if this request may start now; raises the typed refusal otherwise. A
        ``send`` is never Busy: it takes no slot (the agent host queues the handler itself)."""
        service = self.services.get(service_name)
        if service is None:
            raise UnknownAgent(f"no service {service_name!r} on this node")
        info = service.info()
        if info.allow and caller_node not in info.allow and caller_node != self._node_id_text:
            self.counters["access_denied"] += 1
            raise AccessDenied(f"node {caller_node[:12]} may not call {service_name!r}")
        load = info.load
        active = max(self.active[service_name], load.queue_depth + load.in_flight)
        if method != SEND_METHOD and is_full(active, load.slots, load.queue_limit):
            self.counters["busy"] += 1
            raise Busy(f"{service_name!r} is busy ({active - load.slots} queued)")
        return service

    def handle(self, caller: bytes, caller_text: str, request: Request, reply: Reply) -> None:
        """Admit ``request`` from node ``caller`` and start it, or refuse it."""
        key = (caller, request.id)
        if key in self._running:  # a duplicate frame of a request already running
            return
        try:
            if request.deadline <= time.time():
                raise DeadlineExceeded("deadline passed before the request arrived")
            service = self.admit(request.service, caller_text, request.method)
        except MeshError as error:
            code, text, remote_type, reason = error_fields(error)
            reply(
                Refuse(
                    id=request.id, code=code, message=text, remote_type=remote_type, reason=reason
                )
            )
            return
        self.begin(request.service)
        reply(self._accept(request.id, request.service))
        call = ServiceCall(
            request_id=request.id,
            service=request.service,
            method=request.method,
            payload=request.payload,
            deadline=request.deadline,
            caller_node=caller_text,
            caller=request.caller,
            stream=request.stream,
        )
        task = asyncio.create_task(
            self._run(service, call, reply, key), name=f"serve-{request.id.hex()}"
        )
        self._running[key] = task
        self._beating[key] = (request.service, reply)
        if self._heartbeat_task is None:
            self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="heartbeats")
        task.add_done_callback(functools.partial(self._finished, key, request.service))

    async def call_in_slot(self, service: Service, call: ServiceCall, emit: Emit) -> bytes:
        """Run ``call`` once one of the service's slots is free: at most ``slots`` requests of a
        service run at once on a node; the others wait here, counted as its queue."""
        if call.method == SEND_METHOD:  # answered once taken; a handler busy here must not
            return await service.call(call, emit)  # wait behind its own sends
        slots = self._slots.get(call.service)
        if slots is None:
            slots = self._slots[call.service] = asyncio.Semaphore(max(1, service.info().load.slots))
        timed = self.measures.queue(call.service) if self.measures is not None else None
        waiting = time.perf_counter()
        async with slots:
            if timed is not None:
                timed.observe(time.perf_counter() - waiting)
            if not self.slow_chunk_s:
                return await service.call(call, emit)
            result = await service.call(call, _slowed(emit, self.slow_chunk_s))
            await asyncio.sleep(self.slow_chunk_s)  # and for the result: a slow node
            return result

    def _finished(self, key: tuple[bytes, bytes], name: str, _: object) -> None:
        self._beating.pop(key, None)
        if self._running.pop(key, None) is not None:
            self.end(name)

    async def _run(
        self, service: Service, call: ServiceCall, reply: Reply, key: tuple[bytes, bytes]
    ) -> None:
        sequence = 0

        async def emit(data: bytes) -> None:
            nonlocal sequence
            reply(Chunk(id=call.request_id, seq=sequence, data=data))
            sequence += 1

        try:
            async with asyncio.timeout_at(_loop_deadline(call.deadline)):
                result = await self.call_in_slot(service, call, emit)
            reply(self._result(call, result, sequence))
            self.counters["served"] += 1
        except TimeoutError:
            self.counters["deadline"] += 1
            reply(ErrorReply(id=call.request_id, code="deadline", message="deadline exceeded"))
        except asyncio.CancelledError:
            self.counters["cancelled"] += 1
            raise
        except MeshError as error:
            self.counters["failed"] += 1
            code, text, remote_type, reason = error_fields(error)
            reply(
                ErrorReply(
                    id=call.request_id,
                    code=code,
                    message=text,
                    remote_type=remote_type,
                    reason=reason,
                )
            )
        except Exception as error:
            self.counters["failed"] += 1
            log.exception("service_call_failed", service=call.service, method=call.method)
            reply(
                ErrorReply(
                    id=call.request_id,
                    code="handler",
                    message=f"{type(error).__name__}: {error}",
                    remote_type=type(error).__name__,
                )
            )
        finally:  # answered: no longer in flight, before the caller reads the answer
            self._finished(key, call.service, None)

    def _accept(self, request_id: bytes, name: str) -> Accept:
        """Accept, carrying the load with this request counted (it was admitted just now)."""
        load = self.load_of(name)
        if load is None:
            return Accept(id=request_id)
        return Accept(
            id=request_id,
            queue_depth=load.queue_depth,
            in_flight=load.in_flight,
            ewma_service_ms=load.ewma_service_ms,
        )

    def _result(self, call: ServiceCall, data: bytes, chunks: int) -> Result:
        """Result, carrying the load without this request (it is answered now)."""
        service = self.services.get(call.service)
        if service is None:
            return Result(id=call.request_id, data=data, chunks=chunks)
        load = _with_active(service.info().load, self.active[call.service] - 1)
        return Result(
            id=call.request_id,
            data=data,
            chunks=chunks,
            queue_depth=load.queue_depth,
            in_flight=load.in_flight,
            ewma_service_ms=load.ewma_service_ms,
        )

    async def _heartbeats(self) -> None:
        """Every ``heartbeat_s``, an Accept to the caller of each request still running; ends
        when none is (the next request starts it again)."""
        try:
            while self._beating:
                await asyncio.sleep(self._heartbeat_s)
                for (_, request_id), (name, reply) in list(self._beating.items()):
                    reply(self._accept(request_id, name))
        finally:
            self._heartbeat_task = None

    def cancel(self, caller: bytes, request_id: bytes) -> bool:
        task = self._running.get((caller, request_id))
        if task is None:
            return False
        task.cancel()
        return True

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        tasks = list(self._running.values())
        if self._heartbeat_task is not None:
            tasks.append(self._heartbeat_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for service in list(self.services.values()):
            await service.close()


def _slowed(emit: Emit, delay: float) -> Emit:
    """Fault injection: a slow node takes ``delay`` longer for every chunk it produces."""

    async def slowed(data: bytes) -> None:
        await asyncio.sleep(delay)
        await emit(data)

    return slowed


def _with_active(load: ServiceLoad, active: int) -> ServiceLoad:
    slots = max(1, load.slots)
    return msgspec.structs.replace(
        load,
        in_flight=max(load.in_flight, min(active, slots)),
        queue_depth=max(load.queue_depth, active - slots),
    )


def _loop_deadline(deadline: float) -> float:
    """Convert a unix-time deadline to the event loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + max(0.0, deadline - time.time())
