"""Load is not gossiped: records change with capabilities only, and a caller asks a few sampled
candidates for their load when what it knows is stale (real nodes on the memory transport)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmnode.nodes.mesh.records import capability_key, memory_class, needs_signing
from llmnode.nodes.requests.loads import stale_sample
from llmnode.nodes.requests.scheduler import Candidate
from llmnode.schemas.state import GpuInfo, NodeState, Resources, ServiceInfo, ServiceLoad
from tests.support.inprocess import EchoService, in_process_mesh

pytestmark = pytest.mark.timeout(60)

loads = st.builds(
    ServiceLoad,
    slots=st.integers(1, 8),
    queue_limit=st.integers(1, 64),
    queue_depth=st.integers(0, 100),
    in_flight=st.integers(0, 8),
    ewma_service_ms=st.floats(0, 1e4),
    tokens_per_s=st.floats(0, 1e3),
    served=st.integers(0, 10**6),
)


def state(services: list[ServiceInfo], ram_free: int, gpu_free: int, served: int) -> NodeState:
    gpu = GpuInfo(index=0, name="g", memory_total_mb=80_000, memory_free_mb=gpu_free)
    resources = Resources(cpu_cores=8, ram_total_mb=64_000, ram_free_mb=ram_free, gpus=[gpu])
    return NodeState(
        node_id="n",
        name="n",
        endpoints=["tcp://h:1"],
        version="1",
        started_at=1.0,
        resources=resources,
        services=services,
        requests_served=served,
    )


@settings(max_examples=100, deadline=None)
@given(
    first=loads,
    second=loads,
    frees=st.tuples(st.integers(0, 64_000), st.integers(0, 64_000)),
    served=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
)
def test_load_and_free_memory_never_change_the_gossiped_capabilities(
    first: ServiceLoad,
    second: ServiceLoad,
    frees: tuple[int, int],
    served: tuple[int, int],
) -> None:
    """Only what changes slowly makes a new record: the same services with any load, free
    memory, count served or service time (once measured) have one key; another slot count, a
    first measured service time or another service, another."""
    second = msgspec.structs.replace(
        second,
        slots=first.slots,
        queue_limit=first.queue_limit,
        ewma_service_ms=second.ewma_service_ms if first.ewma_service_ms > 0.0 else 0.0,
    )
    if first.ewma_service_ms > 0.0 and second.ewma_service_ms <= 0.0:
        second = msgspec.structs.replace(second, ewma_service_ms=first.ewma_service_ms)
    one = state([ServiceInfo(name="m", kind="model", load=first)], frees[0], frees[1], served[0])
    two = state([ServiceInfo(name="m", kind="model", load=second)], frees[1], frees[0], served[1])
    assert capability_key(one) == capability_key(two)
    resized = msgspec.structs.replace(first, slots=first.slots + 1)
    more = state([ServiceInfo(name="m", kind="model", load=resized)], frees[0], 1, 0)
    assert capability_key(more) != capability_key(one)
    if first.ewma_service_ms > 0.0:  # the first measurement is news; later ones travel
        slower = msgspec.structs.replace(first, ewma_service_ms=first.ewma_service_ms * 2)
        later = state([ServiceInfo(name="m", kind="model", load=slower)], frees[0], 1, 0)
        assert capability_key(later) == capability_key(one)  # with the load, on replies
        unmeasured = msgspec.structs.replace(first, ewma_service_ms=0.0)
        before = state([ServiceInfo(name="m", kind="model", load=unmeasured)], frees[0], 1, 0)
        assert capability_key(before) != capability_key(one)
    added = [*one.services, ServiceInfo(name="agent", kind="agent")]
    assert capability_key(msgspec.structs.replace(one, services=added)) != capability_key(one)


@settings(max_examples=200, deadline=None)
@given(memory=st.integers(100, 10**6), drift=st.floats(-0.04, 0.04))
def test_memory_for_models_changes_the_record_only_by_a_tenth(memory: int, drift: float) -> None:
    """It follows free RAM, which moves all the time: a drift of a few percent stays in its band
    or the next one (never a storm of records); a change of a quarter is always news."""
    base = state([], 1, 1, 0)
    one = msgspec.structs.replace(base, model_memory_mb=memory)
    drifted = msgspec.structs.replace(base, model_memory_mb=int(memory * (1 + drift)))
    if memory_class(memory) == memory_class(drifted.model_memory_mb):  # same band: no record
        assert capability_key(drifted) == capability_key(one)
    nearby = {memory_class(int(memory * (1 + d / 100))) for d in range(-4, 5)}
    assert len(nearby) <= 2  # a band is a tenth wide: ±4 % crosses at most one edge
    quarter = msgspec.structs.replace(base, model_memory_mb=int(memory * 1.25))
    assert capability_key(quarter) != capability_key(one)


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.tuples(st.floats(0, 10), st.booleans()), max_size=20),
    probes=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_only_stale_remote_candidates_are_sampled_and_at_most_probes(
    ages: list[tuple[float, bool]], probes: int, seed: int
) -> None:
    now, stale_s = 100.0, 2.0
    candidates = [
        Candidate(
            node=bytes([i]) * 32,
            service="s",
            state="alive",
            slots=1,
            queue_limit=8,
            gossip_queue_depth=0,
            gossip_in_flight=0,
            ewma_service_ms=5.0,
            rtt_ms=1.0,
            gossip_time=now - age,
            is_local=local,
        )
        for i, (age, local) in enumerate(ages)
    ]
    sample = stale_sample(candidates, now, stale_s, probes, random.Random(seed))
    stale = [c for c in candidates if not c.is_local and now - c.gossip_time > stale_s]
    assert len(sample) == min(probes, len(stale))
    assert len({c.node for c in sample}) == len(sample)
    assert all(c in stale for c in sample)


async def test_a_stale_candidate_is_asked_for_its_load_and_serving_does_not_resign_the_record(
    tmp_path: Path,
) -> None:
    async with in_process_mesh(tmp_path) as mesh:
        caller = await mesh.start()
        server = await mesh.start([EchoService(delay=0.05)])
        await mesh.converge("echo")
        version = caller.view.record_version(server.node_id)
        assert caller.router.loads is not None
        await asyncio.sleep(0.3)  # older than 2 probe intervals: stale
        await caller.router.call("echo", "request", b"x", timeout=10)
        assert caller.router.loads.sent == 1
        assert caller.router.loads.answered == 1
        for _ in range(20):  # served and measured load changed; the record did not
            await caller.router.call("echo", "request", b"x", timeout=10)
        await asyncio.sleep(0.3)  # several state-loop rounds (state_refresh_s = 0.1)
        assert caller.view.record_version(server.node_id) == version
        assert server.server.counters["served"] == 21
        assert caller.router.loads.sent <= 3  # fresh from replies between calls: not asked


@settings(max_examples=200, deadline=None)
@given(memory=st.integers(100, 10**6), wobble=st.floats(-0.045, 0.045))
def test_memory_wobbling_across_a_band_edge_is_not_signed_again(memory: int, wobble: float) -> None:
    """Free RAM on a busy machine wobbles by a few percent: crossing a band's edge back and
    forth signs nothing; a move of a band's width (a tenth) from what was signed does."""
    signed = msgspec.structs.replace(state([], 1, 1, 0), model_memory_mb=memory)
    published = (signed, time.time())
    wobbled = msgspec.structs.replace(signed, model_memory_mb=int(memory * (1 + wobble)))
    assert not needs_signing(wobbled, published, 600.0)
    moved = msgspec.structs.replace(signed, model_memory_mb=int(memory * 1.1) + 1)
    assert needs_signing(moved, published, 600.0)
    other = msgspec.structs.replace(wobbled, services=[ServiceInfo(name="m", kind="model")])
    assert needs_signing(other, published, 600.0)  # anything else changed: signed, as before
