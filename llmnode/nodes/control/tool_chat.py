"""A chat with mesh agents as tools, run in the node for a client (I/O: through the router).

The rules are :mod:`llmnode.schemas.tool_loop`'s; here each model turn and each agent call is a
request routed by this node's :class:`~llmnode.nodes.requests.router.Router`, so they get the
scheduler, retries and deadlines of every other request, and each step goes to the client as it
happens. Cancelling the task that runs it cancels the model turn or agent call in flight.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from llmnode.errors import ProtocolError
from llmnode.schemas.control import CtlChatTools
from llmnode.schemas.envelope import decode_envelope, encode_envelope
from llmnode.schemas.inference import ChatMessage, Constraint, GenerateResult
from llmnode.schemas.tool_loop import ToolRounds, ToolSpec, run_rounds

if TYPE_CHECKING:
    from llmnode.nodes.requests.router import Router

OnStep = Callable[[bytes], Awaitable[None]]
_ENCODER = msgspec.msgpack.Encoder()
_RESULT = msgspec.msgpack.Decoder(GenerateResult)


async def run_tool_chat(router: Router, message: CtlChatTools, on_step: OnStep) -> None:
    """Run the chat of ``message``; ``on_step`` gets each step as msgpack."""
    rounds = ToolRounds(
        message.tools, message.tool_choice, message.max_rounds, message.answer_schema
    )

    async def complete(
        turns: list[ChatMessage], constraint: Constraint | None, tools: str
    ) -> GenerateResult:
        body = msgspec.structs.replace(
            message.options, messages=turns, constraint=constraint, tools=tools
        )
        data = await router.call(
            message.model, "chat", _ENCODER.encode(body), timeout=message.timeout,
            caller=message.caller,
        )  # fmt: skip
        try:
            result: GenerateResult = _RESULT.decode(data)
        except msgspec.MsgspecError as error:
            raise ProtocolError(f"malformed generation result from {message.model}") from error
        return result

    async def ask(spec: ToolSpec, arguments: dict[str, Any]) -> Any:
        data = await router.call(
            spec.agent, "request", encode_envelope(arguments, spec.tag),
            timeout=message.timeout, caller=message.caller,
        )  # fmt: skip
        return decode_envelope(data)[1]

    async for step in run_rounds(rounds, message.messages, complete, ask):
        await on_step(_ENCODER.encode(step))
