"""Sentence embeddings on an ONNX encoder with dynamic batching (does I/O).

Concurrent callers' texts are queued; one worker thread takes up to ``max_batch_size`` texts,
waiting at most ``max_queue_delay_ms`` after the first for more to arrive (default 0: an idle
worker starts at once, and requests that arrive while a batch runs form the next batch, so
batches grow with load and a lone request pays no delay), runs them through ONNX Runtime in one
batch, mean-pools the hidden states under the attention mask and
L2-normalises them. Results reach each caller's event loop with ``call_soon_threadsafe``.
"""

# Heavy libraries (onnxruntime, transformers) are imported by llmnode.agents.models.loading
# inside the function that needs them, so `import llmnode` stays fast.

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from llmnode.agents.models.loading import load_model
from llmnode.agents.models.store import ModelStore
from llmnode.errors import Busy, ModelError
from llmnode.log import get_logger
from llmnode.schemas.state import ServiceLoad

log = get_logger(__name__)

_EWMA = 0.2
MAX_SEQUENCE_TOKENS = 256


@dataclass(eq=False)
class _Job:
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    enqueued_at: float = 0.0


def mean_pool_normalise(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``hidden`` [batch, tokens, dim] over tokens where ``mask`` is 1, L2-normalised."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    result: np.ndarray = (pooled / norms).astype(np.float32)
    return result


class EmbeddingRuntime:
    """Serves one feature-extraction model from the store with dynamic batching."""

    def __init__(
        self,
        store: ModelStore,
        name: str,
        *,
        max_batch_size: int = 32,
        max_queue_delay_ms: float = 0,
        queue_limit: int = 1024,
        prefer_gpu: bool = True,
        threads: int | None = None,
    ) -> None:
        model = load_model(
            store, name, "feature-extraction", prefer_gpu=prefer_gpu, threads=threads
        )
        self.name = name
        self.max_batch_size = max(1, max_batch_size)
        self.max_queue_delay = max_queue_delay_ms / 1000
        self.queue_limit = queue_limit
        self.session, self.provider, self.tokenizer = model.session, model.provider, model.tokenizer
        self._input_names = {item.name for item in self.session.get_inputs()}
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self._memory_mb = model.memory_mb
        self._condition = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._in_flight = 0
        self._closed = False
        self._ewma_service_ms = 0.0
        self._served = 0
        self._worker = threading.Thread(target=self._run, name=f"embed-{name}", daemon=True)
        self._worker.start()

    async def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per text, float32 [len(texts), dim]."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        size = self.max_batch_size
        jobs = [
            _Job(texts=list(texts[start : start + size]), loop=loop, future=loop.create_future())
            for start in range(0, len(texts), size)
        ]
        with self._condition:
            if self._closed:
                raise ModelError(f"model {self.name!r} is closed")
            if len(self._queue) + len(jobs) > self.queue_limit:
                raise Busy(f"model {self.name!r} queue is full ({len(self._queue)} waiting)")
            now = time.monotonic()
            for job in jobs:
                job.enqueued_at = now
                self._queue.append(job)
            self._condition.notify()
        parts = [await job.future for job in jobs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def detokenize(self, token_ids: list[list[int]]) -> list[str]:
        """Token-id arrays of this model's tokenizer back to texts (embedded as any text is)."""
        size = self.tokenizer.backend.get_vocab_size(with_added_tokens=True)
        for ids in token_ids:
            if any(not 0 <= token < size for token in ids):
                raise ModelError(f"token ids of {self.name!r} are in [0, {size})")
        return [self.tokenizer.decode(ids) for ids in token_ids]

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """One batch, run in the calling thread (no queueing); for baselines and scripts."""
        return self._run_batch(texts)

    def forget_warm_up(self) -> None:
        """Count nothing of the warm-up call: the first and slowest, it would stand as this
        replica's service time, and the scheduler would not choose the replica to correct it."""
        with self._condition:
            self._ewma_service_ms = 0.0
            self._served = 0

    def load(self) -> ServiceLoad:
        with self._condition:
            waiting = len(self._queue)
        return ServiceLoad(
            slots=self.max_batch_size,
            queue_limit=self.queue_limit,
            queue_depth=waiting,
            in_flight=self._in_flight,
            ewma_service_ms=round(self._ewma_service_ms, 3),
            served=self._served,
            memory_mb=self._memory_mb,
        )

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._worker.join(timeout=30)

    # -- the worker thread -----------------------------------------------------------------

    def _run_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(texts, MAX_SEQUENCE_TOKENS)
        feed = {
            key: np.asarray(value, dtype=np.int64)
            for key, value in encoded.items()
            if key in self._input_names
        }
        if "token_type_ids" in self._input_names and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        hidden = self.session.run(None, feed)[0]
        return mean_pool_normalise(hidden, feed["attention_mask"])

    def _take_batch(self) -> list[_Job] | None:
        """Whole jobs holding at most max_batch_size texts (at least one job); None when closed."""
        with self._condition:
            while not self._closed and not self._queue:
                self._condition.wait()
            if self._closed:
                return None
            deadline = self._queue[0].enqueued_at + self.max_queue_delay
            while (
                sum(len(job.texts) for job in self._queue) < self.max_batch_size
                and (remaining := deadline - time.monotonic()) > 0
                and not self._closed
            ):
                self._condition.wait(remaining)
            taken = [self._queue.popleft()]
            room = self.max_batch_size - len(taken[0].texts)
            while self._queue and len(self._queue[0].texts) <= room:
                room -= len(self._queue[0].texts)
                taken.append(self._queue.popleft())
            self._in_flight = len(taken)
            return taken

    def _run(self) -> None:
        while (taken := self._take_batch()) is not None:
            texts = [text for job in taken for text in job.texts]
            started = time.monotonic()
            try:
                vectors = self._run_batch(texts)
            except Exception as error:  # ORT raises many types; fail these callers, keep serving
                failure = ModelError(f"embedding on {self.name!r} failed: {str(error)[:200]}")
                for job in taken:
                    _deliver(job, failure)
                continue
            offset = 0
            for job in taken:
                _deliver(job, vectors[offset : offset + len(job.texts)])
                offset += len(job.texts)
            elapsed_ms = (time.monotonic() - started) * 1000
            self._served += len(taken)
            self._in_flight = 0
            self._ewma_service_ms = (
                elapsed_ms
                if self._ewma_service_ms == 0
                else ((1 - _EWMA) * self._ewma_service_ms + _EWMA * elapsed_ms)
            )


def _deliver(job: _Job, outcome: np.ndarray | BaseException) -> None:
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, outcome)
    except RuntimeError:  # the caller's loop is gone
        return


def _settle(future: asyncio.Future[np.ndarray], outcome: np.ndarray | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
