"""Server-sent events as OpenAI clients expect them, fed by a call into the mesh (I/O: aiohttp).

A streamed completion runs its mesh call in a task whose chunks land in a queue; this module
writes them as ``data: {...}\\n\\n`` events. Until the first token it sends ``: keep-alive``
comments (the request may wait in a queue); an error before any byte went out is an ordinary HTTP
error, one after is ``data: {"error": {...}}``. When the client goes away, the call is cancelled,
which cancels the request on the serving node and frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
from aiohttp import web

from llmnode.errors import MeshError
from llmnode.http.errors import HttpError, from_mesh_error
from llmnode.http.receipts import RECEIPT_FIELD, stream_field
from llmnode.schemas.inference import GenerateResult, TokenChunk

KEEPALIVE_S = 2.0  # a comment this often while no token has come yet (proxies drop idle streams)
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
_encode = msgspec.json.Encoder().encode
_token_chunk = msgspec.msgpack.Decoder(TokenChunk).decode
_result = msgspec.msgpack.Decoder(GenerateResult).decode

StartCall = Callable[[Callable[[bytes], Awaitable[None]]], Coroutine[Any, Any, bytes]]


def event(data: Any) -> bytes:
    return b"data: " + _encode(data) + b"\n\n"


class StreamFormat:
    """How one kind of stream (chat or legacy completion) shapes its events."""

    def __init__(self, chat: bool, ident: str, model: str, created: int, usage: bool) -> None:
        self.chat, self.ident, self.model, self.created = chat, ident, model, created
        self.include_usage = usage
        self.node = ""  # the node that served the stream (the last one, if it was resumed)
        self.receipt: dict[str, Any] | None = None  # that node's, for the final chunk

    def served(self, node: str) -> None:
        self.node = node

    def signed(self, receipt: bytes) -> None:
        self.receipt = stream_field(receipt)

    def chunk(
        self,
        choice: dict[str, Any] | None,
        usage: dict[str, int] | None = None,
        final: bool = False,
    ) -> bytes:
        """One event; the final one also names the serving node under ``"llmnode"`` and carries
        its receipt under ``"llmnode_receipt"`` (:mod:`llmnode.http.receipts`)."""
        body: dict[str, Any] = {
            "id": self.ident,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [] if choice is None else [choice],
        }
        if self.include_usage:
            body["usage"] = usage
        if final:
            body["llmnode"] = {"node": self.node}  # clients ignore fields they do not know
            if self.receipt is not None:
                body[RECEIPT_FIELD] = self.receipt
        return event(body)

    def text(self, text: str, finish: str | None = None, final: bool = False) -> bytes:
        if self.chat:
            delta = {} if finish is not None and not text else {"content": text}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return self.chunk(choice, final=final)

    def opening(self) -> bytes:
        if not self.chat:
            return b""
        delta = {"role": "assistant", "content": ""}
        return self.chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})


async def stream_completion(
    request: web.Request,
    start: StartCall,
    shape: StreamFormat,
    headers: dict[str, str],
    finish: Callable[[str], str],
    usage: Callable[[GenerateResult], dict[str, int]],
) -> web.StreamResponse:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def on_chunk(data: bytes) -> None:
        queue.put_nowait(data)

    call = asyncio.create_task(start(on_chunk))
    call.add_done_callback(lambda _: queue.put_nowait(None))
    response = web.StreamResponse(
        headers={
            **headers,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                if not response.prepared:
                    await _open(request, response, shape)
                await response.write(KEEPALIVE)
                continue
            if item is None:
                break
            piece = _token_chunk(item)
            if not response.prepared:
                await _open(request, response, shape)
            if piece.text:
                await response.write(shape.text(piece.text))
        try:
            result = _result(call.result())
        except MeshError as error:
            failure = from_mesh_error(error)
            if not response.prepared:
                raise failure from None
            await response.write(event(failure.body()))
            await response.write(DONE)
            return response
        if not response.prepared:
            await _open(request, response, shape)
        shape.signed(result.receipt)
        last = not shape.include_usage
        await response.write(shape.text("", finish(result.finish_reason), final=last))
        if shape.include_usage:
            await response.write(shape.chunk(None, usage(result), final=True))
        await response.write(DONE)
        await response.write_eof()
        return response
    finally:
        if not call.done():
            call.cancel()  # the client went away: the mesh cancels the request, freeing its slot
        with contextlib.suppress(asyncio.CancelledError, MeshError, HttpError):
            await call


async def _open(request: web.Request, response: web.StreamResponse, shape: StreamFormat) -> None:
    await response.prepare(request)
    opening = shape.opening()
    if opening:
        await response.write(opening)
