"""Assembling a whole GenerateResult from a stream of TokenChunks (no I/O of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from llmnode.schemas.inference import GenerateResult, TokenChunk


async def collect_result(
    stream: AbstractAsyncContextManager[AsyncIterator[TokenChunk]],
    prompt_tokens: int | None = None,
    on_chunk: Callable[[TokenChunk], Awaitable[None]] | None = None,
) -> GenerateResult:
    """Run ``stream`` to its end (closing it however it ends) and join its chunks into one
    result; ``on_chunk`` sees each chunk first. A stream that ends without a finish reason
    reports ``cancelled``. ``prompt_tokens`` defaults to the stream's own count (a runtime
    stream knows it once its prompt is tokenised)."""
    texts: list[str] = []
    token_ids: list[int] = []
    finish_reason = "cancelled"
    async with stream as chunks:
        async for chunk in chunks:
            if on_chunk is not None:
                await on_chunk(chunk)
            texts.append(chunk.text)
            token_ids.extend(chunk.token_ids)
            finish_reason = chunk.finish_reason or finish_reason
    if prompt_tokens is None:
        prompt_tokens = int(getattr(stream, "prompt_tokens", 0))
    return GenerateResult(
        text="".join(texts),
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(token_ids),
        token_ids=token_ids,
    )
