"""The request path in one process: real nodes, routers and servers on the memory transport.

Each test names the behaviour it pins; together they run in seconds (issue 12: retry cap and
backoff, Busy re-route, resume after node loss, hedging, deadline → NoCapacity, cancel reaching
the server, one terminal answer whatever the service raises).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from llmnode.errors import HandlerError, MeshError, NoCapacity, ProtocolError
from llmnode.nodes.requests.retry import RetryPolicy
from llmnode.nodes.requests.service import Emit, ServiceCall
from llmnode.schemas.inference import GenerateRequest, GenerateResult
from tests.support.inprocess import CountingModel, EchoService, in_process_mesh

pytestmark = pytest.mark.timeout(60)


async def test_a_service_raising_on_the_entry_node_answers_a_typed_error_at_once(
    tmp_path: Path,
) -> None:
    """On the old code a request served here ran outside the server: a RuntimeError escaped
    ``Router.call`` and the SDK caller waited its whole timeout."""
    async with in_process_mesh(tmp_path) as mesh:
        echo = EchoService(fail_with=RuntimeError("boom"))
        node = await mesh.start([echo])
        await mesh.converge("echo")
        started = time.monotonic()
        with pytest.raises(HandlerError, match="boom") as caught:
            await node.router.call("echo", "request", b"x", timeout=30)
        assert time.monotonic() - started < 15, "answered long before the timeout"
        assert caught.value.remote_type == "RuntimeError"
        assert node.server.counters["failed"] == 1
        assert node.server.in_flight == 0


class GarbageStream:
    """A generation service whose stream chunk is not a TokenChunk."""

    name = "model:garbage"
    cancelled = 0

    def info(self) -> object:
        return CountingModel(name=self.name).info()

    async def call(self, call: ServiceCall, emit: Emit) -> bytes:
        try:
            await emit(b"\xc1 not msgpack")
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return b""

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("local", [True, False], ids=["served-here", "served-elsewhere"])
async def test_a_malformed_stream_chunk_fails_typed_and_stops_the_server(
    tmp_path: Path, local: bool
) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        garbage = GarbageStream()
        entry = await mesh.start([garbage] if local else [])
        if not local:
            await mesh.start([garbage])
        await mesh.converge("model:garbage")
        payload = msgspec.msgpack.encode(GenerateRequest(prompt="p", max_tokens=4))
        with pytest.raises(ProtocolError, match="malformed stream chunk"):
            await entry.router.call("model:garbage", "generate", payload, timeout=30, stream=True)
        for _ in range(100):
            if garbage.cancelled:
                break
            await asyncio.sleep(0.01)
        assert garbage.cancelled == 1, "the serving node was told to stop"


async def test_busy_node_refuses_and_the_request_is_rerouted(tmp_path: Path) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start()
        fast = EchoService(delay=0.5, slots=1, queue_limit=0)
        slow = EchoService(delay=0.0, slots=1, queue_limit=0)
        first = await mesh.start([fast])
        second = await mesh.start([msgspec_slow(slow)])
        await mesh.converge("echo")
        # `first` takes a request of its own; the entry node's view of it is still idle, so the
        # entry node picks it (lower estimate), is refused, and re-routes to `second`.
        own = asyncio.create_task(first.router.call("echo", "request", b"own", timeout=10))
        routed = asyncio.create_task(entry.router.call("echo", "request", b"x", timeout=10))
        assert await routed == b"x"
        assert await own == b"own"
        assert first.server.counters["busy"] == 1
        assert entry.router.counters["rerouted"] == 1
        assert slow.calls == 1
        assert second.server.counters["served"] == 1


def msgspec_slow(service: EchoService) -> EchoService:
    """The same echo, advertised with a long service time, so the scheduler prefers others."""
    original = service.info

    def info() -> object:
        advertised = original()
        load = msgspec.structs.replace(advertised.load, ewma_service_ms=500.0)
        return msgspec.structs.replace(advertised, load=load)

    service.info = info  # type: ignore[method-assign]
    return service


async def test_full_nodes_back_off_per_the_policy_then_no_capacity(tmp_path: Path) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start()
        echo = EchoService(delay=3.0, slots=1, queue_limit=0)
        await mesh.start([echo])
        await mesh.converge("echo")
        entry.router.policy = RetryPolicy(base_backoff_ms=50.0, max_attempts=4)
        occupying = asyncio.create_task(entry.router.call("echo", "request", b"a", timeout=10))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(NoCapacity):
            await entry.router.call("echo", "request", b"b", timeout=10)
        elapsed = time.monotonic() - started
        # Four tries: at once, then after 50 and 100 ms; the fourth is refused by the policy.
        assert elapsed >= 0.15
        assert elapsed < 5.0, "gave up on the policy's cap, not at the deadline"
        assert echo.calls == 1, "the full node was never sent a request it had to refuse"
        occupying.cancel()


async def test_every_node_full_until_the_deadline_is_no_capacity(tmp_path: Path) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start()
        await mesh.start([EchoService(delay=3.0, slots=1, queue_limit=0)])
        await mesh.converge("echo")
        entry.router.policy = RetryPolicy(max_attempts=1000)
        occupying = asyncio.create_task(entry.router.call("echo", "request", b"a", timeout=10))
        await asyncio.sleep(0.05)
        with pytest.raises(NoCapacity):
            await entry.router.call("echo", "request", b"b", timeout=0.5)
        occupying.cancel()


async def test_a_stream_resumes_on_another_node_when_its_node_is_lost(tmp_path: Path) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start()
        models = [CountingModel(token_delay=0.02), CountingModel(token_delay=0.02)]
        servers = [await mesh.start([models[0]]), await mesh.start([models[1]])]
        await mesh.converge("model:counter")
        received: list[bytes] = []
        crashed = asyncio.Event()

        async def on_chunk(data: bytes) -> None:
            received.append(data)
            if len(received) == 10 and not crashed.is_set():
                crashed.set()
                serving = 0 if models[0].served else 1
                asyncio.get_running_loop().create_task(mesh.crash(servers[serving]))

        payload = msgspec.msgpack.encode(GenerateRequest(prompt="count", max_tokens=30))
        data = await entry.router.call(
            "model:counter", "generate", payload, timeout=20, stream=True, on_chunk=on_chunk
        )
        result = msgspec.msgpack.decode(data, type=GenerateResult)
        assert result.token_ids == list(range(30))
        assert result.text == "".join(f"{i} " for i in range(30))
        assert entry.router.counters["resumed"] == 1
        both = models[0].served + models[1].served
        assert sorted(set(both)) == list(range(30))


async def test_a_slow_request_is_hedged_and_the_loser_is_cancelled(tmp_path: Path) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start(hedge=True)
        stuck = EchoService(delay=5.0)
        quick = msgspec_slow(EchoService(delay=0.0))
        await mesh.start([stuck])
        await mesh.start([quick])
        await mesh.converge("echo")
        started = time.monotonic()
        assert await entry.router.call("echo", "request", b"h", timeout=10) == b"h"
        assert time.monotonic() - started < 4.0, "the hedge answered, not the stuck node"
        assert entry.router.counters["hedged"] == 1
        for _ in range(100):
            if stuck.cancelled:
                break
            await asyncio.sleep(0.01)
        assert stuck.cancelled == 1


async def test_cancelling_the_caller_cancels_the_work_on_the_serving_node(tmp_path: Path) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start()
        echo = EchoService(delay=5.0)
        server = await mesh.start([echo])
        await mesh.converge("echo")
        call = asyncio.create_task(entry.router.call("echo", "request", b"c", timeout=10))
        for _ in range(500):
            if echo.running:
                break
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(100):
            if echo.cancelled:
                break
            await asyncio.sleep(0.01)
        assert echo.cancelled == 1
        assert server.server.in_flight == 0
        assert entry.router.counters["cancelled"] == 1


async def test_a_request_not_idempotent_whose_accept_is_late_is_not_run_twice(
    tmp_path: Path,
) -> None:
    """Chaos (a partition, a SIGSTOP) found it: a request that reached its node but whose Accept
    did not come back in time was sent to another node, and both ran it. It may have run, so it
    now fails typed instead; it runs at most once."""
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start()
        echoes = [EchoService(delay=0.2), EchoService(delay=0.2)]
        serving = [await mesh.start([echo]) for echo in echoes]
        await mesh.converge("echo")
        for node in serving:  # every frame to or from a serving node arrives 1.5 s late
            mesh.network.slow(node.bus.address, lambda _rng: 1.5)
        with pytest.raises(MeshError):
            await entry.router.call("echo", "request", b"once", timeout=8, idempotent=False)
        await asyncio.sleep(4.0)  # every copy sent has arrived by now
        assert sum(echo.calls for echo in echoes) <= 1
