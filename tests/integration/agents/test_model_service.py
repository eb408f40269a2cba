"""ModelService on a tiny random model: streaming, deadlines and cancellation reach the runtime."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from llmnode.agents.model_service import ModelService
from llmnode.agents.models import ModelStore, export_tiny
from llmnode.bus.identity import Identity
from llmnode.errors import DeadlineExceeded, ModelError
from llmnode.nodes.requests.receipts import ReceiptSigner, verify_receipt
from llmnode.nodes.requests.service import ServiceCall
from llmnode.schemas.inference import GenerateRequest, GenerateResult, TokenChunk
from llmnode.schemas.receipts import request_sha256, text_sha256

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(Path(tmp_path_factory.mktemp("store")))
    export_tiny(store, "tiny-gpt2")
    return store


@pytest.fixture
async def service(tiny_store: ModelStore) -> AsyncIterator[ModelService]:
    opened = await ModelService.open(tiny_store, "tiny-gpt2", slots=2)
    yield opened
    await opened.close()


def _call(method: str, request: GenerateRequest, *, stream: bool, within: float) -> ServiceCall:
    return ServiceCall(
        request_id=b"r" * 16,
        service="model:tiny-gpt2",
        method=method,
        payload=msgspec.msgpack.encode(request),
        deadline=time.time() + within,
        caller_node="test",
        stream=stream,
    )


async def test_streamed_generate_emits_token_chunks_then_the_whole_result(
    service: ModelService,
) -> None:
    chunks: list[TokenChunk] = []

    async def emit(data: bytes) -> None:
        chunks.append(msgspec.msgpack.decode(data, type=TokenChunk))

    request = GenerateRequest(prompt="hello", max_tokens=8, seed=1)
    final = await service.call(_call("generate", request, stream=True, within=30), emit)
    result = msgspec.msgpack.decode(final, type=GenerateResult)
    assert result.text == "".join(chunk.text for chunk in chunks)
    assert result.completion_tokens == 8
    assert service.info().name == "model:tiny-gpt2"
    assert service.info().task == "text-generation"


async def test_a_passed_deadline_raises_deadline_exceeded(service: ModelService) -> None:
    async def emit(data: bytes) -> None:
        return None

    request = GenerateRequest(prompt="hello", max_tokens=8)
    with pytest.raises(DeadlineExceeded):
        await service.call(_call("generate", request, stream=True, within=-1), emit)


async def test_cancelling_the_call_frees_the_runtime_slot(service: ModelService) -> None:
    started = asyncio.Event()

    async def emit(data: bytes) -> None:
        started.set()

    request = GenerateRequest(prompt="hello", max_tokens=500)
    task = asyncio.create_task(
        service.call(_call("generate", request, stream=True, within=60), emit)
    )
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        load = service.info().load
        if load.in_flight == 0 and load.queue_depth == 0:
            break
        await asyncio.sleep(0.05)
    assert service.info().load.in_flight == 0


async def test_embed_on_a_generation_model_is_a_model_error(service: ModelService) -> None:
    async def emit(data: bytes) -> None:
        return None

    call = ServiceCall(
        request_id=b"r" * 16, service="model:tiny-gpt2", method="embed",
        payload=b"\x81\xa5texts\x91\xa1a", deadline=time.time() + 5, caller_node="test",
    )  # fmt: skip
    with pytest.raises(ModelError, match="generation model"):
        await service.call(call, emit)


async def test_results_carry_a_receipt_that_covers_the_whole_of_a_resumed_stream(
    tiny_store: ModelStore,
) -> None:
    signer = ReceiptSigner(Identity.generate(), "n1")
    signing = await ModelService.open(tiny_store, "tiny-gpt2", slots=2, signer=signer)

    async def ignore(data: bytes) -> None:
        pass

    try:
        request = GenerateRequest(prompt="hello", max_tokens=8)  # greedy: resumable exactly
        whole = msgspec.msgpack.decode(
            await signing.call(_call("generate", request, stream=True, within=30), ignore),
            type=GenerateResult,
        )
        receipt = verify_receipt(whole.receipt)
        assert (receipt.node_name, receipt.model, receipt.method) == ("n1", "tiny-gpt2", "generate")
        assert receipt.output_sha256 == text_sha256(whole.text)
        assert receipt.request_sha256 == request_sha256(request)
        assert (receipt.completion_tokens, receipt.resumed_tokens) == (8, 0)
        assert len(receipt.manifest_sha256) == 64
        assert receipt.total_ms >= receipt.ttft_ms > 0

        # Another node died after 3 tokens; this one resumes and signs for the whole stream.
        resumed = msgspec.structs.replace(request, resume_token_ids=whole.token_ids[:3])
        rest = msgspec.msgpack.decode(
            await signing.call(_call("generate", resumed, stream=False, within=30), ignore),
            type=GenerateResult,
        )
        second = verify_receipt(rest.receipt)
        assert second.output_sha256 == receipt.output_sha256  # the whole text, resumed part too
        assert second.request_sha256 == receipt.request_sha256  # the request the client sent
        assert (second.completion_tokens, second.resumed_tokens) == (8, 3)
    finally:
        await signing.close()


async def test_the_warm_up_call_leaves_no_service_time_behind(tiny_store: ModelStore) -> None:
    """The warm-up is a model's first and slowest call. Counted, it became the node's service
    time, so the scheduler never chose a fresh replica while another one kept up, and the time
    was never corrected (placement_restore.py: a restored replica idle for 235 s and more)."""
    from llmnode.agents.model_host import warm

    opened = await ModelService.open(tiny_store, "tiny-gpt2", slots=2)
    try:
        await warm(opened)
        load = opened.runtime.load()
        assert load.ewma_service_ms == 0.0  # unknown: the scheduler uses the mesh's mean
        assert load.served == 0
        await opened.runtime.generate(GenerateRequest(prompt="Hello", max_tokens=2))
        after = opened.runtime.load()
        assert after.ewma_service_ms > 0.0 and after.served == 1  # real requests still count
    finally:
        await opened.close()
