"""The OpenAI endpoints: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings (I/O).

Each handler decodes its body with msgspec (:mod:`llmnode.http.schemas`), translates it into an
llmnode payload (:mod:`llmnode.http.translate`), routes it through the node's gateway exactly as
the SDK's requests are routed, and answers in OpenAI's shape.
"""

from __future__ import annotations

import array
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
from aiohttp import web

from llmnode.http import translate
from llmnode.http.errors import HttpError
from llmnode.http.gateway import MeshGateway
from llmnode.http.receipts import RECEIPT_HEADER, header_value
from llmnode.http.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    decode_body,
)
from llmnode.http.streaming import StreamFormat, stream_completion
from llmnode.http.structured import ToolStreamFormat, with_tool_calls
from llmnode.schemas.inference import EmbedRequest, EmbedResult, GenerateRequest, GenerateResult

GENERATE_TIMEOUT_S = 300.0
EMBED_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 3600.0
TIMEOUT_HEADER = "X-Llmnode-Timeout"  # seconds: the request's deadline in the mesh
NODE_HEADER = "X-Llmnode-Node"  # the node that served the request
ENTRY_HEADER = "X-Llmnode-Entry"  # the node that took it in (this one)
GENERATION_TASK = "text-generation"
EMBEDDING_TASK = "feature-extraction"

_msgpack = msgspec.msgpack.Encoder().encode
_json = msgspec.json.Encoder().encode
_generate_result = msgspec.msgpack.Decoder(GenerateResult).decode
_embed_result = msgspec.msgpack.Decoder(EmbedResult).decode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OpenAIApi:
    def __init__(self, gateway: MeshGateway) -> None:
        self._gateway = gateway
        self._headers = {ENTRY_HEADER: gateway.node_name}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/models", self.list_models),
            web.get("/v1/models/{model:.+}", self.get_model),
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/completions", self.completions),
            web.post("/v1/embeddings", self.embeddings),
        ]

    # -- models --------------------------------------------------------------------------------

    async def list_models(self, request: web.Request) -> web.Response:
        created = translate.now()
        data = [
            translate.model_entry(model.name, created, model.nodes, model.task)
            for model in sorted(self._gateway.models(), key=lambda model: model.name)
        ]
        return self._json({"object": "list", "data": data})

    async def get_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        for model in self._gateway.models():
            if model.name == name:
                entry = translate.model_entry(model.name, translate.now(), model.nodes, model.task)
                return self._json(entry, self._gateway.node_name)
        raise _no_model(name)

    # -- generation ----------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = decode_body(await request.read(), ChatCompletionRequest)
        payload = translate.chat_payload(body)
        return await self._generate(request, body, payload, "chat", chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = decode_body(await request.read(), CompletionRequest)
        payload = translate.completion_payload(body)
        return await self._generate(request, body, payload, "generate", chat=False)

    async def _generate(
        self,
        request: web.Request,
        body: ChatCompletionRequest | CompletionRequest,
        payload: GenerateRequest,
        method: str,
        *,
        chat: bool,
    ) -> web.StreamResponse:
        self._require(body.model, GENERATION_TASK)
        service = "model:" + body.model
        timeout = _timeout(request, GENERATE_TIMEOUT_S)
        data = _msgpack(payload)
        ident = ("chatcmpl-" if chat else "cmpl-") + os.urandom(12).hex()
        created = translate.now()
        caller = body.user or "http"
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            offers_tools = isinstance(body, ChatCompletionRequest) and bool(body.tools)
            stream_format = ToolStreamFormat if offers_tools else StreamFormat
            shape = stream_format(chat, ident, body.model, created, include_usage)

            def start(on_chunk: Callable[[bytes], Awaitable[None]]) -> Coroutine[Any, Any, bytes]:
                return self._gateway.call(
                    service, method, data, timeout=timeout, stream=True, caller=caller,
                    on_chunk=on_chunk, on_served=shape.served,
                )  # fmt: skip

            return await stream_completion(
                request, start, shape, self._headers, translate.finish_reason, translate.usage
            )
        served: list[str] = []
        result = _generate_result(
            await self._gateway.call(
                service, method, data, timeout=timeout, caller=caller, on_served=served.append
            )
        )
        respond = translate.chat_response if chat else translate.completion_response
        answer = respond(ident, body.model, created, result)
        if isinstance(body, ChatCompletionRequest) and body.tools:
            answer = with_tool_calls(answer)
        return self._json(answer, "".join(served[-1:]), result.receipt)

    # -- embeddings ----------------------------------------------------------------------------

    async def embeddings(self, request: web.Request) -> web.Response:
        body = decode_body(await request.read(), EmbeddingRequest)
        texts, token_ids = translate.embedding_inputs(body)
        self._require(body.model, EMBEDDING_TASK)
        timeout = _timeout(request, EMBED_TIMEOUT_S)
        served: list[str] = []
        raw = await self._gateway.call(
            "model:" + body.model,
            "embed",
            _msgpack(EmbedRequest(texts=texts, token_ids=token_ids)),
            timeout=timeout,
            caller=body.user or "http",
            on_served=served.append,
        )
        result = _embed_result(raw)
        rows: list[bytes] | list[list[float]]
        if body.encoding_format == "base64":
            data = result.data or _float32(result.vectors)
            step = 4 * result.dim
            rows = [data[start : start + step] for start in range(0, len(data), step)]
        else:
            rows = result.rows()
        tokens = sum(len(ids) for ids in token_ids)
        return self._json(
            translate.embedding_response(body.model, rows, tokens, body.encoding_format),
            "".join(served[-1:]),
            result.receipt,
        )

    # -- helpers -------------------------------------------------------------------------------

    def _require(self, name: str, task: str) -> None:
        """404 at once for a model no node in the view advertises. One whose nodes are down
        for now goes to the router, which waits for one until the deadline, as for the SDK."""
        for model in self._gateway.models(live_only=False):
            if model.name == name:
                if model.task != task:
                    raise HttpError(
                        400, f"model {name!r} is a {model.task} model", param="model",
                        code="wrong_model_task",
                    )  # fmt: skip
                return
        raise _no_model(name)

    def _json(self, body: object, served_by: str = "", receipt: bytes = b"") -> web.Response:
        """A JSON answer naming this node and, when known, the node that served it and that
        node's signed receipt."""
        headers = {**self._headers, NODE_HEADER: served_by} if served_by else self._headers
        if receipt:
            headers = {**headers, RECEIPT_HEADER: header_value(receipt)}
        return web.Response(body=_json(body), content_type="application/json", headers=headers)


def _no_model(name: str) -> HttpError:
    return HttpError(
        404, f"The model '{name}' does not exist or no node serves it", param="model",
        code="model_not_found",
    )  # fmt: skip


def _timeout(request: web.Request, default: float) -> float:
    text = request.headers.get(TIMEOUT_HEADER)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= MAX_TIMEOUT_S:
        raise HttpError(400, f"{TIMEOUT_HEADER} must be seconds in (0, {MAX_TIMEOUT_S:.0f}]")
    return value


def _float32(vectors: list[list[float]]) -> bytes:
    values = array.array("f", [value for row in vectors for value in row])
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()
