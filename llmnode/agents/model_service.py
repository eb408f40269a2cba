"""ModelService: a model from the store served as a node service (I/O through its ONNX runtime).

This is what ``llmnode start --model NAME`` hosts. It implements
:class:`llmnode.nodes.requests.service.Service` for ``model:NAME``:

- ``generate`` / ``chat``: payload msgpack :class:`GenerateRequest`; for streamed calls each chunk
  is msgpack :class:`TokenChunk`; the final result is msgpack :class:`GenerateResult`;
- ``embed``: payload msgpack :class:`EmbedRequest`; the result is msgpack :class:`EmbedResult`
  (the vectors as float32 bytes).

Given a :class:`~llmnode.nodes.requests.receipts.ReceiptSigner`, every result carries this
node's signed receipt (:mod:`llmnode.schemas.receipts`): the model ran here, so it is signed here.

The call's deadline bounds the run, and cancelling the task that runs ``call`` cancels the
sequence in the runtime at once (its batch slot is freed).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from llmnode.agents.models.results import collect_result
from llmnode.agents.models.store import ModelStore
from llmnode.agents.models.transfer import manifest_digest
from llmnode.errors import DeadlineExceeded, MeshError, ModelError, ProtocolError
from llmnode.nodes.requests.measures import ModelRequest, RequestMeasures
from llmnode.nodes.requests.receipts import ReceiptSigner
from llmnode.nodes.requests.service import Emit, ServiceCall
from llmnode.schemas.inference import (
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    GenerateResult,
    TokenChunk,
)
from llmnode.schemas.receipts import request_sha256, text_sha256, vectors_sha256
from llmnode.schemas.state import ServiceInfo, ServiceLoad

_ENCODER = msgspec.msgpack.Encoder()
_GENERATE_REQUEST = msgspec.msgpack.Decoder(GenerateRequest)
_EMBED_REQUEST = msgspec.msgpack.Decoder(EmbedRequest)

GENERATION_TASK = "text-generation"
EMBEDDING_TASK = "feature-extraction"


@dataclass
class _Stopwatch:
    """A request's times on this node, for its receipt (monotonic seconds)."""

    started: float = field(default_factory=time.monotonic)
    first: float = 0.0

    def output(self) -> None:
        if not self.first:
            self.first = time.monotonic()

    def ms(self, at: float) -> float:
        return round(max(0.0, at - self.started) * 1000, 3)


def _decode(decoder: msgspec.msgpack.Decoder[Any], payload: bytes, what: str) -> Any:
    try:
        return decoder.decode(payload)
    except msgspec.MsgspecError as error:
        raise ProtocolError(f"malformed {what}: {error}") from error


class ModelService:
    """Serves one model of the store (generation or embeddings, per its manifest's task)."""

    def __init__(
        self,
        store: ModelStore,
        name: str,
        *,
        slots: int | None = None,
        queue_limit: int | None = None,
        prefer_gpu: bool = True,
        threads: int | None = None,
        runtime: Any = None,
        signer: ReceiptSigner | None = None,
    ) -> None:
        """``slots``: sequences batched together (default: the runtime's); ``queue_limit``:
        waiting requests beyond which the runtime answers Busy; ``signer``: signs a receipt for
        every result (none without one)."""
        manifest = store.get(name)
        self.name = name
        self.signer = signer
        try:
            manifest_bytes = (store.path(name) / "manifest.json").read_bytes()
            self.manifest_sha256 = manifest_digest(manifest_bytes)
        except OSError:
            self.manifest_sha256 = ""
        self.task = manifest.task
        sizing: dict[str, Any] = {"prefer_gpu": prefer_gpu, "threads": threads}
        if slots:
            sizing["max_batch_size"] = slots
        if queue_limit:
            sizing["queue_limit"] = queue_limit
        if runtime is not None:
            self.runtime = runtime
        elif self.task == GENERATION_TASK:
            from llmnode.agents.models import GenerationRuntime  # noqa: PLC0415 - heavy

            self.runtime = GenerationRuntime(store, name, **sizing)
        elif self.task == EMBEDDING_TASK:
            from llmnode.agents.models import EmbeddingRuntime  # noqa: PLC0415 - heavy

            self.runtime = EmbeddingRuntime(store, name, **sizing)
        else:
            raise ModelError(f"model {name!r} has task {self.task!r}, which llmnode cannot serve")
        self._measures: RequestMeasures | None = None

    def measure_with(self, measures: RequestMeasures) -> None:
        """Time every request from now on in the node's histograms (``Measured``)."""
        self._measures = measures

    @classmethod
    async def open(cls, store: ModelStore, name: str, **options: Any) -> ModelService:
        """Load the model off the event loop (session creation takes seconds)."""
        return await asyncio.to_thread(cls, store, name, **options)

    def info(self) -> ServiceInfo:
        load = self.runtime.load()
        return ServiceInfo(
            name=f"model:{self.name}",
            kind="model",
            task=self.task,
            load=load if isinstance(load, ServiceLoad) else ServiceLoad(),
        )

    async def call(self, call: ServiceCall, emit: Emit) -> bytes:
        remaining = call.deadline - time.time()
        if remaining <= 0:
            raise DeadlineExceeded(f"the request for model:{self.name} arrived after its deadline")
        timing = self._measures.model_request(self.name) if self._measures else None
        clock = _Stopwatch()
        try:
            async with asyncio.timeout(remaining):
                return await self._dispatch(call, emit, timing, clock)
        except TimeoutError:
            if timing is not None:
                timing.finish("deadline")
            raise DeadlineExceeded(
                f"model:{self.name} did not finish {call.method} before the deadline"
            ) from None
        except MeshError as error:
            if timing is not None:
                timing.finish(error.code)
            raise

    async def _dispatch(
        self, call: ServiceCall, emit: Emit, timing: ModelRequest | None, clock: _Stopwatch
    ) -> bytes:
        if call.method in ("generate", "chat"):
            if self.task != GENERATION_TASK:
                raise ModelError(f"model {self.name!r} is an embedding model; use embed")
            request: GenerateRequest = _decode(_GENERATE_REQUEST, call.payload, "GenerateRequest")
            if call.method == "chat" and not request.messages:
                raise ModelError("chat needs messages")
            result = await self._generate(request, call, emit, timing, clock)
            if timing is not None:
                timing.finish(result.finish_reason, result.prompt_tokens, result.completion_tokens)
            return _ENCODER.encode(result)
        if call.method == "embed":
            if self.task != EMBEDDING_TASK:
                raise ModelError(f"model {self.name!r} is a generation model; use generate/chat")
            embed_request: EmbedRequest = _decode(_EMBED_REQUEST, call.payload, "EmbedRequest")
            embedded = await self._embed(embed_request)
            if self.signer is not None:
                embedded = self._sign_embedding(self.signer, embed_request, embedded, clock)
            if timing is not None:
                timing.finish("embedded")
            return _ENCODER.encode(embedded)
        raise ModelError(f"model:{self.name} has no method {call.method!r}")

    async def _generate(
        self,
        request: GenerateRequest,
        call: ServiceCall,
        emit: Emit,
        timing: ModelRequest | None,
        clock: _Stopwatch,
    ) -> GenerateResult:
        stream = call.stream
        if not stream and timing is None and self.signer is None:
            result: GenerateResult = await self.runtime.generate(request)
            return result

        async def forward(chunk: TokenChunk) -> None:
            clock.output()
            if timing is not None:
                timing.token(len(chunk.token_ids))
            if stream:
                await emit(_ENCODER.encode(chunk))

        # The runtime tokenises the prompt once, off the event loop; the stream reports its size.
        tokens = self.runtime.stream(request)
        result = await collect_result(tokens, on_chunk=forward)
        if self.signer is None:
            return result
        resumed = len(request.resume_token_ids)
        receipt = self.signer.sign(
            model=self.name,
            manifest_sha256=self.manifest_sha256,
            method=call.method,
            request_sha256=request_sha256(request),
            # the whole stream's text: a resumed one's starts with what other nodes delivered
            output_sha256=text_sha256(getattr(tokens, "resumed_text", "") + result.text),
            prompt_tokens=result.prompt_tokens,
            completion_tokens=resumed + result.completion_tokens,
            resumed_tokens=resumed,
            queued_ms=round(float(getattr(tokens, "queued_ms", 0.0)), 3),
            ttft_ms=clock.ms(clock.first or time.monotonic()),
            total_ms=clock.ms(time.monotonic()),
        )
        return msgspec.structs.replace(result, receipt=receipt)

    def _sign_embedding(
        self, signer: ReceiptSigner, request: EmbedRequest, result: EmbedResult, clock: _Stopwatch
    ) -> EmbedResult:
        import numpy as np  # noqa: PLC0415 (only where a model is served: not at start-up)

        data = result.data or np.asarray(result.vectors, dtype="<f4").tobytes()
        elapsed = clock.ms(time.monotonic())
        receipt = signer.sign(
            model=self.name,
            manifest_sha256=self.manifest_sha256,
            method="embed",
            request_sha256=request_sha256(request),
            output_sha256=vectors_sha256(data),
            prompt_tokens=sum(len(ids) for ids in request.token_ids),
            ttft_ms=elapsed,
            total_ms=elapsed,
        )
        return msgspec.structs.replace(result, receipt=receipt)

    async def _embed(self, request: EmbedRequest) -> EmbedResult:
        texts = request.texts
        if request.token_ids:
            detokenize = getattr(self.runtime, "detokenize", None)
            if detokenize is None:
                raise ModelError(f"model {self.name!r} does not take token ids")
            texts = detokenize(request.token_ids)
        if not texts:
            return EmbedResult(dim=0, model=self.name)
        output = await self.runtime.embed(texts)
        if isinstance(output, EmbedResult):
            return output
        import numpy as np  # noqa: PLC0415 (only where a model is served: not at start-up)

        matrix = np.ascontiguousarray(output, dtype="<f4")
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise ModelError(f"model {self.name!r} returned embeddings of shape {matrix.shape}")
        return EmbedResult(data=matrix.tobytes(), dim=int(matrix.shape[1]), model=self.name)

    async def close(self) -> None:
        close = self.runtime.close
        if inspect.iscoroutinefunction(close):
            await close()
        else:
            await asyncio.to_thread(close)  # joins the runtime's worker thread
