"""Text generation on an ONNX causal LM with a KV cache and continuous batching (does I/O).

One decode worker thread per runtime steps every active sequence together. A request that
arrives while others decode is prefilled on its own at the next step boundary and merged into
the batch: past key/values and the attention mask are left-padded to a common length, and each
sequence keeps its own position ids, so padding never changes what a sequence computes. Each
sequence has its own random generator, so a seeded sampled request gives the same tokens
whatever its batch mates. Chunks reach the caller's event loop with ``call_soon_threadsafe``.

Cancellation (the consumer stops iterating, closes the stream, or its task is cancelled) frees
the slot at once; the worker drops the row at its next step. Resumption: ``resume_token_ids``
(already delivered by another node) are prefilled after the prompt and count against
``max_tokens``, so a greedy resumed run continues the interrupted one exactly.
"""

# Heavy libraries (onnxruntime, transformers) are imported by llmnode.agents.models.loading
# inside the function that needs them, so `import llmnode` stays fast.

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmnode.agents.models.loading import load_model
from llmnode.agents.models.results import collect_result
from llmnode.agents.models.store import ModelStore
from llmnode.errors import Busy, ModelError
from llmnode.log import get_logger
from llmnode.schemas.inference import GenerateRequest, GenerateResult, TokenChunk
from llmnode.schemas.state import ServiceLoad

log = get_logger(__name__)

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_EWMA = 0.2


def choose_token(
    logits: np.ndarray, request: GenerateRequest, generator: np.random.Generator
) -> int:
    """Greedy (temperature 0) or sampled with temperature, top-k and top-p."""
    if request.temperature <= 0.0:
        return int(np.argmax(logits))
    scores = logits.astype(np.float64) / request.temperature
    if 0 < request.top_k < scores.shape[0]:
        cutoff = np.partition(scores, -request.top_k)[-request.top_k]
        scores = np.where(scores < cutoff, -np.inf, scores)
    probabilities = np.exp(scores - np.max(scores))
    probabilities /= probabilities.sum()
    if request.top_p < 1.0:
        order = np.argsort(-probabilities, kind="stable")
        cumulative = np.cumsum(probabilities[order])
        keep = order[: int(np.searchsorted(cumulative, request.top_p)) + 1]
        mask = np.zeros_like(probabilities)
        mask[keep] = probabilities[keep]
        probabilities = mask / mask.sum()
    return int(generator.choice(probabilities.shape[0], p=probabilities))


def _held_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could begin one of ``stops``."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


@dataclass(eq=False)
class _Sequence:
    request: GenerateRequest
    prompt_ids: list[int]
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue[TokenChunk | BaseException]
    generator: np.random.Generator
    text_ids: list[int] = field(default_factory=list)  # resumed + generated
    pending_ids: list[int] = field(default_factory=list)  # generated, not yet sent
    emitted_chars: int = 0
    position: int = 0
    next_token: int = 0
    cancelled: bool = False
    finished: bool = False
    started_at: float = 0.0

    def deliver(self, item: TokenChunk | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody listens any more
            self.cancelled = True


class TokenStream:
    """An async iterator of :class:`TokenChunk`; dropping or closing it cancels the request."""

    def __init__(self, runtime: GenerationRuntime, sequence: _Sequence) -> None:
        self._runtime = runtime
        self._sequence = sequence
        self._done = False

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> TokenChunk:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._sequence.outbox.get()
        except BaseException:
            self.cancel()
            raise
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason:
            self._done = True
        return item

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._runtime._cancel(self._sequence)

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> TokenStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.cancel()


class GenerationRuntime:
    """Serves one text-generation model from the store with continuous batching."""

    def __init__(
        self,
        store: ModelStore,
        name: str,
        *,
        max_batch_size: int = 8,
        queue_limit: int = 64,
        prefer_gpu: bool = True,
        threads: int | None = None,
    ) -> None:
        model = load_model(store, name, "text-generation", prefer_gpu=prefer_gpu, threads=threads)
        folder = model.folder
        self.name = name
        self.max_batch_size = max(1, max_batch_size)
        self.queue_limit = queue_limit
        self.session, self.provider, self.tokenizer = model.session, model.provider, model.tokenizer
        config = json.loads((folder / "config.json").read_text())
        self.max_positions = int(
            config.get("max_position_embeddings") or config.get("n_positions") or 2048
        )
        self.stop_token_ids = self._stop_tokens(folder)
        self._memory_mb = model.memory_mb
        inputs = {item.name: item for item in self.session.get_inputs()}
        self._past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self._present_names = [
            o.name for o in self.session.get_outputs() if o.name.startswith("present.")
        ]
        first_past = inputs[self._past_names[0]]
        self._past_heads, self._past_dim = int(first_past.shape[1]), int(first_past.shape[3])
        self._past_type = _NUMPY_TYPES.get(first_past.type, np.float32)
        self._has_positions = "position_ids" in inputs
        self._condition = threading.Condition()
        self._pending: deque[_Sequence] = deque()
        self._rows: list[_Sequence] = []
        self._past: list[np.ndarray] = []
        self._mask = np.zeros((0, 0), dtype=np.int64)
        self._closed = False
        self._ewma_service_ms = 0.0
        self._tokens_per_s = 0.0
        self._served = 0
        self._worker = threading.Thread(target=self._run, name=f"generate-{name}", daemon=True)
        self._worker.start()

    def _stop_tokens(self, folder: Path) -> set[int]:
        stops: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            stops.add(int(self.tokenizer.eos_token_id))
        generation_config = folder / "generation_config.json"
        if generation_config.is_file():
            eos = json.loads(generation_config.read_text()).get("eos_token_id")
            stops.update([eos] if isinstance(eos, int) else (eos or []))
        vocabulary = self.tokenizer.get_vocab()
        stops.update(vocabulary[token] for token in END_OF_TURN_TOKENS if token in vocabulary)
        return stops

    # -- the caller's side -----------------------------------------------------------------

    def encode_prompt(self, request: GenerateRequest) -> list[int]:
        """Prompt token ids: the chat template applied to ``messages``, else ``prompt``."""
        if request.messages:
            if not self.tokenizer.chat_template:
                raise ModelError(f"model {self.name!r} has no chat template")
            text = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in request.messages],
                add_generation_prompt=True,
                tokenize=False,
            )
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids = list(self.tokenizer(request.prompt)["input_ids"])
        if not ids:
            if self.tokenizer.bos_token_id is None:
                raise ModelError("empty prompt: give a prompt or chat messages")
            ids = [int(self.tokenizer.bos_token_id)]
        if len(ids) + len(request.resume_token_ids) >= self.max_positions:
            raise ModelError(
                f"prompt of {len(ids)} tokens is too long for {self.name!r} "
                f"(context {self.max_positions})"
            )
        return ids

    def stream(self, request: GenerateRequest) -> TokenStream:
        """Start generating; iterate the result for chunks (``async for chunk in ...``)."""
        if request.max_tokens < 0 or request.top_p <= 0.0 or request.top_k < 0:
            raise ModelError("max_tokens and top_k must be >= 0 and top_p > 0")
        prompt_ids = self.encode_prompt(request)
        sequence = _Sequence(
            request=request,
            prompt_ids=prompt_ids,
            loop=asyncio.get_running_loop(),
            outbox=asyncio.Queue(),
            generator=np.random.default_rng(request.seed),
        )
        with self._condition:
            if self._closed:
                raise ModelError(f"model {self.name!r} is closed")
            if len(self._pending) >= self.queue_limit:
                raise Busy(f"model {self.name!r} queue is full ({len(self._pending)} waiting)")
            self._pending.append(sequence)
            self._condition.notify()
        return TokenStream(self, sequence)

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        """Run a request to the end and return the whole text."""
        prompt_tokens = len(self.encode_prompt(request))
        return await collect_result(self.stream(request), prompt_tokens)

    def _cancel(self, sequence: _Sequence) -> None:
        with self._condition:
            if sequence.finished:
                return
            sequence.cancelled = True
            sequence.finished = True
            if sequence in self._pending:
                self._pending.remove(sequence)
            self._condition.notify()

    def load(self) -> ServiceLoad:
        with self._condition:
            active = sum(1 for row in self._rows if not row.finished)
            waiting = len(self._pending)
        return ServiceLoad(
            slots=self.max_batch_size,
            queue_limit=self.queue_limit,
            queue_depth=waiting,
            in_flight=active,
            ewma_service_ms=round(self._ewma_service_ms, 3),
            tokens_per_s=round(self._tokens_per_s, 3),
            served=self._served,
            memory_mb=self._memory_mb,
        )

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._worker.join(timeout=30)

    # -- the worker thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                self._rows_drop_finished()
                while not self._closed and not self._pending and not self._rows:
                    self._condition.wait()
                if self._closed:
                    break
                free = self.max_batch_size - len(self._rows)
                admitted = [self._pending.popleft() for _ in range(min(free, len(self._pending)))]
            try:
                for sequence in admitted:
                    self._prefill(sequence)
                with self._condition:
                    self._rows_drop_finished()
                if self._rows:
                    self._step()
            except Exception as error:  # an ORT failure must fail the requests, not the thread
                log.error("generation_failed", model=self.name, error=str(error)[:300])
                failure = ModelError(f"generation on {self.name!r} failed: {str(error)[:200]}")
                with self._condition:
                    for sequence in [*admitted, *self._rows]:
                        if not sequence.finished:
                            sequence.finished = True
                            sequence.deliver(failure)
                    self._rows, self._past = [], []
                    self._mask = np.zeros((0, 0), dtype=np.int64)
        closed = ModelError(f"model {self.name!r} was closed")
        with self._condition:
            for sequence in [*self._pending, *self._rows]:
                if not sequence.finished:
                    sequence.finished = True
                    sequence.deliver(closed)
            self._pending.clear()
            self._rows = []

    def _empty_past(self, batch: int) -> np.ndarray:
        return np.zeros((batch, self._past_heads, 0, self._past_dim), dtype=self._past_type)

    def _forward(
        self, input_ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        feed: dict[str, np.ndarray] = {"input_ids": input_ids, "attention_mask": mask}
        if self._has_positions:
            feed["position_ids"] = positions
        feed.update(zip(self._past_names, past, strict=True))
        outputs = self.session.run(None, feed)
        return outputs[0][:, -1, :], list(outputs[1:])

    def _prefill(self, sequence: _Sequence) -> None:
        if sequence.cancelled:
            return
        sequence.started_at = time.monotonic()
        resumed = list(sequence.request.resume_token_ids)
        sequence.text_ids = list(resumed)
        sequence.emitted_chars = len(self._decode(resumed))
        if len(resumed) >= sequence.request.max_tokens:
            self._finish(sequence, "length")
            return
        ids = sequence.prompt_ids + resumed
        count = len(ids)
        logits, present = self._forward(
            np.asarray([ids], dtype=np.int64),
            np.ones((1, count), dtype=np.int64),
            np.arange(count, dtype=np.int64)[None, :],
            [self._empty_past(1) for _ in self._past_names],
        )
        sequence.position = count
        if not self._accept(sequence, logits[0]):
            return
        self._merge(sequence, present)

    def _merge(self, sequence: _Sequence, present: list[np.ndarray]) -> None:
        """Add a prefilled sequence to the batch, left-padding whichever side is shorter."""
        new_length = present[0].shape[2]
        if not self._rows:
            self._rows, self._past = [sequence], present
            self._mask = np.ones((1, new_length), dtype=np.int64)
            return
        batch_length = self._mask.shape[1]
        target = max(batch_length, new_length)

        def pad(array: np.ndarray, by: int) -> np.ndarray:
            if by == 0:
                return array
            widths = [(0, 0)] * array.ndim
            widths[2 if array.ndim == 4 else 1] = (by, 0)
            return np.pad(array, widths)

        self._past = [
            np.concatenate([pad(old, target - batch_length), pad(new, target - new_length)])
            for old, new in zip(self._past, present, strict=True)
        ]
        new_mask = np.ones((1, new_length), dtype=np.int64)
        self._mask = np.concatenate(
            [pad(self._mask, target - batch_length), pad(new_mask, target - new_length)]
        )
        self._rows.append(sequence)

    def _rows_drop_finished(self) -> None:
        """Remove finished or cancelled rows and trim padding no remaining row needs."""
        keep = [index for index, row in enumerate(self._rows) if not row.finished]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[index] for index in keep]
        if not keep:
            self._past, self._mask = [], np.zeros((0, 0), dtype=np.int64)
            return
        self._past = [array[keep] for array in self._past]
        self._mask = self._mask[keep]
        start = int(np.min(np.argmax(self._mask, axis=1)))
        if start:
            self._past = [array[:, :, start:, :] for array in self._past]
            self._mask = self._mask[:, start:]

    def _step(self) -> None:
        started = time.perf_counter()
        batch = len(self._rows)
        mask = np.concatenate([self._mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        logits, present = self._forward(
            np.asarray([[row.next_token] for row in self._rows], dtype=np.int64),
            mask,
            np.asarray([[row.position] for row in self._rows], dtype=np.int64),
            self._past,
        )
        self._past, self._mask = present, mask
        for index, row in enumerate(self._rows):
            row.position += 1
            if not row.finished:
                self._accept(row, logits[index])
        elapsed = time.perf_counter() - started
        rate = batch / elapsed if elapsed > 0 else 0.0
        self._tokens_per_s = (
            rate if self._tokens_per_s == 0 else ((1 - _EWMA) * self._tokens_per_s + _EWMA * rate)
        )

    # -- tokens to text ----------------------------------------------------------------------

    def _decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text

    def _accept(self, sequence: _Sequence, logits: np.ndarray) -> bool:
        """Pick the next token, stream what is complete; False when the sequence finished."""
        token = choose_token(logits, sequence.request, sequence.generator)
        if token in self.stop_token_ids and not sequence.request.ignore_eos:
            self._finish(sequence, "eos")
            return False
        sequence.text_ids.append(token)
        sequence.pending_ids.append(token)
        sequence.next_token = token
        text = self._decode(sequence.text_ids)[sequence.emitted_chars :]
        stops = sequence.request.stop
        for stop in stops:
            at = text.find(stop) if stop else -1
            if at >= 0:
                self._finish(sequence, "stop", text[:at])
                return False
        if len(sequence.text_ids) >= sequence.request.max_tokens or (
            sequence.position + 1 >= self.max_positions
        ):
            self._finish(sequence, "length")
            return False
        if text.endswith("\ufffd") or _held_suffix(text, stops):
            return True  # an incomplete character, or maybe the start of a stop string
        if text:
            sequence.deliver(TokenChunk(text=text, token_ids=sequence.pending_ids))
            sequence.emitted_chars += len(text)
            sequence.pending_ids = []
        return True

    def _finish(self, sequence: _Sequence, reason: str, text: str | None = None) -> None:
        if text is None:
            text = self._decode(sequence.text_ids)[sequence.emitted_chars :]
        last = TokenChunk(text=text, token_ids=sequence.pending_ids, finish_reason=reason)
        sequence.pending_ids = []
        # Count the row finished (load, served) before its consumer can see the last chunk.
        with self._condition:
            sequence.finished = True
        self._served += 1
        elapsed_ms = (time.monotonic() - sequence.started_at) * 1000
        self._ewma_service_ms = (
            elapsed_ms
            if self._ewma_service_ms == 0
            else ((1 - _EWMA) * self._ewma_service_ms + _EWMA * elapsed_ms)
        )
        sequence.deliver(last)
