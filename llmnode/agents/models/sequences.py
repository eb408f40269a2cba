"""One sequence being decoded, and the stream its caller iterates (no I/O of its own).

A :class:`DecodeSequence` is what the decode worker keeps per request; its chunks reach the
caller's event loop with ``call_soon_threadsafe``. :class:`TokenStream` is the caller's side:
dropping or closing it cancels the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from llmnode.agents.models.constraints import TokenMatcher
from llmnode.agents.models.tokenizer import IncrementalDecoder
from llmnode.schemas.inference import GenerateRequest, TokenChunk


@dataclass(eq=False)
class DecodeSequence:
    request: GenerateRequest
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue[TokenChunk | BaseException]
    generator: np.random.Generator
    prompt_tokens: int = 0
    decoder: IncrementalDecoder | None = None
    text_ids: list[int] = field(default_factory=list)  # resumed + generated
    pending_ids: list[int] = field(default_factory=list)  # generated, not yet sent
    pending_text: str = ""  # their text, not yet sent
    position: int = 0
    next_token: int = 0
    cancelled: bool = False
    finished: bool = False
    started_at: float = 0.0
    matcher: TokenMatcher | None = None  # the grammar state of a constrained sequence
    queued_at: float = field(default_factory=time.monotonic)
    resumed_text: str = ""  # the text of request.resume_token_ids (delivered by another node)
    replay: deque[int] = field(default_factory=deque)  # resumed tokens not yet fed back

    def deliver(self, item: TokenChunk | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody listens any more
            self.cancelled = True


class TokenStream:
    """An async iterator of :class:`TokenChunk`; dropping or closing it cancels the request."""

    def __init__(self, cancel: Callable[[DecodeSequence], None], sequence: DecodeSequence) -> None:
        self._cancel = cancel
        self._sequence = sequence
        self._done = False

    @property
    def prompt_tokens(self) -> int:
        """How many tokens the prompt has (known once the worker has taken the request)."""
        return self._sequence.prompt_tokens

    @property
    def queued_ms(self) -> float:
        """How long the request waited for a batch slot (0 until the worker took it)."""
        started = self._sequence.started_at
        return max(0.0, (started - self._sequence.queued_at) * 1000) if started else 0.0

    @property
    def resumed_text(self) -> str:
        """The text of the resumed tokens (known once the worker has taken the request)."""
        return self._sequence.resumed_text

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
            self._cancel(self._sequence)

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> TokenStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.cancel()
