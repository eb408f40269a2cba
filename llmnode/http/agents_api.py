"""Agents over HTTP, so any language can call them: request, publish, peers, status (I/O: aiohttp).

``POST /llmnode/v1/agents/{name}`` sends a JSON body to an agent (``name`` or ``name@node``) and
answers with its reply; the body's ``"type"`` picks the handler, as for a dict sent from the SDK.
``POST /llmnode/v1/topics/{topic}`` publishes; ``GET /llmnode/v1/peers`` and ``/status`` report.
Agent messages travel in the same envelope the SDK uses: msgpack ``{"type": tag, "body": ...}``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from llmnode.http.errors import HttpError
from llmnode.http.gateway import MeshGateway

AGENT_TIMEOUT_S = 30.0
_msgpack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode
_json = msgspec.json.Encoder().encode


def envelope(message: Any) -> bytes:
    """The agent envelope of a JSON value (a dict's ``"type"`` is its tag, as in the SDK)."""
    tag = "none" if message is None else type(message).__name__
    if isinstance(message, dict):
        given = message.get("type")
        tag = given if isinstance(given, str) and given else "dict"
    return _msgpack({"type": tag, "body": message})


class AgentsApi:
    def __init__(self, gateway: MeshGateway) -> None:
        self._gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/llmnode/v1/agents/{name}", self.request_agent),
            web.post("/llmnode/v1/topics/{topic}", self.publish),
            web.get("/llmnode/v1/peers", self.peers),
            web.get("/llmnode/v1/status", self.status),
        ]

    async def request_agent(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name.startswith("model:"):
            raise HttpError(400, "models are served under /v1", param="name")
        message = _body(await request.read())
        raw = await self._gateway.call(
            name, "request", envelope(message), timeout=AGENT_TIMEOUT_S, caller="http"
        )
        reply: Any = None
        if raw:
            try:
                data = _unpack(raw)
            except msgspec.DecodeError:
                raise HttpError(502, f"agent {name!r} sent a malformed reply") from None
            reply = data.get("body") if isinstance(data, dict) else data
        return web.Response(body=_json({"reply": reply}), content_type="application/json")

    async def publish(self, request: web.Request) -> web.Response:
        message = _body(await request.read())
        nodes = self._gateway.publish(request.match_info["topic"], envelope(message), "http")
        return web.json_response({"nodes": nodes})

    async def peers(self, request: web.Request) -> web.Response:
        return web.Response(body=_json(self._gateway.peers()), content_type="application/json")

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(body=_json(self._gateway.status()), content_type="application/json")


def _body(data: bytes) -> Any:
    if not data:
        return None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as error:
        raise HttpError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None
