"""The low-level client of a node's control socket (does I/O: one asyncio stream connection).

The SDK, the CLI and agent hosts talk to their local node through this client. It presents the
node's token first, then every frame is one msgpack ``Ctl*`` message each way
(:mod:`llmnode.nodes.control.wire`). What arrives is routed as it is read:

- ``CtlOk`` / ``CtlError`` / ``CtlChunk`` go to the :meth:`ControlClient.call` or
  :meth:`ControlClient.stream` waiting on that ``id``;
- ``CtlDelivery`` with a ``subscription`` goes to that subscription's queue
  (:meth:`ControlClient.open_subscription`);
- everything else addressed to this client (``CtlCall``, ``CtlCallCancelled``, agent
  ``CtlDelivery``) goes to the listeners added with :meth:`ControlClient.add_listener`.

Every wait has a timeout; a node that does not answer, or closes the connection, is
:class:`~llmnode.errors.NotRunning` (waiters fail as soon as the connection drops).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import cast

from llmnode.client.local_node import find_control
from llmnode.client.stream import REQUEST_GRACE, ControlStream
from llmnode.errors import (
    ConfigError,
    DeadlineExceeded,
    MeshError,
    NotRunning,
    ProtocolError,
    error_from_code,
)
from llmnode.log import get_logger
from llmnode.nodes.control.wire import FrameReader, frame, parse_address
from llmnode.schemas.base import WireMessage
from llmnode.schemas.control import (
    CtlCancel,
    CtlChatTools,
    CtlChunk,
    CtlDelivery,
    CtlError,
    CtlOk,
    CtlRequest,
    CtlStatus,
    CtlSubscribe,
    CtlUnsubscribe,
)
from llmnode.schemas.messages import decode, encode

log = get_logger(__name__)

CONTROL_TIMEOUT = 10.0  # seconds to wait for the answer to a control operation
SEND_TIMEOUT = 5.0
KEEPALIVE_INTERVAL = 2.0  # the node forgets clients it has not heard from for 10 s

Listener = Callable[[WireMessage], None]


class _ClientProtocol(asyncio.Protocol):
    """Feeds frames from the node to its :class:`ControlClient` as they arrive (no reader task)."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client
        self._reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except MeshError as error:
            log.warning("control_message_rejected", error=str(error))
            if self.transport is not None:
                self.transport.close()
            return
        for body in frames:
            try:
                message = decode(body)
            except MeshError as error:
                log.warning("control_message_rejected", error=str(error))
                continue
            self._client._route(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.writable.set()
        self._client._lost(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class ControlClient:
    """A connection to one node's control socket. Use ``async with`` or connect()/close().

    ``resolve`` (set by :meth:`from_data_dir`) finds the node's address and token again: when the
    connection drops (the node restarted), the next send reconnects with them."""

    def __init__(
        self,
        address: str,
        token: bytes | str,
        *,
        timeout: float = CONTROL_TIMEOUT,
        resolve: Callable[[], tuple[str, bytes]] | None = None,
    ):
        self.address = address
        self._token = token.encode() if isinstance(token, str) else token
        self._timeout = timeout
        self._resolve = resolve
        self._protocol: _ClientProtocol | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._reconnect_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[WireMessage] | asyncio.Queue[WireMessage]] = {}
        # subscription id -> (topic, deliveries); renewed on a new connection
        self._subscriptions: dict[int, tuple[str, asyncio.Queue[CtlDelivery]]] = {}
        self.generation = 0  # connections opened so far: a change means a new node process
        self._listeners: list[Listener] = []
        self.closed = False

    @classmethod
    def from_data_dir(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        address: str | None = None,
        token: str | bytes | None = None,
    ) -> ControlClient:
        resolve = functools.partial(find_control, data_dir, address=address, token=token)
        return cls(*resolve(), resolve=resolve)

    async def __aenter__(self) -> ControlClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def next_id(self) -> int:
        return next(self._ids)

    async def connect(self) -> None:
        """Open the connection and check that a node answers (a ``CtlStatus`` round trip)."""
        try:
            await self._open()
            await self.call(CtlStatus(id=self.next_id()), timeout=self._timeout)
        except DeadlineExceeded:
            await self.close()
            raise NotRunning(
                f"no llmnode node answers on {self.address}; start one with `llmnode start`"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> None:
        try:
            address = parse_address(self.address)
        except ConfigError as error:
            raise NotRunning(str(error)) from None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                if address.is_unix:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _ClientProtocol(self), address.path
                    )
                else:
                    _, protocol = await loop.create_connection(
                        lambda: _ClientProtocol(self), address.host, address.port
                    )
        except (OSError, TimeoutError) as error:
            reason = getattr(error, "strerror", None) or "timed out"
            raise NotRunning(
                f"no llmnode node answers on {self.address} ({reason}); "
                "start one with `llmnode start`"
            ) from None
        assert protocol.transport is not None
        protocol.transport.write(frame(self._token))
        self._protocol = protocol
        self.generation += 1

    async def _reconnect(self) -> None:
        """Open a new connection (the node restarted) and renew this client's subscriptions on
        it. Agent hosts see :attr:`generation` change and register their agents again."""
        async with self._reconnect_lock:
            if self._protocol is not None or self.closed:
                return
            if self._resolve is not None:
                self.address, self._token = self._resolve()
            await self._open()
            log.info("control_reconnected", address=self.address)
            for subscription_id, (topic, _) in list(self._subscriptions.items()):
                await self.call(CtlSubscribe(id=subscription_id, topic=topic))

    def _lost(self, protocol: _ClientProtocol) -> None:
        """The connection closed: everything waiting on it fails now, not at its timeout."""
        if self._protocol is protocol:
            self._protocol = None
        self._fail_pending(NotRunning("the node closed the control connection"))

    def _fail_pending(self, failure: MeshError) -> None:
        for waiter in self._pending.values():
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_exception(failure)
            else:
                waiter.put_nowait(CtlError(id=0, code=failure.code, message=str(failure)))
        self._pending.clear()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        self._fail_pending(NotRunning("the control connection was closed"))
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    def add_listener(self, listener: Listener) -> None:
        """Receive every message that is not an answer to this client's own requests."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def send(self, message: WireMessage) -> None:
        """Send one message to the node (replies from agents, cancels, requests)."""
        if self.closed:
            raise NotRunning("the control connection is closed")
        if self._protocol is None:
            await self._reconnect()
        protocol = self._protocol
        transport = protocol.transport if protocol is not None else None
        if protocol is None or transport is None or transport.is_closing():
            raise NotRunning("the node closed the control connection")
        transport.write(frame(encode(message)))
        if not protocol.writable.is_set():  # the node is not reading: wait, but not forever
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await protocol.writable.wait()
            except TimeoutError:
                raise NotRunning(
                    f"no llmnode node accepts messages on {self.address}; is it running?"
                ) from None

    async def call(self, message: WireMessage, *, timeout: float | None = None) -> CtlOk:
        """Send a request with an ``id`` and wait for its ``CtlOk``; a ``CtlError`` raises the
        typed error. ``timeout`` defaults to the request's own timeout plus a grace period."""
        message_id: int = message.id  # type: ignore[attr-defined]
        if timeout is None:
            timeout = (
                message.timeout + REQUEST_GRACE
                if isinstance(message, CtlRequest)
                else self._timeout
            )
        future: asyncio.Future[WireMessage] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        try:
            await self.send(message)
            async with asyncio.timeout(timeout):
                answer = await future
        except TimeoutError:
            if isinstance(message, CtlRequest):
                with contextlib.suppress(MeshError):
                    await self.send(CtlCancel(id=message_id))
            raise DeadlineExceeded(
                f"no answer from the node to {type(message).__name__} within {timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            if isinstance(message, CtlRequest) and not self.closed:
                with contextlib.suppress(MeshError):
                    await asyncio.shield(self.send(CtlCancel(id=message_id)))
            raise
        finally:
            self._pending.pop(message_id, None)
        if isinstance(answer, CtlOk):
            return answer
        if isinstance(answer, CtlError):
            raise error_from_code(
                answer.code, answer.message, remote_type=answer.remote_type, reason=answer.reason
            )
        raise ProtocolError(f"unexpected {type(answer).__name__} answering {message_id}")

    def stream(self, request: CtlRequest | CtlChatTools) -> ControlStream:
        """Chunks of a ``stream=True`` request (or the steps of a chat with tools); the final
        data is in ``.result`` afterwards."""
        return ControlStream(self, request)

    async def open_subscription(self, topic: str) -> tuple[int, asyncio.Queue[CtlDelivery]]:
        subscription_id = self.next_id()
        queue: asyncio.Queue[CtlDelivery] = asyncio.Queue()
        self._subscriptions[subscription_id] = (topic, queue)
        if self._keepalive is None:
            self._keepalive = asyncio.create_task(self._keepalive_loop(), name="control_keepalive")
        try:
            await self.call(CtlSubscribe(id=subscription_id, topic=topic))
        except BaseException:
            self._subscriptions.pop(subscription_id, None)
            raise
        return subscription_id, queue

    async def close_subscription(self, subscription_id: int, topic: str) -> None:
        self._subscriptions.pop(subscription_id, None)
        if not self.closed:
            with contextlib.suppress(MeshError):
                await self.call(CtlUnsubscribe(id=self.next_id(), topic=topic))

    async def subscription(self, topic: str) -> AsyncIterator[CtlDelivery]:
        """Deliveries on ``topic`` until the iterator is closed (then unsubscribes)."""
        subscription_id, queue = await self.open_subscription(topic)
        try:
            while True:
                yield await queue.get()
        finally:
            await self.close_subscription(subscription_id, topic)

    async def _keepalive_loop(self) -> None:
        """Heartbeat the node while this client holds subscriptions, so it keeps them."""
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            if self._subscriptions:
                try:
                    await self.call(CtlStatus(id=self.next_id()), timeout=5.0)
                except MeshError as error:
                    log.warning("control_keepalive_failed", error=str(error))

    def _route(self, message: WireMessage) -> None:
        if isinstance(message, CtlOk | CtlError | CtlChunk):
            waiter = self._pending.get(message.id)
            if waiter is None:
                return  # an answer nobody waits for any more (cancelled, timed out)
            if isinstance(waiter, asyncio.Queue):
                waiter.put_nowait(message)
            elif not waiter.done():
                waiter.set_result(message)
            return
        if isinstance(message, CtlDelivery) and message.subscription:
            subscription = self._subscriptions.get(message.subscription)
            if subscription is not None:
                subscription[1].put_nowait(message)
            return
        for listener in list(self._listeners):
            try:
                listener(message)
            except Exception as error:
                log.exception("control_listener_failed", error=str(error))
