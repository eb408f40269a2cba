"""The calling side of the request path: choose a node, send, re-route, retry, resume (no sockets).

A request enters the mesh at this node. The router asks the scheduler for the node that will answer
soonest, sends the request (or runs it here when this node is the best), and follows it: ``Busy``
re-routes, a node that dies or stalls is retried elsewhere within the deadline, and a generation
stream that loses its node resumes on another from the last token delivered, so the caller sees
one unbroken stream. Cancelling the caller's task cancels the work on the serving node.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from llmnode.errors import (
    AgentLost,
    Busy,
    DeadlineExceeded,
    MeshError,
    NoCapacity,
    ProtocolError,
    TransportError,
    UnknownAgent,
)
from llmnode.log import get_logger
from llmnode.nodes.mesh.view import MeshView
from llmnode.nodes.requests.backoff import back_off
from llmnode.nodes.requests.candidates import Chooser, ServiceIndex
from llmnode.nodes.requests.hedging import race
from llmnode.nodes.requests.loads import LoadSampler
from llmnode.nodes.requests.outcomes import AttemptFailed, at_deadline, failed_error, typed_error
from llmnode.nodes.requests.retry import ErrorKind, RetryPolicy
from llmnode.nodes.requests.scheduler import Candidate, Choice, InFlightLedger
from llmnode.nodes.requests.server import RequestServer
from llmnode.nodes.requests.streams import (
    RESUMABLE_METHODS,
    Delivered,
    merge_result,
    resume_payload,
)
from llmnode.schemas.base import WireMessage
from llmnode.schemas.inference import TokenChunk, payload_prefix_key
from llmnode.schemas.requests import (
    Accept,
    Cancel,
    Chunk,
    ErrorReply,
    LoadReport,
    OneWay,
    Refuse,
    Request,
    Result,
)

log = get_logger(__name__)

OnChunk = Callable[[bytes], Awaitable[None]]
OnServed = Callable[[bytes], None]  # told the id of the node whose answer the caller gets
Send = Callable[[bytes, WireMessage], bool]
Answer = Accept | Refuse | Chunk | Result | ErrorReply  # what a serving node sends back
_PEER_DOWN = object()
_TIMEOUTS = ("stalled", "no_answer")


class Router:
    def __init__(
        self,
        view: MeshView,
        server: RequestServer,
        send: Send,
        *,
        heartbeat_s: float = 1.0,
        rng: random.Random | None = None,
        hedge: bool = False,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock  # unix seconds; tests inject their own
        self.loads = LoadSampler(
            view, send, clock, stale_s=2 * heartbeat_s, wait_s=heartbeat_s / 20
        )
        self._view = view
        self._server = server
        self._send = send
        self.rng = rng or random.Random()
        self._accept_timeout = max(0.5, 2.0 * heartbeat_s)
        self._stall_timeout = max(1.0, 3.0 * heartbeat_s)
        self._pending: dict[bytes, tuple[bytes, asyncio.Queue[object]]] = {}
        self.hedge = hedge  # send a second copy of a slow idempotent request elsewhere
        self.policy = policy or RetryPolicy()
        self.ledger = InFlightLedger()
        self.chooser = Chooser(ServiceIndex(view), self.ledger, self.rng, clock, server.load_of)
        self._result_load: dict[bytes, Result] = {}
        self.counters: Counter[str] = Counter()

    def on_reply(self, sender: bytes, message: Answer | LoadReport) -> None:
        if isinstance(message, LoadReport):
            return self.loads.on_report(sender, message)
        pending = self._pending.get(message.id)
        if pending is None or pending[0] != sender:
            self.counters["stray_reply"] += 1
            return
        pending[1].put_nowait(message)

    def on_peer_down(self, node: bytes) -> None:
        for target, queue in self._pending.values():
            if target == node:
                queue.put_nowait(_PEER_DOWN)
        self.ledger.forget(node)

    def _target(self, address: str) -> tuple[str, bytes | None]:
        """``name`` or ``name@node`` → (service, the one node allowed or None)."""
        if "@" not in address:
            return address, None
        service, _, node_name = address.partition("@")
        only = self._view.resolve(node_name)
        if only is None:
            raise UnknownAgent(f"no node named {node_name!r} in the mesh")
        return service, only

    def send_one_way(self, address: str, payload: bytes, caller: str) -> None:
        """Deliver a one-way message to one replica of an agent (``name`` or ``name@node``),
        chosen like a request's node; raises when no node hosts it or it cannot be reached."""
        service, only = self._target(address)
        candidates = self.chooser.shortlist(service, only)
        if not candidates:
            raise UnknownAgent(f"no agent named {service!r} in the mesh")
        choice = self.chooser.pick(service, candidates, only)
        if not self._send(choice.node, OneWay(service=service, payload=payload, caller=caller)):
            raise TransportError(f"cannot reach the node hosting {service!r}")

    # -- the call -----------------------------------------------------------------------------

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float,
        stream: bool = False,
        idempotent: bool = True,
        caller: str = "",
        on_chunk: OnChunk | None = None,
        on_served: OnServed | None = None,
    ) -> bytes:
        """Route one request; returns the final result bytes or raises a typed MeshError.
        ``on_served`` is told the node that answered (for a resumed stream, the last one)."""
        deadline = self._clock() + timeout
        self.counters["requests"] += 1
        node_name = service.partition("@")[2]
        try:
            service, only = self._target(service)
        except UnknownAgent:
            self.counters["failed"] += 1
            raise
        resumable = stream and method in RESUMABLE_METHODS
        delivered = Delivered()

        async def deliver(data: bytes) -> None:
            if resumable:
                try:
                    chunk = msgspec.msgpack.decode(data, type=TokenChunk)
                except msgspec.MsgspecError as error:
                    raise ProtocolError(f"malformed stream chunk from {service!r}") from error
                delivered.token_ids.extend(chunk.token_ids)
                delivered.text.append(chunk.text)
            if on_chunk is not None:
                await on_chunk(data)

        prefix = payload_prefix_key(method, payload)  # a node holding it is preferred
        exclude: set[bytes] = set()
        attempts = 0  # tries so far, refused or failed, each counted by the retry policy
        last_error: MeshError | None = None
        try:
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise at_deadline(last_error, service, timeout)
                candidates = self.chooser.shortlist(service, only, frozenset(exclude))
                if await self.loads.refresh(candidates):  # stale: ask them (Sparrow's probes)
                    candidates = self.chooser.refreshed(candidates)
                if not candidates:
                    if (
                        not self._view.advertised_anywhere(service, only)
                        and attempts == 0
                        and (timeout - remaining > min(2.0, timeout / 2))
                    ):
                        where = "in the mesh" if only is None else f"on node {node_name!r}"
                        raise UnknownAgent(f"no agent or model named {service!r} {where}")
                    await asyncio.sleep(min(0.05, remaining))
                    continue
                attempts += 1
                try:
                    choice = self.chooser.pick(
                        service, candidates, only, exclude=frozenset(exclude), prefix=prefix
                    )
                except NoCapacity as error:
                    last_error = error
                    exclude.clear()  # everyone is full or refused: back off, then try them all
                    await back_off(
                        self.policy, self._clock(), "busy", attempts, deadline, last_error
                    )
                    continue
                current = payload
                if resumable and delivered.token_ids:
                    current = resume_payload(payload, delivered)
                attempt = Request(
                    id=os.urandom(16),
                    service=service,
                    method=method,
                    payload=current,
                    deadline=deadline,
                    idempotent=idempotent,
                    stream=stream,
                    caller=caller,
                )
                try:
                    served_by, result = await self._attempt_or_hedge(
                        choice, attempt, deliver, candidates, exclude, only
                    )
                except Busy as error:
                    last_error = NoCapacity(f"every node serving {service!r} is busy ({error})")
                    self.counters["rerouted"] += 1
                    exclude.add(choice.node)
                    await back_off(
                        self.policy, self._clock(), "busy", attempts, deadline, last_error
                    )
                    continue
                except UnknownAgent:
                    exclude.add(choice.node)  # its record was stale: another replica, at once
                    self.counters["rerouted"] += 1
                    continue
                except AttemptFailed as failure:
                    exclude.add(choice.node)
                    if (delivered.token_ids and not resumable) or (
                        stream and not resumable and delivered.text
                    ):
                        raise AgentLost(f"stream from {service!r} lost its node") from None
                    kind: ErrorKind = "timeout" if failure.reason in _TIMEOUTS else "failed"
                    last_error = failed_error(service, failure, idempotent)
                    await back_off(
                        self.policy,
                        self._clock(),
                        kind,
                        attempts,
                        deadline,
                        last_error,
                        idempotent,
                        failure.may_have_run,
                    )
                    self.counters["retried"] += 1
                    if resumable and delivered.token_ids:
                        self.counters["resumed"] += 1
                    log.info("request_retried", service=service, reason=failure.reason)
                    continue
                if resumable and delivered.token_ids:
                    result = merge_result(result, delivered)
                if on_served is not None:
                    on_served(served_by)
                return result
        except asyncio.CancelledError:
            self.counters["cancelled"] += 1
            raise
        except MeshError:
            self.counters["failed"] += 1
            raise

    async def _attempt_or_hedge(
        self,
        choice: Choice,
        request: Request,
        deliver: OnChunk,
        candidates: list[Candidate],
        exclude: set[bytes],
        only: bytes | None,
    ) -> tuple[bytes, bytes]:
        """One attempt; with hedging on, an idempotent, unstreamed request still unanswered after
        ``RetryPolicy.hedge_after`` (2× its estimate, at least 50 ms) is also sent to the next
        best node. The first answer wins and the other copy is cancelled."""
        delay_ms = (
            self.policy.hedge_after(choice.estimate_ms, idempotent=request.idempotent)
            if self.hedge and not request.stream and len(candidates) > 1
            else None
        )
        if delay_ms is None:
            return await self._attempt(choice.node, request, deliver)

        def second() -> Coroutine[Any, Any, tuple[bytes, bytes]] | None:
            try:
                other = self.chooser.pick(
                    request.service, candidates, only, exclude=frozenset({*exclude, choice.node})
                )
            except NoCapacity:
                return None
            self.counters["hedged"] += 1
            copy = msgspec.structs.replace(request, id=os.urandom(16))
            return self._attempt(other.node, copy, deliver)

        def won(copy_won: bool) -> None:
            self.counters["hedge_won" if copy_won else "hedge_lost"] += 1

        first = self._attempt(choice.node, request, deliver)
        return await race(first, delay_ms / 1000.0, second, won)

    async def _attempt(
        self, node: bytes, request: Request, deliver: OnChunk
    ) -> tuple[bytes, bytes]:
        """One try of ``request`` on ``node``, recorded in the ledger: (``node``, the result)."""
        request_id, service = request.id, request.service
        started = self._clock()
        self.ledger.sent(node, service, request_id, started)
        finished_ok = False
        try:
            result = await self._exchange(node, request, deliver)
            finished_ok = True
            return node, result
        except AgentLost as error:  # it had the request: retried elsewhere only if idempotent
            raise AttemptFailed("agent_lost", accepted=True) from error
        finally:
            if finished_ok:
                now = self._clock()
                self.ledger.finished(
                    node, service, request_id, now, service_ms=(now - started) * 1000.0
                )
                load = self._result_load.pop(request_id, None)
                if load is not None:
                    self._view.observe_reply(node, service, load, now + 1e-6)
            else:
                self._result_load.pop(request_id, None)
                self.ledger.refused(node, service, request_id)

    async def _exchange(self, node: bytes, request: Request, deliver: OnChunk) -> bytes:
        """Send ``request`` to ``node`` (this node included: the node dispatches it in place to
        the same server) and follow its replies to the one terminal answer."""
        request_id, service, deadline = request.id, request.service, request.deadline
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._pending[request_id] = (node, queue)
        sent_at = self._clock()
        accepted = answered = False
        expected_seq = 0
        try:
            if not self._send(node, request):
                raise AttemptFailed("send_failed", accepted=False)
            while True:
                wait = self._stall_timeout if accepted else self._accept_timeout
                wait = min(wait, deadline - self._clock())
                if wait <= 0:
                    raise DeadlineExceeded(f"{service!r} did not answer before the deadline")
                try:  # asyncio.timeout, not wait_for: no task per message
                    async with asyncio.timeout(wait):
                        message = await queue.get()
                except TimeoutError:
                    if self._clock() >= deadline:
                        raise DeadlineExceeded(
                            f"{service!r} did not answer before the deadline"
                        ) from None
                    raise AttemptFailed("stalled" if accepted else "no_answer", accepted) from None
                if message is _PEER_DOWN:
                    raise AttemptFailed("peer_down", accepted)
                if isinstance(message, Accept):
                    self._view.observe_reply(node, service, message, self._clock())
                    if not accepted:
                        self._view.observe_rtt(node, (self._clock() - sent_at) * 1000.0)
                    accepted = True
                elif isinstance(message, Chunk):
                    accepted = True
                    if message.seq < expected_seq:
                        continue  # duplicate
                    expected_seq = message.seq + 1
                    await deliver(message.data)
                elif isinstance(message, Result):
                    # Its load snapshot excludes this request: apply it after the ledger has
                    # recorded the request finished (see _attempt), or it is subtracted twice.
                    self._result_load[request_id] = message  # its load, noted once it is final
                    return message.data
                elif isinstance(message, Refuse | ErrorReply):
                    answered = True  # Busy, UnknownAgent, AccessDenied, a failure: typed
                    raise typed_error(message)
        except BaseException:
            if not answered:  # cancelled, stalled, or a chunk we could not take: stop it there
                self._send(node, Cancel(id=request_id))
            raise
        finally:
            self._pending.pop(request_id, None)
