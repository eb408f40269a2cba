"""The model half of the SDK's ``Mesh``: generate, chat (typed, and with mesh agents as tools)
and embed (I/O: the local node's control socket).

``response_type=T`` (a msgspec Struct, or any type msgspec gives a JSON Schema) makes the answer
decode under T's schema and come back as a validated T. ``regex=``, ``grammar=`` (Lark) and
``json_schema=`` constrain the text the same way. ``tools=[...]`` lets the model call agents of
the mesh: the node runs that loop (:mod:`llmnode.client.agent_tools`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import msgspec

from llmnode.client.connection import ControlClient
from llmnode.client.inputs import (
    ChatInput,
    chat_messages,
    decode_answer,
    generate_request,
    model_service,
)
from llmnode.client.structured import constraint_options, read_typed, type_constraint
from llmnode.schemas.control import CtlChatTools, CtlRequest
from llmnode.schemas.inference import (
    ChatMessage,
    EmbedRequest,
    EmbedResult,
    GenerateResult,
    TokenChunk,
)
from llmnode.schemas.tool_loop import Answered, ToolRounds, ToolStep

if TYPE_CHECKING:
    from llmnode.client.agent_tools import AgentTool

T = TypeVar("T")

_ENCODER = msgspec.msgpack.Encoder()
_TOKEN_CHUNK = msgspec.msgpack.Decoder(TokenChunk)
_GENERATE_RESULT = msgspec.msgpack.Decoder(GenerateResult)
_EMBED_RESULT = msgspec.msgpack.Decoder(EmbedResult)
_TOOL_STEP = msgspec.msgpack.Decoder(ToolStep)
DEFAULT_TIMEOUT = 30.0
GENERATE_TIMEOUT = 120.0


class ModelCalls:
    """Calls to the models of the mesh (``Mesh`` inherits them)."""

    client: ControlClient
    name: str  # the caller name others see (agents use their own)
    request: Callable[..., Awaitable[Any]]  # Mesh.request: a request to an agent

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

    # ---- generation --------------------------------------------------------------------------

    @overload
    def generate(
        self,
        /,
        model: str,
        prompt: str = ...,
        *,
        messages: ChatInput | None = ...,
        response_type: None = ...,
        timeout: float = ...,
        caller: str | None = ...,
        **options: Any,
    ) -> AsyncIterator[str]: ...
    @overload
    def generate(
        self,
        /,
        model: str,
        prompt: str = ...,
        *,
        messages: ChatInput | None = ...,
        response_type: type[T],
        timeout: float = ...,
        caller: str | None = ...,
        **options: Any,
    ) -> Coroutine[Any, Any, T]: ...

    def generate(
        self,
        /,
        model: str,
        prompt: str = "",
        *,
        messages: ChatInput | None = None,
        response_type: Any = None,
        timeout: float = GENERATE_TIMEOUT,
        caller: str | None = None,
        **options: Any,
    ) -> AsyncIterator[str] | Coroutine[Any, Any, Any]:
        """Text deltas of a completion of ``prompt`` (or of a chat, with ``messages=``).
        ``options``: max_tokens, temperature, top_p, top_k, seed, stop, and one of regex=,
        grammar= (Lark), json_schema= to constrain the text. With ``response_type=T``, ``await``
        it instead for the answer as a validated T."""
        options = constraint_options(options)
        if messages is not None:
            fields: dict[str, Any] = {"messages": chat_messages(messages)}
            method = "chat"
        else:
            fields = {"prompt": prompt}
            method = "generate"
        if response_type is not None:
            options["constraint"] = type_constraint(response_type)
            return self._typed(model, method, fields, response_type, timeout, caller, options)
        body = generate_request(options, **fields)
        return self._deltas(model, method, _ENCODER.encode(body), timeout, caller)

    async def _deltas(
        self, model: str, method: str, payload: bytes, timeout: float, caller: str | None
    ) -> AsyncIterator[str]:
        request = self._request(
            model_service(model), method, payload, timeout=timeout, caller=caller, stream=True
        )
        async with self.client.stream(request) as stream:
            async for data in stream:
                chunk: TokenChunk = decode_answer(_TOKEN_CHUNK, data, "token chunk")
                if chunk.text:
                    yield chunk.text

    async def _result(
        self, model: str, method: str, fields: dict[str, Any], timeout: float, caller: str | None,
        options: dict[str, Any],
    ) -> GenerateResult:  # fmt: skip
        body = generate_request(options, **fields)
        answer = await self.client.call(
            self._request(
                model_service(model), method, _ENCODER.encode(body), timeout=timeout, caller=caller
            )
        )
        result: GenerateResult = decode_answer(_GENERATE_RESULT, answer.data, "generation result")
        return result

    async def _typed(
        self, model: str, method: str, fields: dict[str, Any], response_type: Any,
        timeout: float, caller: str | None, options: dict[str, Any],
    ) -> Any:  # fmt: skip
        result = await self._result(model, method, fields, timeout, caller, options)
        return read_typed(result, response_type)

    # ---- chat --------------------------------------------------------------------------------

    @overload
    def chat(
        self,
        model: str,
        messages: ChatInput,
        *,
        stream: Literal[False] = ...,
        system: str | None = ...,
        response_type: None = ...,
        tools: Sequence[str | AgentTool] | None = ...,
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
        stream: Literal[False] = ...,
        system: str | None = ...,
        response_type: type[T],
        tools: Sequence[str | AgentTool] | None = ...,
        timeout: float = ...,
        caller: str | None = ...,
        **options: Any,
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def chat(
        self,
        model: str,
        messages: ChatInput,
        *,
        stream: Literal[True],
        system: str | None = ...,
        response_type: None = ...,
        tools: None = ...,
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
        response_type: Any = None,
        tools: Sequence[str | AgentTool] | None = None,
        timeout: float = GENERATE_TIMEOUT,
        caller: str | None = None,
        **options: Any,
    ) -> Coroutine[Any, Any, Any] | AsyncIterator[str]:
        """Chat with ``model`` (a string is one user turn). ``await`` it for the whole answer
        (a validated ``response_type`` when given), or ``async for`` over
        ``chat(..., stream=True)`` for text deltas. ``tools``: agents of the mesh the model may
        call (names, or :class:`~llmnode.client.agent_tools.AgentTool`); ``tool_choice=``
        "auto", "required" or an agent's name forces a call; see :meth:`chat_steps`."""
        turns = chat_messages(messages, system)
        if tools:
            return self._chat_with_tools(
                model, turns, tools, response_type, timeout, caller, options
            )
        options = constraint_options(options)
        fields: dict[str, Any] = {"messages": turns}
        if stream:
            body = _ENCODER.encode(generate_request(options, **fields))
            return self._deltas(model, "chat", body, timeout, caller)
        if response_type is not None:
            options["constraint"] = type_constraint(response_type)
            return self._typed(model, "chat", fields, response_type, timeout, caller, options)
        return self._text(model, turns, timeout, caller, options)

    async def _text(
        self, model: str, turns: list[ChatMessage], timeout: float, caller: str | None,
        options: dict[str, Any],
    ) -> str:  # fmt: skip
        result = await self._result(model, "chat", {"messages": turns}, timeout, caller, options)
        return result.text

    async def _chat_with_tools(
        self, model: str, turns: list[ChatMessage], tools: Sequence[str | AgentTool],
        response_type: Any, timeout: float, caller: str | None, options: dict[str, Any],
    ) -> Any:  # fmt: skip
        answer: Any = None
        async for step in self.chat_steps(
            model, turns, tools=tools, response_type=response_type, timeout=timeout,
            caller=caller, **options,
        ):  # fmt: skip
            if isinstance(step, Answered):
                answer = step.value
        return answer

    async def chat_steps(
        self,
        /,
        model: str,
        messages: ChatInput,
        *,
        tools: Sequence[str | AgentTool],
        system: str | None = None,
        response_type: Any = None,
        tool_choice: str = "auto",
        max_rounds: int = 4,
        timeout: float = GENERATE_TIMEOUT,
        caller: str | None = None,
        **options: Any,
    ) -> AsyncIterator[ToolStep]:
        """Each step of a chat in which the model may call agents of the mesh as tools:
        ``ToolCalled``, ``ToolReplied`` (the agent's real reply, fed back to the model), and
        last ``Answered``. At most ``max_rounds`` model turns; the last may not call. The local
        node runs the loop (one control request; its model turns and agent calls go through
        its scheduler, ``timeout`` bounding each); closing the iterator cancels it there."""
        from llmnode.client.agent_tools import (  # noqa: PLC0415 - no import cycle
            agent_tools,
            answer_schema,
            typed_answer,
        )

        options = dict(constraint_options(options))
        options.pop("constraint", None)  # each turn's grammar is the loop's
        request = CtlChatTools(
            id=self.client.next_id(),
            model=model_service(model),
            messages=chat_messages(messages, system),
            tools=agent_tools(tools),
            tool_choice=tool_choice,
            max_rounds=max_rounds,
            answer_schema=answer_schema(response_type),
            options=generate_request(options),
            timeout=timeout,
            caller=self._caller(caller),
        )
        ToolRounds(request.tools, tool_choice, max_rounds)  # a bad set of tools fails here
        async with self.client.stream(request) as stream:
            async for data in stream:
                step: ToolStep = decode_answer(_TOOL_STEP, data, "tool chat step")
                yield typed_answer(step, response_type) if isinstance(step, Answered) else step

    # ---- embeddings --------------------------------------------------------------------------

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
