"""One streamed request over a node's control connection, as an async iterator (no I/O of its own:
it sends and waits through the :class:`~llmnode.client.connection.ControlClient`)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import TYPE_CHECKING

from llmnode.errors import DeadlineExceeded, MeshError, ProtocolError, error_from_code
from llmnode.schemas.base import WireMessage
from llmnode.schemas.control import CtlCancel, CtlChatTools, CtlChunk, CtlError, CtlOk, CtlRequest

if TYPE_CHECKING:
    from llmnode.client.connection import ControlClient

REQUEST_GRACE = 5.0  # extra wait beyond a request's own timeout before giving up on the node


class ControlStream:
    """The chunks of one streamed request (or the steps of a chat with tools the node runs),
    as an async iterator of ``bytes``.

    After the iterator is exhausted, :attr:`result` holds the final data (the ``CtlOk``).
    Closing it early (``aclose()``, leaving ``async with``) cancels the request on the node.
    """

    def __init__(self, client: ControlClient, request: CtlRequest | CtlChatTools) -> None:
        self._client = client
        self._request = request
        self._queue: asyncio.Queue[WireMessage] = asyncio.Queue()
        self._started = False
        self._finished = False
        self._next_seq = 0
        self.result: bytes | None = None

    async def __aenter__(self) -> ControlStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ControlStream:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            self._client._pending[self._request.id] = self._queue
            try:
                await self._client.send(self._request)
            except BaseException:
                self._finished = True
                self._client._pending.pop(self._request.id, None)
                raise
        while True:
            try:
                async with asyncio.timeout(self._request.timeout + REQUEST_GRACE):
                    message = await self._queue.get()
            except TimeoutError:
                await self.aclose()
                raise DeadlineExceeded(
                    f"no answer to {self._what()} within {self._request.timeout:g} s"
                ) from None
            if isinstance(message, CtlChunk):
                if message.seq < self._next_seq:
                    continue  # a duplicate (e.g. re-sent after a failover)
                self._next_seq = message.seq + 1
                return message.data
            self._finished = True
            self._client._pending.pop(self._request.id, None)
            if isinstance(message, CtlOk):
                self.result = message.data
                raise StopAsyncIteration
            if isinstance(message, CtlError):
                raise error_from_code(
                    message.code,
                    message.message,
                    remote_type=message.remote_type,
                    reason=message.reason,
                )
            raise ProtocolError(f"unexpected {type(message).__name__} on a request stream")

    def _what(self) -> str:
        request = self._request
        if isinstance(request, CtlChatTools):
            return f"the chat with tools of {request.model}"
        return f"{request.service}.{request.method}"

    async def aclose(self) -> None:
        """Stop waiting; if the request is still running, cancel it on the node."""
        if self._finished:
            return
        self._finished = True
        self._client._pending.pop(self._request.id, None)
        if self._started:
            with contextlib.suppress(MeshError):
                await self._client.send(CtlCancel(id=self._request.id))
