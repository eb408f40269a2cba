"""The Python SDK: ``connect()`` to the local node and use the mesh (I/O: its control socket).

    async with llmnode.connect() as mesh:
        answer = await mesh.request("writer", Ask(question="..."), reply_type=Answer)
        await mesh.send("logger", {"type": "note", "text": "hi"})
        await mesh.publish("news", Headline(title="..."))
        async for delta in mesh.generate("smollm2-135m-instruct", "Once upon a time"):
            print(delta, end="")
        text = await mesh.chat("smollm2-135m-instruct", "What is the capital of France?")
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
from collections.abc import AsyncIterator, Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import msgspec

from llmnode.client.admin import NodeAdmin
from llmnode.client.connection import ControlClient
from llmnode.client.envelope import convert_body, decode_envelope, encode_envelope
from llmnode.client.inputs import (
    ChatInput,
    chat_messages,
    decode_answer,
    generate_request,
    model_service,
)
from llmnode.schemas.control import CtlPublish, CtlRequest
from llmnode.schemas.inference import EmbedRequest, EmbedResult, GenerateResult, TokenChunk
from llmnode.schemas.requests import SEND_METHOD

if TYPE_CHECKING:
    from llmnode.agents.agent import Agent

T = TypeVar("T")

_ENCODER = msgspec.msgpack.Encoder()
_TOKEN_CHUNK = msgspec.msgpack.Decoder(TokenChunk)
_GENERATE_RESULT = msgspec.msgpack.Decoder(GenerateResult)
_EMBED_RESULT = msgspec.msgpack.Decoder(EmbedResult)
DEFAULT_TIMEOUT = 30.0
GENERATE_TIMEOUT = 120.0


class Mesh(NodeAdmin):
    """The mesh as seen from one process, through its local node's control socket."""

    def __init__(self, client: ControlClient, *, name: str = "") -> None:
        self.client = client
        self.name = name  # the caller name others see (agents use their own)

    async def close(self) -> None:
        await self.client.close()

    def _caller(self, caller: str | None) -> str:
        """The caller name others see: ``caller`` when given, else this mesh's name."""
        return self.name if caller is None else caller

    def _request(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float,
        caller: str | None,
        stream: bool = False,
        idempotent: bool = True,
    ) -> CtlRequest:
        return CtlRequest(
            id=self.client.next_id(),
            service=service,
            method=method,
            payload=payload,
            timeout=timeout,
            stream=stream,
            idempotent=idempotent,
            caller=self._caller(caller),
        )

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

    # ---- models ------------------------------------------------------------------------------

    async def generate(
        self,
        /,
        model: str,
        prompt: str = "",
        *,
        messages: ChatInput | None = None,
        timeout: float = GENERATE_TIMEOUT,
        caller: str | None = None,
        **options: Any,
    ) -> AsyncIterator[str]:
        """Text deltas of a completion of ``prompt`` (or of a chat, with ``messages=``).
        ``options``: max_tokens, temperature, top_p, top_k, seed, stop."""
        if messages is not None:
            body = generate_request(options, messages=chat_messages(messages))
            method = "chat"
        else:
            body = generate_request(options, prompt=prompt)
            method = "generate"
        request = self._request(
            model_service(model),
            method,
            _ENCODER.encode(body),
            timeout=timeout,
            caller=caller,
            stream=True,
        )
        async with self.client.stream(request) as stream:
            async for data in stream:
                chunk: TokenChunk = decode_answer(_TOKEN_CHUNK, data, "token chunk")
                if chunk.text:
                    yield chunk.text

    async def _chat_text(
        self,
        model: str,
        *,
        messages: ChatInput,
        system: str | None,
        timeout: float,
        caller: str | None,
        options: dict[str, Any],
    ) -> str:
        body = generate_request(options, messages=chat_messages(messages, system))
        answer = await self.client.call(
            self._request(
                model_service(model), "chat", _ENCODER.encode(body), timeout=timeout, caller=caller
            )
        )
        result: GenerateResult = decode_answer(_GENERATE_RESULT, answer.data, "generation result")
        return result.text

    @overload
    def chat(
        self,
        model: str,
        messages: ChatInput,
        *,
        stream: Literal[False] = ...,
        system: str | None = ...,
        timeout: float = ...,
        caller: str | None = ...,
        **options: Any,
    ) -> Coroutine[Any, Any, str]: ...
    @overload
    def chat(
        self,
        model: str,
        messages: ChatInput,
        *,
        stream: Literal[True],
        system: str | None = ...,
        timeout: float = ...,
        caller: str | None = ...,
        **options: Any,
    ) -> AsyncIterator[str]: ...

    def chat(
        self,
        model: str,
        messages: ChatInput,
        *,
        stream: bool = False,
        system: str | None = None,
        timeout: float = GENERATE_TIMEOUT,
        caller: str | None = None,
        **options: Any,
    ) -> Coroutine[Any, Any, str] | AsyncIterator[str]:
        """Chat with ``model`` (a string is one user turn). ``await`` it for the whole answer,
        or ``async for`` over ``chat(..., stream=True)`` for text deltas."""
        if stream:
            return self.generate(
                model,
                messages=chat_messages(messages, system),
                timeout=timeout,
                caller=caller,
                **options,
            )
        return self._chat_text(
            model,
            messages=messages,
            system=system,
            timeout=timeout,
            caller=caller,
            options=options,
        )

    async def embed(
        self,
        model: str,
        texts: str | list[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        caller: str | None = None,
    ) -> list[list[float]]:
        """One embedding vector per text."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        payload = _ENCODER.encode(EmbedRequest(texts=batch))
        answer = await self.client.call(
            self._request(model_service(model), "embed", payload, timeout=timeout, caller=caller)
        )
        result: EmbedResult = decode_answer(_EMBED_RESULT, answer.data, "embedding result")
        return result.rows()

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
