"""The one metrics registry: every counter the node keeps is in it, and `status` reads it.

Real nodes on the memory transport; bad frames are sent by a stranger on the same network.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmnode.metrics import Metrics
from tests.support.inprocess import EchoService, in_process_mesh

pytestmark = pytest.mark.timeout(60)


def _samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and sorted labels -> value, parsed back with the client library's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


async def test_status_and_the_exposition_show_the_same_counts_from_one_registry(
    tmp_path: Path,
) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        entry = await mesh.start([])
        server = await mesh.start([EchoService()])
        await mesh.converge("echo")
        for _ in range(3):
            assert await entry.router.call("echo", "request", b"x", timeout=10) == b"x"
        stranger = mesh.network.endpoint("tcp://127.0.0.1:29999")
        await stranger.start()
        for garbage in (b"", b"\x00" * 40, b"not a sealed frame at all" * 4):
            stranger.send(mesh.address(0), garbage)
        for _ in range(200):  # let the frames arrive
            if sum(entry.bus.rejections.values()) >= 3:
                break
            await asyncio.sleep(0.01)

        status = entry.status()
        samples = _samples(entry.metrics.exposition())
        requests = status["counters"]["requests"]
        assert requests["entered"] == 3
        assert samples["llmnode_routed_requests_total", (("event", "requests"),)] == 3
        served = _samples(server.metrics.exposition())
        assert served["llmnode_served_requests_total", (("outcome", "served"),)] == 3
        assert server.status()["counters"]["requests"]["served"] == 3

        refused = status["counters"]["rejections_by_source"]["bus"]
        assert sum(refused.values()) >= 3, refused
        for reason, number in refused.items():
            key = ("llmnode_rejections_total", (("reason", reason), ("source", "bus")))
            assert samples[key] == number
        assert status["counters"]["rejections"] == {
            reason: number
            for reason, number in refused.items()  # nothing but the stranger's frames so far
        }
        assert samples["llmnode_members", (("state", "alive"),)] == 2
        assert status["counters"]["members"]["alive"] == 2
        assert samples["llmnode_process_resident_memory_bytes", ()] > 0


async def test_every_counter_a_component_keeps_is_in_the_registry(tmp_path: Path) -> None:
    """A new key counted by the router, the server, the bus or the control socket shows up
    in the exposition without anyone registering it."""
    async with in_process_mesh(tmp_path) as mesh:
        node = await mesh.start([EchoService()])
        node.router.counters["some_new_event"] += 2
        node.server.counters["some_new_outcome"] += 1
        node.control.rejections["some_new_reason"] += 4
        samples = _samples(node.metrics.exposition())
        assert samples["llmnode_routed_requests_total", (("event", "some_new_event"),)] == 2
        assert samples["llmnode_served_requests_total", (("outcome", "some_new_outcome"),)] == 1
        key = ("llmnode_rejections_total", (("reason", "some_new_reason"), ("source", "control")))
        assert samples[key] == 4
        for event, number in node.bus.stats.items():
            assert samples["llmnode_bus_frames_total", (("event", event),)] == number


def test_a_name_is_registered_once() -> None:
    metrics = Metrics(process=False)
    metrics.counter("things", "Things.", lambda: 1)
    with pytest.raises(ValueError, match="twice"):
        metrics.gauge("things", "Things again.", lambda: 2)
    assert metrics.read() == {"things": {(): 1.0}}
