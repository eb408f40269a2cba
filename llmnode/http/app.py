"""The HTTP server of a node: the aiohttp application, its limits, auth and error middleware (I/O).

:func:`serve` runs in the node's event loop (a task of its TaskGroup) until cancelled. Every error
leaves as OpenAI's ``{"error": {...}}`` shape with the status :mod:`llmnode.http.errors` chose.
Limits protect the node from bad clients: body size (413), header count and size (400), and
connections that send no complete request in time are closed (slow-loris, idle sockets).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from llmnode.errors import ConfigError, MeshError
from llmnode.http.agents_api import AgentsApi
from llmnode.http.errors import HttpError, from_mesh_error
from llmnode.http.gateway import MeshGateway
from llmnode.http.openai_api import OpenAIApi
from llmnode.log import get_logger

log = get_logger(__name__)

DEFAULT_HTTP_PORT = 7949  # 7946 is the bus, 7947 the LAN beacon; 7948 is memberlist's next
DEFAULT_HTTP = f"127.0.0.1:{DEFAULT_HTTP_PORT}"
MAX_BODY_BYTES = 8 * 1024 * 1024  # 413 beyond: a long chat history fits many times over
MAX_HEADERS = 100
MAX_HEADER_BYTES = 8190  # per header line, as aiohttp's default
IDLE_TIMEOUT_S = 15.0  # a connection with no complete request for this long is closed
KEY_PREFIX = "sk-llmnode-"
_OPEN_PATHS = frozenset({"/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` → (host, port); loopback when no host is given."""
    host, _, port = text.rpartition(":") if ":" in text else ("", "", text)
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--http wants HOST:PORT, not {text!r}") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"--http port {number} is out of range")
    return host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_hash(key: str) -> str:
    """What the mesh keeps and gossips of an API key: its sha256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def build_app(gateway: MeshGateway, *, loopback: bool) -> web.Application:
    """The application; off loopback every request needs a valid mesh API key."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path not in _OPEN_PATHS:
                _authenticate(request, gateway, loopback=loopback)
            return await handler(request)
        except HttpError as error:
            return _error_response(error)
        except MeshError as error:
            return _error_response(from_mesh_error(error))
        except web.HTTPException as error:
            if error.status < 400:
                raise
            status = error.status
            message = "the request body is too large" if status == 413 else error.reason
            return _error_response(HttpError(status, message, code=f"http_{status}"))

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES)
    app.add_routes(OpenAIApi(gateway).routes())
    app.add_routes(AgentsApi(gateway).routes())
    app.add_routes([web.get("/health", _health)])
    return app


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _authenticate(request: web.Request, gateway: MeshGateway, *, loopback: bool) -> None:
    hashes = gateway.api_key_hashes()
    if not hashes and loopback:
        return  # a loopback server of a mesh without keys is open to this machine only
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HttpError(
            401, "missing API key: send 'Authorization: Bearer KEY'", code="missing_api_key"
        )
    digest = key_hash(key.strip())
    if not any(hmac.compare_digest(digest, known) for known in hashes):
        raise HttpError(401, "invalid API key", code="invalid_api_key")


def _error_response(error: HttpError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return web.Response(
        status=error.status, body=error.json(), content_type="application/json", headers=headers
    )


async def serve(
    gateway: MeshGateway, address: str, *, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve HTTP on ``address`` until cancelled. Refuses (ConfigError) to bind off loopback
    while the mesh has no API key."""
    host, port = parse_address(address)
    loopback = is_loopback(host)
    if not loopback and not gateway.api_key_hashes():
        raise ConfigError(
            f"refusing to serve HTTP on {host} without an API key: run `llmnode api-keys create "
            "NAME` first, or bind to 127.0.0.1"
        )
    runner = web.AppRunner(
        build_app(gateway, loopback=loopback),
        access_log=None,
        handler_cancellation=True,  # a client that goes away cancels its request in the mesh
        keepalive_timeout=IDLE_TIMEOUT_S,
        max_headers=MAX_HEADERS,
        max_field_size=MAX_HEADER_BYTES,
        max_line_size=MAX_HEADER_BYTES,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError as error:
            raise ConfigError(f"cannot serve HTTP on {host}:{port}: {error.strerror}") from None
        bound = _bound_address(site, host, port)
        log.info("http_started", address=bound, keys_required=not loopback or None)
        if on_ready is not None:
            on_ready(bound)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _bound_address(site: web.TCPSite, host: str, port: int) -> str:
    server = site._server  # aiohttp keeps the bound socket here; port 0 needs it
    sockets = getattr(server, "sockets", None)
    if sockets:
        port = sockets[0].getsockname()[1]
    return f"{host}:{port}"


logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # its tracebacks are not ours
