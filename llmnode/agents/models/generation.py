"""Text generation on an ONNX causal LM with a KV cache and continuous batching (does I/O).

One decode worker thread per runtime steps every active sequence together. A request that
arrives while others decode is tokenised (once, on the worker, never on the event loop) and
prefilled on its own at the next step boundary, then joins the batch; how the cache holds rows
of different lengths is the business of :mod:`llmnode.agents.models.decoding` (one shared,
preallocated buffer for fused GroupQueryAttention graphs; left padding for optimum's exports).
Each sequence has its own random generator, so a seeded sampled request gives the same tokens
whatever its batch mates. Text is produced incrementally per token (never by decoding the whole
output again). Chunks reach the caller's event loop with ``call_soon_threadsafe``.

Cancellation (the consumer stops iterating, closes the stream, or its task is cancelled) frees
the slot at once; the worker drops the row at its next step. Resumption: ``resume_token_ids``
(already delivered by another node) count against ``max_tokens``, and the runtime computes what
the interrupted node computed: it prefills the prompt alone, then feeds the delivered tokens
back one decode step at a time, in the batch like any row, sampling nothing (a sampled row's
generator draws as it drew there). Prefilling them with the prompt in one pass would be faster,
but 8-bit ``MatMulNBits`` kernels give a multi-row pass other numbers than one-row decode steps,
and the greedy text drifted within 16 tokens; decode steps give the same numbers whatever the
batch (measured bit for bit, BENCHMARKS.md). A resumed row costs one step per delivered token.
"""

# Heavy libraries (onnxruntime, tokenizers) are imported by llmnode.agents.models.loading
# inside the function that needs them, so `import llmnode` stays fast.

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from llmnode.agents.models.constraints import Grammars
from llmnode.agents.models.decoding import KVBatch, open_batch
from llmnode.agents.models.loading import load_model
from llmnode.agents.models.prefix_cache import PrefixCache
from llmnode.agents.models.results import collect_result
from llmnode.agents.models.sampling import choose_token, held_suffix
from llmnode.agents.models.sequences import DecodeSequence, TokenStream
from llmnode.agents.models.store import ModelStore
from llmnode.errors import Busy, ModelError
from llmnode.log import get_logger
from llmnode.schemas.inference import GenerateRequest, GenerateResult, TokenChunk, prefix_key
from llmnode.schemas.state import ServiceLoad
from llmnode.schemas.tools import prompt_turns

log = get_logger(__name__)

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
_EWMA = 0.2
DEFAULT_PREFIX_CACHE_MB = 128.0


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
        prefix_cache_mb: float = DEFAULT_PREFIX_CACHE_MB,
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
        self._shared_buffer = model.shared_buffer
        # Prompt prefixes seen recently (system prompts, few-shot examples, history): their KV
        # is reused, so a request sharing one prefills only the rest. 0 turns it off.
        self.prefix_cache = (
            PrefixCache(int(prefix_cache_mb * 1024 * 1024))
            if prefix_cache_mb > 0 and self._shared_buffer
            else None
        )
        self._batch: KVBatch = self._open_batch()
        width = self.session.get_outputs()[0].shape[-1]
        self.grammars = Grammars(
            self.tokenizer, width if isinstance(width, int) else 0, self.stop_token_ids
        )
        self._condition = threading.Condition()
        self._pending: deque[DecodeSequence] = deque()
        self._rows: list[DecodeSequence] = []
        self._closed = False
        self._ewma_service_ms = 0.0
        self._tokens_per_s = 0.0
        self._served = 0
        self._advertised: list[bytes] = []  # the prefix cache's keys after the last prefill
        self._worker = threading.Thread(target=self._run, name=f"generate-{name}", daemon=True)
        self._worker.start()

    def _open_batch(self) -> KVBatch:
        return open_batch(
            self.session,
            shared_buffer=self._shared_buffer,
            slots=self.max_batch_size,
            max_positions=self.max_positions,
            prefix=self.prefix_cache,
        )

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
        """Prompt token ids: the chat template applied to ``messages``, else ``prompt``.

        The runtime calls this once per request, on its worker thread."""
        if request.messages:
            if not self.tokenizer.chat_template:
                raise ModelError(f"model {self.name!r} has no chat template")
            messages, tools = prompt_turns(request, self.tokenizer.chat_template)
            text = self.tokenizer.apply_chat_template(messages, tools=tools)
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        else:
            ids = self.tokenizer.encode(request.prompt)
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
        """Start generating; iterate the result for chunks (``async for chunk in ...``).

        Cheap enough for the event loop: the prompt is tokenised on the worker thread, so a bad
        prompt (too long, no chat template) is raised by the stream's first iteration."""
        if request.max_tokens < 0 or request.top_p <= 0.0 or request.top_k < 0:
            raise ModelError("max_tokens and top_k must be >= 0 and top_p > 0")
        sequence = DecodeSequence(
            request=request,
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
        return TokenStream(self._cancel, sequence)

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        """Run a request to the end and return the whole text."""
        return await collect_result(self.stream(request))

    def _cancel(self, sequence: DecodeSequence) -> None:
        with self._condition:
            if sequence.finished:
                return
            sequence.cancelled = True
            sequence.finished = True
            if sequence in self._pending:
                self._pending.remove(sequence)
            self._condition.notify()

    def forget_warm_up(self) -> None:
        """Count nothing of the warm-up call: the first and slowest, it would stand as this
        replica's service time, and the scheduler would not choose the replica to correct it."""
        with self._condition:
            self._ewma_service_ms = 0.0
            self._tokens_per_s = 0.0
            self._served = 0

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
            prefixes=self._advertised,
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
                    self._rows, self._batch = [], self._open_batch()
        closed = ModelError(f"model {self.name!r} was closed")
        with self._condition:
            for sequence in [*self._pending, *self._rows]:
                if not sequence.finished:
                    sequence.finished = True
                    sequence.deliver(closed)
            self._pending.clear()
            self._rows = []

    def _prefill(self, sequence: DecodeSequence) -> None:
        if sequence.cancelled:
            return
        sequence.started_at = time.monotonic()
        try:
            prompt_ids = self.encode_prompt(sequence.request)
        except ModelError as error:
            self._fail(sequence, error)
            return
        sequence.prompt_tokens = len(prompt_ids)
        resumed = list(sequence.request.resume_token_ids)
        if sequence.request.constraint is not None:
            try:
                sequence.matcher = self.grammars.matcher(sequence.request.constraint)
                sequence.matcher.consume(resumed)
            except ModelError as error:
                self._fail(sequence, error)
                return
        sequence.text_ids = list(resumed)
        sequence.decoder = self.tokenizer.incremental_decoder()
        # Already delivered: only the decoder's context, and the text a receipt covers.
        sequence.resumed_text = "".join(sequence.decoder.step(token) for token in resumed)
        if len(resumed) >= sequence.request.max_tokens:
            self._finish(sequence, "length")
            return
        logits = self._batch.prefill(prompt_ids, prefix_key(sequence.request))
        if self.prefix_cache is not None:  # read by load() on the event loop: a fresh list
            self._advertised = self.prefix_cache.keys()
        self._rows.append(sequence)
        sequence.position = len(prompt_ids)
        sequence.replay.extend(resumed)
        self._accept(sequence, logits)

    def _rows_drop_finished(self) -> None:
        """Remove finished or cancelled rows from the batch."""
        keep = [index for index, row in enumerate(self._rows) if not row.finished]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[index] for index in keep]
        self._batch.keep(keep)

    def _step(self) -> None:
        started = time.perf_counter()
        batch = len(self._rows)
        logits = self._batch.step([row.next_token for row in self._rows])
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

    def _accept(self, sequence: DecodeSequence, logits: np.ndarray) -> bool:
        """Pick the next token, stream what is complete; False when the sequence finished."""
        if sequence.replay:  # a delivered token: fed back as it was chosen, not sent again
            if sequence.request.temperature > 0.0:  # draw as the interrupted node drew
                choose_token(logits, sequence.request, sequence.generator)
            sequence.next_token = sequence.replay.popleft()
            return True
        matcher = sequence.matcher
        try:
            if matcher is not None:  # constrained: only what the grammar allows (the only cost)
                logits = matcher.mask(logits)
            token = choose_token(logits, sequence.request, sequence.generator)
            if token in self.stop_token_ids and (not sequence.request.ignore_eos or matcher):
                self._finish(sequence, "eos")
                return False
            if matcher is not None:
                matcher.consume([token])
        except ModelError as error:  # this sequence's grammar failed: only it ends
            return self._fail(sequence, error)
        sequence.text_ids.append(token)
        sequence.pending_ids.append(token)
        sequence.next_token = token
        assert sequence.decoder is not None  # set by _prefill
        sequence.pending_text += sequence.decoder.step(token)
        text = sequence.pending_text
        stops = sequence.request.stop
        for stop in stops:
            at = text.find(stop) if stop else -1
            if at >= 0:
                self._finish(sequence, "stop", text[:at])
                return False
        if matcher is not None and matcher.stopped:  # the answer is complete
            self._finish(sequence, "stop")
            return False
        if len(sequence.text_ids) >= sequence.request.max_tokens or (
            sequence.position + 1 >= self.max_positions
        ):
            self._finish(sequence, "length")
            return False
        if not text or held_suffix(text, stops):
            return True  # an incomplete character, or maybe the start of a stop string
        sequence.deliver(TokenChunk(text=text, token_ids=sequence.pending_ids))
        sequence.pending_text, sequence.pending_ids = "", []
        return True

    def _fail(self, sequence: DecodeSequence, error: ModelError) -> bool:
        with self._condition:
            sequence.finished = True
        sequence.deliver(error)
        return False

    def _finish(self, sequence: DecodeSequence, reason: str, text: str | None = None) -> None:
        if text is None:
            text = sequence.pending_text
        last = TokenChunk(text=text, token_ids=sequence.pending_ids, finish_reason=reason)
        sequence.pending_text, sequence.pending_ids = "", []
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
