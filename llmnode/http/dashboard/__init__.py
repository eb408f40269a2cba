"""The live dashboard every node serves at ``/`` (I/O: an aiohttp face and a ticking feed).

``/`` is one self-contained page (HTML, CSS and script inline: no CDN, no build step; the mesh
runs offline). It holds no data: everything comes from ``/dashboard/stream``, Server-Sent Events
of :func:`llmnode.nodes.mesh.overview.snapshot` once a second, read with the same API key as the
rest of the API (the page sends it as a bearer token, so it uses ``fetch`` rather than
``EventSource``). ``/dashboard/snapshot`` is the same message once, made fresh, for ``llmnode top``.
The events (joins, state changes, re-routes, rejection bursts) are found by one feed per server
comparing successive snapshots, so every viewer sees the same feed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from llmnode.nodes.mesh import overview

if TYPE_CHECKING:
    from llmnode.nodes.node import Node

INTERVAL_S = 1.0
EVENTS_KEPT = 200
EVENTS_SENT = 50


class Feed:
    """The latest snapshot and the events seen so far, refreshed every :data:`INTERVAL_S`."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.latest: dict[str, Any] | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._changed = asyncio.Event()

    def update(self) -> None:
        current = overview.snapshot(self._node)
        self.events.extend(overview.events(self.latest, current))
        self.latest = current
        self._changed.set()
        self._changed = asyncio.Event()

    def message(self) -> bytes:
        if self.latest is None:
            self.update()
        return msgspec.json.encode(
            {**(self.latest or {}), "events": list(self.events)[-EVENTS_SENT:]}
        )

    async def next(self) -> None:
        await self._changed.wait()

    async def run(self) -> None:
        while True:
            self.update()
            await asyncio.sleep(INTERVAL_S)


def install(node: Node, app: web.Application) -> None:
    """Serve the page, the stream and the snapshot from ``app``, with its feed running."""
    feed = Feed(node)

    async def ticking(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run(), name="dashboard-feed")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=_page(), content_type="text/html", charset="utf-8")

    async def snapshot(request: web.Request) -> web.Response:
        feed.update()  # asked for once: the numbers of now, not of the last tick
        return web.Response(body=feed.message(), content_type="application/json")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        while True:
            await response.write(b"data: " + feed.message() + b"\n\n")
            await feed.next()

    app.cleanup_ctx.append(ticking)
    app.add_routes(
        [
            web.get("/", page),
            web.get("/dashboard/snapshot", snapshot),
            web.get("/dashboard/stream", stream),
        ]
    )


_PAGE: list[str] = []


def _page() -> str:
    if not _PAGE:
        _PAGE.append(resources.files(__package__).joinpath("page.html").read_text("utf-8"))
    return _PAGE[0]
