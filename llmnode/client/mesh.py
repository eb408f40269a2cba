"""The Python SDK: ``connect()`` to the local node and use the mesh (I/O: its control socket).

    async with llmnode.connect() as mesh:
        answer = await mesh.request("writer", Ask(question="..."), reply_type=Answer)
        await mesh.send("logger", {"type": "note", "text": "hi"})
        await mesh.publish("news", Headline(title="..."))
        async for delta in mesh.generate("smollm2-135m-instruct", "Once upon a time"):
            print(delta, end="")
        text = await mesh.chat("smollm2-135m-instruct", "What is the capital of France?")
        verdict = await mesh.chat("smollm2-135m-instruct", "...", response_type=Verdict)
        answer = await mesh.chat("smollm2-135m-instruct", "...", tools=["librarian"])
        vectors = await mesh.embed("all-minilm-l6-v2", ["a sentence", "another"])
        async with mesh.serving(MyAgent()):   # host agents in this process
            ...

``connect_sync()`` (:mod:`llmnode.client.sync`) gives the same methods to plain code. Errors are
typed (:mod:`llmnode.errors`): NotRunning, UnknownAgent, DeadlineExceeded, NoCapacity, ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from llmnode.client.admin import NodeAdmin
from llmnode.client.connection import ControlClient
from llmnode.client.envelope import convert_body, decode_envelope, encode_envelope
from llmnode.client.models import DEFAULT_TIMEOUT, GENERATE_TIMEOUT, ModelCalls
from llmnode.schemas.control import CtlPublish
from llmnode.schemas.requests import SEND_METHOD

if TYPE_CHECKING:
    from llmnode.agents.agent import Agent

T = TypeVar("T")

__all__ = ["DEFAULT_TIMEOUT", "GENERATE_TIMEOUT", "Mesh", "connect", "open_mesh"]


class Mesh(ModelCalls, NodeAdmin):
    """The mesh as seen from one process, through its local node's control socket."""

    def __init__(self, client: ControlClient, *, name: str = "") -> None:
        self.client = client
        self.name = name  # the caller name others see (agents use their own)

    async def close(self) -> None:
        await self.client.close()

    # ---- agents ------------------------------------------------------------------------------

    @overload
    async def request(
        self,
        to: str,
        message: Any,
        *,
        timeout: float = ...,
        reply_type: type[T],
        idempotent: bool = ...,
        caller: str | None = ...,
    ) -> T: ...
    @overload
    async def request(
        self,
        to: str,
        message: Any,
        *,
        timeout: float = ...,
        reply_type: None = ...,
        idempotent: bool = ...,
        caller: str | None = ...,
    ) -> Any: ...

    async def request(
        self,
        to: str,
        message: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reply_type: Any = None,
        idempotent: bool = True,
        caller: str | None = None,
    ) -> Any:
        """Send ``message`` to agent ``to`` (``name`` or ``name@node``) and return its reply,
        converted to ``reply_type`` when given (else plain data: dicts, lists, ...)."""
        answer = await self.client.call(
            self._request(
                to,
                "request",
                encode_envelope(message),
                timeout=timeout,
                caller=caller,
                idempotent=idempotent,
            )
        )
        _tag, body = decode_envelope(answer.data)
        return convert_body(body, reply_type)

    async def request_stream(
        self,
        to: str,
        message: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        item_type: Any = None,
        caller: str | None = None,
    ) -> AsyncIterator[Any]:
        """The chunks a streaming handler of agent ``to`` yields for ``message``."""
        request = self._request(
            to, "request", encode_envelope(message), timeout=timeout, caller=caller, stream=True
        )
        async with self.client.stream(request) as stream:
            async for chunk in stream:
                _tag, body = decode_envelope(chunk)
                yield convert_body(body, item_type)

    async def send(
        self, to: str, message: Any, *, timeout: float = DEFAULT_TIMEOUT, caller: str | None = None
    ) -> None:
        """One-way message to agent ``to``: returns once one of its handlers has taken it (taken
        at most once; the handler runs on, its result dropped). No handler for it: AgentError."""
        payload = encode_envelope(message)
        await self.client.call(
            self._request(
                to, SEND_METHOD, payload, timeout=timeout, caller=caller, idempotent=False
            )
        )

    async def publish(self, topic: str, message: Any, *, caller: str | None = None) -> None:
        """Publish on ``topic``: every subscriber in the mesh gets it once."""
        await self.client.call(
            CtlPublish(
                id=self.client.next_id(),
                topic=topic,
                payload=encode_envelope(message),
                caller=self._caller(caller),
            )
        )

    async def subscribe(self, topic: str, *, message_type: Any = None) -> AsyncIterator[Any]:
        """Publications on ``topic`` (converted to ``message_type`` when given), until closed."""
        subscription_id, queue = await self.client.open_subscription(topic)
        try:
            while True:
                delivery = await queue.get()
                _tag, body = decode_envelope(delivery.payload)
                yield convert_body(body, message_type)
        finally:
            await self.client.close_subscription(subscription_id, topic)

    # ---- hosting agents ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self, *agents: Agent) -> AsyncIterator[None]:
        """Host ``agents`` in this process for the duration of the block."""
        from llmnode.agents.host import AgentHost  # noqa: PLC0415 - the agents sit above the SDK

        host = AgentHost(self)
        await host.start(*agents)
        try:
            yield
        finally:
            await host.stop()

    async def serve(self, *agents: Agent) -> None:
        """Host ``agents`` in this process until cancelled."""
        async with self.serving(*agents):
            await asyncio.Event().wait()


async def open_mesh(
    data_dir: str | os.PathLike[str] | None,
    address: str | None,
    token: str | bytes | None,
    name: str | None,
) -> Mesh:
    client = ControlClient.from_data_dir(data_dir, address=address, token=token)
    await client.connect()
    return Mesh(client, name=name or "")


class _Connection:
    """What :func:`connect` returns: ``async with`` it, or ``await`` it for a Mesh."""

    def __init__(self, *arguments: Any) -> None:
        self._arguments = arguments
        self._mesh: Mesh | None = None

    def __await__(self) -> Generator[Any, None, Mesh]:
        return open_mesh(*self._arguments).__await__()

    async def __aenter__(self) -> Mesh:
        self._mesh = await open_mesh(*self._arguments)
        return self._mesh

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._mesh is not None:
            await self._mesh.close()


def connect(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    address: str | None = None,
    token: str | bytes | None = None,
    name: str | None = None,
) -> _Connection:
    """Connect to the local node (found through ``data_dir``, ``$LLMNODE_DATA_DIR`` or the
    default data dir; ``address``/``token`` override). Raises NotRunning when none answers."""
    return _Connection(data_dir, address, token, name)
