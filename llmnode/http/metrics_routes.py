"""The HTTP face's observability routes: ``GET /metrics``, the mesh's Prometheus service
discovery, and the count of HTTP requests refused (no I/O of its own: aiohttp serves them).

``/metrics`` is the node's one registry in the Prometheus text format; ``/metrics/targets`` lists
every live node's metrics address in the ``http_sd_configs`` JSON format, so one Prometheus scrapes
the whole mesh. Both sit behind the API's auth (a key off loopback); Prometheus sends it with
``authorization: {credentials: KEY}``. Refusals (4xx) are counted as the node's ``http``
rejections, by error code, so ``/metrics`` and ``llmnode status`` show them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from llmnode.metrics import CONTENT_TYPE
from llmnode.nodes.mesh.overview import scrape_targets

if TYPE_CHECKING:
    from llmnode.nodes.node import Node

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def advertised(bound: str, bus_address: str) -> str:
    """The HTTP address other machines reach: ``bound`` with a wildcard host replaced by the
    host of this node's advertised bus address (``tcp://HOST:PORT``)."""
    host, _, port = bound.rpartition(":")
    if host.strip("[]") not in _WILDCARD_HOSTS:
        return bound
    bus_host = bus_address.removeprefix("tcp://").rpartition(":")[0]
    return f"{bus_host}:{port}"


def install(node: Node, app: web.Application) -> None:
    """Add the routes and the refusal counter to ``app``."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=node.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def targets(request: web.Request) -> web.Response:
        return web.json_response(scrape_targets(node))

    @web.middleware
    async def count_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if 400 <= response.status < 500 and isinstance(response, web.Response):
            node.rejections["http", _code(response)] += 1
        return response

    app.middlewares.insert(0, count_refusals)  # outermost: it sees what auth refused too
    app.add_routes([web.get("/metrics", metrics), web.get("/metrics/targets", targets)])


def _code(response: web.Response) -> str:
    """The OpenAI-shaped error's code (``invalid_api_key``), or ``http_STATUS``."""
    try:
        body = json.loads(response.body) if isinstance(response.body, bytes) else {}
        code = body["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return code if isinstance(code, str) and code else f"http_{response.status}"
