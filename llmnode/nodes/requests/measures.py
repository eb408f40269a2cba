"""Per-request distributions of the request path: queue time, and each model's latencies and
token counts (no I/O).

The histograms live in the node's one registry (:class:`llmnode.metrics.Metrics`) and are observed
where the measurement happens: the request server times the wait for a slot; a model service
(hosted through :class:`Measured`) times its own tokens. Names follow vLLM's where they mean the
same (``time_to_first_token_seconds``, ``inter_token_latency_seconds``, ...), prefixed
``llmnode_``; models are labelled ``model`` (without ``model:``), other services ``service``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Protocol, runtime_checkable

from llmnode.metrics import Metrics

_LATENCY_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
              2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
_TOKEN_GAP_S = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
                0.3, 0.4, 0.5, 0.75, 1.0, 2.5)  # fmt: skip
_TOKENS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class RequestMeasures:
    """The histograms of one node, and the token and outcome counts of its models."""

    def __init__(self, metrics: Metrics) -> None:
        self.queue_time = metrics.histogram(
            "request_queue_time_seconds",
            "Time a request waited for a free slot of a model on this node.",
            ("service",), _LATENCY_S,
        )  # fmt: skip
        self.ttft = metrics.histogram(
            "time_to_first_token_seconds",
            "Time from a request reaching the model to its first generated token.",
            ("model",), _LATENCY_S,
        )  # fmt: skip
        self.inter_token = metrics.histogram(
            "inter_token_latency_seconds",
            "Time between two successive generated tokens (per token, within a request).",
            ("model",), _TOKEN_GAP_S,
        )  # fmt: skip
        self.e2e = metrics.histogram(
            "e2e_request_latency_seconds",
            "Time from a request reaching the model to its last token or result.",
            ("model",), _LATENCY_S,
        )  # fmt: skip
        self.prompt_tokens = metrics.histogram(
            "request_prompt_tokens", "Prompt tokens of each generation request.",
            ("model",), _TOKENS,
        )  # fmt: skip
        self.generation_tokens = metrics.histogram(
            "request_generation_tokens", "Tokens generated for each request.",
            ("model",), _TOKENS,
        )  # fmt: skip
        self._queues: dict[str, Any] = {}
        #: (model, "prompt" | "generation") -> tokens; the token-count counters read it.
        self.tokens: Counter[tuple[str, str]] = Counter()
        #: (model, finished_reason or error code) -> requests that reached the model.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        metrics.counter(
            "prompt_tokens", "Prompt tokens processed, by model.",
            lambda: _one(self.tokens, "prompt"), labels=("model",),
        )  # fmt: skip
        metrics.counter(
            "generation_tokens", "Tokens generated, by model.",
            lambda: _one(self.tokens, "generation"), labels=("model",),
        )  # fmt: skip
        metrics.counter(
            "request_success",
            "Requests a model finished or failed, by finished_reason (stop, length, eos, "
            "cancelled) or error code.",
            lambda: self.outcomes, labels=("model", "finished_reason"),
        )  # fmt: skip

    def time_queue_of(self, service: str) -> None:
        """Observe ``service``'s queue time from now on (the models a node hosts: agents'
        request/reply stays free of histogram work)."""
        self._queues[service] = self.queue_time.labels(service)

    def queue(self, service: str) -> Any:
        """``service``'s queue-time histogram, or None when its queue is not timed."""
        return self._queues.get(service)

    def model_request(self, model: str) -> ModelRequest:
        """Start timing one request of ``model`` (now)."""
        return ModelRequest(self, model)


class ModelRequest:
    """One model request being timed: :meth:`token` per generated chunk, then one ``finish``."""

    __slots__ = ("_first", "_last", "_measures", "_model", "_started")

    def __init__(self, measures: RequestMeasures, model: str) -> None:
        self._measures = measures
        self._model = model
        self._started = time.perf_counter()
        self._first = 0.0
        self._last = 0.0

    def token(self, count: int) -> None:
        """``count`` tokens arrived together (a chunk): the first of a request is its time to
        first token; each later one is a gap, the chunk's wait shared among its tokens."""
        if count <= 0:
            return
        now = time.perf_counter()
        measures, gap = self._measures, 0.0
        if not self._first:
            self._first = now
            measures.ttft.labels(self._model).observe(now - self._started)
            count -= 1  # the rest of the first chunk came with it: gaps of zero
        else:
            gap = (now - self._last) / count
        if count:
            inter = measures.inter_token.labels(self._model)
            for _ in range(count):
                inter.observe(gap)
        self._last = now

    def finish(self, reason: str, prompt_tokens: int = 0, generated: int | None = None) -> None:
        """The request ended with ``reason`` (a finished_reason or an error code)."""
        measures, model = self._measures, self._model
        measures.e2e.labels(model).observe(time.perf_counter() - self._started)
        measures.outcomes[model, reason] += 1
        if generated is None:  # an embedding or a failure: no token distributions
            return
        measures.prompt_tokens.labels(model).observe(prompt_tokens)
        measures.generation_tokens.labels(model).observe(generated)
        measures.tokens[model, "prompt"] += prompt_tokens
        measures.tokens[model, "generation"] += generated


@runtime_checkable
class Measured(Protocol):
    """A hosted service that times its own requests (a model): the node hands it its
    measures once, when it is hosted."""

    def measure_with(self, measures: RequestMeasures) -> None: ...


def _one(counts: Counter[tuple[str, str]], kind: str) -> dict[str, int]:
    return {model: number for (model, what), number in counts.items() if what == kind}
