"""Hedging: a slow node's requests are also sent to another node; the first answer wins."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from llmnode.client.connection import ControlClient
from llmnode.schemas.control import CtlRequest
from llmnode.schemas.inference import GenerateRequest, GenerateResult
from tests.support.mesh import LocalMesh, wait_for

pytestmark = pytest.mark.slow
MODEL = "model:tiny-gpt2"
SLOW_MS = 1500


def test_hedged_requests_finish_on_the_fast_node_when_the_chosen_one_is_slow(
    mesh: LocalMesh, tiny_store: Path
) -> None:
    serve = ["--model", "tiny-gpt2", "--model-store", str(tiny_store)]
    # The entry node serves the model itself (so the scheduler picks it first: no RTT) but
    # takes 1.5 s for every result; with --hedge the copy sent to `fast` answers first.
    entry = mesh.add("entry", [*serve, "--fault-slow-ms", str(SLOW_MS), "--hedge"])
    mesh.add("fast", serve)
    mesh.wait_converged()
    wait_for(
        lambda: sum(1 for r in entry.peers() if MODEL in r["load"]) == 2, timeout=30, what="models"
    )

    async def ask() -> list[float]:
        durations = []
        async with ControlClient.from_data_dir(entry.data_dir) as client:
            for i in range(6):
                started = time.monotonic()
                payload = msgspec.msgpack.encode(GenerateRequest(prompt=f"q{i}", max_tokens=4))
                request = CtlRequest(
                    id=client.next_id(), service=MODEL, method="generate", payload=payload,
                    timeout=20,
                )  # fmt: skip
                reply = await client.call(request)
                result = msgspec.msgpack.decode(reply.data, type=GenerateResult)
                assert result.completion_tokens >= 1 or result.finish_reason == "eos"
                durations.append(time.monotonic() - started)
        return durations

    durations = asyncio.run(ask())
    assert max(durations) < SLOW_MS / 1000 * 0.8, durations
    status = entry.status()
    assert status is not None
    requests = status["counters"]["requests"]
    assert requests["hedged"] >= 1
    assert requests["failed"] == 0
