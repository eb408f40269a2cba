"""The HTTP face over an in-process mesh (real nodes on the memory transport, real aiohttp servers
on loopback, the real `openai` client): mesh-wide API keys, 401 and 429 in OpenAI's shape, agents
over HTTP, and responses that name the node that served them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from llmnode.errors import HandlerError
from llmnode.http import api_keys
from llmnode.http.runtime import http_loops
from llmnode.nodes.node import Node
from llmnode.nodes.requests.service import Service
from llmnode.schemas.state import ServiceInfo, ServiceLoad
from tests.integration.http.conftest import free_port
from tests.support.inprocess import CountingModel, EchoService, InProcessMesh

MODEL = "counter"  # CountingModel's tokens are "0 1 2 ..."
KEY_SPREAD_S = 5.0  # must-show 5: a key works on every node within this


@dataclass
class FullModel(CountingModel):
    """A generation model with one slot and no queue: a second request finds it full."""

    token_delay: float = 0.5

    def info(self) -> ServiceInfo:
        load = ServiceLoad(slots=1, queue_limit=0, ewma_service_ms=50.0)
        return ServiceInfo(name=self.name, kind="model", task="text-generation", load=load)


@dataclass
class HttpMesh:
    mesh: InProcessMesh
    nodes: list[Node]
    ports: list[int]
    clients: list[openai.AsyncOpenAI]

    def url(self, index: int, path: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def client(self, index: int, key: str = "unused") -> openai.AsyncOpenAI:
        made = openai.AsyncOpenAI(base_url=self.url(index), api_key=key, max_retries=0, timeout=30)
        self.clients.append(made)  # closed with the mesh
        return made


@contextlib.asynccontextmanager
async def http_mesh(
    root: Path, services: Sequence[Sequence[Service]], converge: str | None = None
) -> AsyncIterator[HttpMesh]:
    """One node per entry of ``services``, each with its HTTP loops (API-key watcher and
    server) run as the composition root runs them."""
    mesh = InProcessMesh(root)
    loops: list[asyncio.Task[None]] = []
    try:
        nodes, ports = [], []
        for served in services:
            node = await mesh.start(served)
            port = free_port()
            loops += [asyncio.create_task(loop()) for loop in http_loops(node, f"127.0.0.1:{port}")]
            nodes.append(node)
            ports.append(port)
        await mesh.converge(converge)
        result = HttpMesh(mesh, nodes, ports, [])
        async with aiohttp.ClientSession() as session:
            for index in range(len(nodes)):
                await _poll(lambda i=index: _ok(session, result.url(i, "/health")), 5.0)  # type: ignore[misc]
        yield result
        for client in result.clients:
            await client.close()
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await mesh.close()


async def _ok(session: aiohttp.ClientSession, url: str, key: str = "") -> bool:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.get(url, headers=headers) as response:
        return response.status == 200


async def _poll(check: Any, timeout: float) -> float:
    """Seconds until ``check()`` is true; fails the test after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(aiohttp.ClientError):
            if await check():
                return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s")


def _error(error: openai.APIStatusError) -> dict[str, Any]:
    body = error.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


# -- API keys ----------------------------------------------------------------------------------


async def test_a_key_made_on_one_node_works_on_another_within_seconds_and_revoked_on_neither(
    tmp_path: Path,
) -> None:
    async with http_mesh(tmp_path, [[], []]) as http:
        origin = Path(http.nodes[0].config.data_dir)
        kept = api_keys.create(origin, "kept")
        gone = api_keys.create(origin, "gone")
        async with aiohttp.ClientSession() as session:
            models = http.url(1, "/v1/models")
            # Until node 1 knows of a key it is open (loopback): wait until it wants one.
            await _poll(lambda: _refused(session, models, "sk-llmnode-wrong"), KEY_SPREAD_S)
            assert await _ok(session, models, gone) and await _ok(session, models, kept)
            api_keys.revoke(origin, "gone")
            for index in (0, 1):
                url = http.url(index, "/v1/models")
                await _poll(lambda url=url: _refused(session, url, gone), KEY_SPREAD_S)  # type: ignore[misc]
                assert await _ok(session, url, kept)


async def _refused(session: aiohttp.ClientSession, url: str, key: str) -> bool:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.get(url, headers=headers) as response:
        return response.status == 401


async def test_a_missing_or_wrong_key_is_a_401_in_openais_shape(tmp_path: Path) -> None:
    async with http_mesh(tmp_path, [[CountingModel()]], converge="model:counter") as http:
        key = api_keys.create(Path(http.nodes[0].config.data_dir), "ci")
        # Until the node knows of a key it is open (loopback): wait until a wrong key is refused.
        wrong = http.client(0, "sk-llmnode-wrong")
        await _poll(lambda: _refused_by_client(wrong), KEY_SPREAD_S)
        assert await _listed(http.client(0, key))
        with pytest.raises(openai.AuthenticationError) as caught:
            await http.client(0, "sk-llmnode-wrong").models.list()
        assert _error(caught.value) == {
            "message": "invalid API key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(http.url(0, "/v1/chat/completions"), json={}) as response,
        ):
            assert response.status == 401
            assert response.content_type == "application/json"
            body = await response.json()
        assert body["error"]["code"] == "missing_api_key"
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] is None
        reply = await http.client(0, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.choices[0].message.content == "0 1 "


async def _refused_by_client(client: openai.AsyncOpenAI) -> bool:
    return not await _listed(client)


async def _listed(client: openai.AsyncOpenAI) -> bool:
    try:
        return bool((await client.models.list()).data)
    except openai.AuthenticationError:
        return False


# -- 429 ---------------------------------------------------------------------------------------


async def test_every_serving_node_full_is_a_429_with_retry_after(tmp_path: Path) -> None:
    async with http_mesh(tmp_path, [[], [FullModel()]], converge="model:counter") as http:
        api = http.client(0)
        question = [{"role": "user", "content": "hi"}]
        occupying = asyncio.create_task(
            api.chat.completions.create(model=MODEL, messages=question, max_tokens=20)  # type: ignore[arg-type]
        )
        await _poll(lambda: _running(http.nodes[1]), 5.0)
        with pytest.raises(openai.RateLimitError) as caught:
            await api.chat.completions.create(
                model=MODEL,
                messages=question,  # type: ignore[arg-type]
                max_tokens=2,
                extra_headers={"X-Llmnode-Timeout": "1"},
            )
        assert caught.value.response.headers["Retry-After"] == "1"
        error = _error(caught.value)
        assert (error["type"], error["param"], error["code"]) == (
            "rate_limit_error",
            None,
            "no_capacity",
        )
        occupying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await occupying


async def _running(node: Node) -> bool:
    return node.server.active.get("model:counter", 0) >= 1


# -- agents over HTTP ------------------------------------------------------------------------


async def test_an_agent_answers_over_http_and_its_failure_is_a_500_in_openais_shape(
    tmp_path: Path,
) -> None:
    # A MeshError: a plain exception is logged with a traceback, slow enough on a loaded machine
    # for the router to take the pause for a stall and retry it.
    broken = EchoService(name="broken", fail_with=HandlerError("boom"))
    services: list[list[Service]] = [[], [EchoService(), broken]]
    async with (
        http_mesh(tmp_path, services, converge="broken") as http,
        aiohttp.ClientSession() as session,
    ):
        message = {"type": "greet", "name": "Ada", "tags": [1, 2]}
        async with session.post(http.url(0, "/llmnode/v1/agents/echo"), json=message) as reply:
            assert reply.status == 200
            assert await reply.json() == {"reply": message}  # the echo agent sends it back
        async with session.post(http.url(0, "/llmnode/v1/agents/broken"), json={}) as reply:
            assert reply.status == 500
            error = (await reply.json())["error"]
        assert error == {
            "message": "boom",
            "type": "server_error",
            "param": None,
            "code": "handler",
        }
        unknown = http.url(0, "/llmnode/v1/agents/echo@nowhere")
        async with session.post(unknown, json={}) as reply:
            assert reply.status == 404
            assert "nowhere" in (await reply.json())["error"]["message"]
        async with session.post(http.url(0, "/llmnode/v1/agents/echo"), data=b"{oops") as reply:
            assert reply.status == 400
            assert (await reply.json())["error"]["code"] == "invalid_json"


# -- the serving node ------------------------------------------------------------------------


async def test_a_response_names_the_node_that_served_it(tmp_path: Path) -> None:
    async with http_mesh(tmp_path, [[], [CountingModel()]], converge="model:counter") as http:
        raw = await http.client(0).chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert raw.headers["X-Llmnode-Node"] == "n1"
        assert raw.headers["X-Llmnode-Entry"] == "n0"
        assert raw.parse().choices[0].message.content == "0 1 2 "


async def test_a_resumed_stream_names_the_node_that_finished_it(tmp_path: Path) -> None:
    models = [CountingModel(token_delay=0.05), CountingModel(token_delay=0.05)]
    async with http_mesh(tmp_path, [[], [models[0]], [models[1]]], "model:counter") as http:
        stream = await http.client(0).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=20, stream=True
        )
        pieces, crashed = [], ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if len(pieces) == 3 and not crashed:
                serving = 1 if models[0].served else 2
                crashed = http.nodes[serving].name
                await http.mesh.crash(http.nodes[serving])
            last = chunk
        assert "".join(pieces) == "".join(f"{i} " for i in range(20))
        assert crashed
        finisher = (last.model_extra or {})["llmnode"]["node"]
        assert finisher in ("n1", "n2") and finisher != crashed
