"""Constrained decoding: which tokens may come next under a JSON Schema, regex or grammar
(pure computation, no I/O; the grammar engine is ``llguidance``).

llguidance (the engine ONNX Runtime GenAI and llama.cpp use) compiles a
:class:`~llmnode.schemas.inference.Constraint` into a matcher that, for the tokens accepted so
far, computes the bitmask of allowed next tokens in tens of microseconds. One :class:`Grammars`
per model holds llguidance's view of the model's tokenizer (built once from the same
``tokenizer.json`` the runtime already loaded, about half a second, on a background thread); each
constrained sequence gets its own :class:`TokenMatcher`. Unconstrained sequences never touch any
of this, so they decode exactly as fast as before.
"""

# ruff: noqa: PLC0415 - llguidance is imported when the first model builds its Grammars

from __future__ import annotations

import contextlib
import json
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from llmnode.errors import ModelError
from llmnode.schemas.inference import Constraint

if TYPE_CHECKING:
    from llmnode.agents.models.tokenizer import TextTokenizer


# JSON without free whitespace (a schema's own "x-guidance" may say otherwise): fewer tokens, and
# a small model cannot spend its max_tokens on newlines before the JSON is complete.
COMPACT: Any = {"whitespace_flexible": False}


def grammar_of(constraint: Constraint) -> str:
    """llguidance's grammar text for a constraint (ModelError if it is not one)."""
    from llguidance import LLMatcher

    try:
        if constraint.kind == "json_schema":
            return str(LLMatcher.grammar_from_json_schema(constraint.source, defaults=COMPACT))
        if constraint.kind == "regex":
            return str(LLMatcher.grammar_from_regex(constraint.source))
        return str(LLMatcher.grammar_from_lark(constraint.source))
    except ValueError as error:  # llguidance: the schema is not a JSON object
        raise ModelError(f"invalid {constraint.kind} constraint: {error}") from error


class TokenMatcher:
    """One sequence's grammar state: masks its logits, follows the tokens it picks."""

    def __init__(self, matcher: Any, vocabulary: int) -> None:
        self._matcher = matcher
        self._vocabulary = vocabulary
        self._bits = np.zeros((vocabulary + 31) // 32, dtype=np.int32)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` [vocab] with every token the grammar forbids at -inf."""
        bits = self._bits
        self._matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
        self._check()
        allowed = np.unpackbits(bits.view(np.uint8), bitorder="little", count=self._vocabulary)
        size = min(logits.shape[-1], self._vocabulary)
        masked = np.full(logits.shape, -np.inf, dtype=logits.dtype)
        keep = allowed[:size].astype(bool)
        masked[:size][keep] = logits[:size][keep]
        return masked

    def consume(self, tokens: list[int]) -> None:
        """Advance past tokens (sampled under the mask, or resumed from another node)."""
        if tokens and not self._matcher.consume_tokens(tokens):
            self._check()
            raise ModelError("a token outside the constraint was produced")

    @property
    def stopped(self) -> bool:
        """The grammar is complete and allows nothing more (the answer is whole)."""
        return bool(self._matcher.is_stopped())

    def _check(self) -> None:
        if self._matcher.is_error():
            raise ModelError(f"constraint failed: {self._matcher.get_error()}")


def _plain_decoder(tokenizer_json: str) -> str:
    """The tokenizer with a byte-level decoder stated plainly.

    Some exports wrap ``ByteLevel`` in a ``Sequence`` with ``ByteFallback``/``Replace`` steps
    (no-ops for a byte-level vocabulary); llguidance then reads tokens such as ``Ġanswer`` as
    literal text. Keeping only the ``ByteLevel`` step lets it map tokens to their bytes."""
    data = json.loads(tokenizer_json)
    decoder = data.get("decoder") or {}
    if decoder.get("type") == "Sequence":
        for step in decoder.get("decoders", []):
            if step.get("type") == "ByteLevel":
                data["decoder"] = step
                return json.dumps(data)
    return tokenizer_json


class Grammars:
    """Compiles constraints against one model's tokenizer."""

    def __init__(self, tokenizer: TextTokenizer, vocabulary: int, stop_ids: set[int]) -> None:
        self._source = _plain_decoder(tokenizer.backend.to_str())
        self._vocabulary = max(vocabulary, int(tokenizer.backend.get_vocab_size()))
        self._stop_ids = sorted(stop_ids)
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._ready = threading.Thread(target=self._warm, name="grammar-tokenizer", daemon=True)
        self._ready.start()

    def _build(self) -> Any:
        """llguidance's tokenizer (built once); ModelError when it cannot read this one."""
        with self._lock:
            if self._tokenizer is None:
                from llguidance import LLTokenizer

                try:
                    self._tokenizer = LLTokenizer(
                        self._source, n_vocab=self._vocabulary, eos_token=self._stop_ids
                    )
                except Exception as error:  # llguidance raises plain exceptions
                    raise ModelError(f"constrained decoding is unavailable: {error}") from error
            return self._tokenizer

    def _warm(self) -> None:
        with contextlib.suppress(ModelError):  # the first constrained request reports it
            self._build()

    def matcher(self, constraint: Constraint) -> TokenMatcher:
        """A fresh matcher for one sequence (ModelError when the constraint does not compile)."""
        from llguidance import LLMatcher

        grammar = grammar_of(constraint)
        matcher = LLMatcher(self._build(), grammar, log_level=0)
        if matcher.is_error():
            raise ModelError(f"invalid {constraint.kind} constraint: {matcher.get_error()}")
        return TokenMatcher(matcher, self._vocabulary)
