"""Hedged requests: the first of two copies to answer wins, the other is cancelled (no sockets).

Used by the router for idempotent, unstreamed requests still unanswered after
:meth:`~llmnode.nodes.requests.retry.RetryPolicy.hedge_after`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def race(
    first: Coroutine[Any, Any, T],
    delay: float,
    second: Callable[[], Coroutine[Any, Any, T] | None],
    on_won: Callable[[bool], None] = lambda copy_won: None,
) -> T:
    """Run ``first``; if it has not finished after ``delay`` seconds, start ``second()`` too
    (when it returns one). The first answer wins and the other copy is cancelled (so its node
    is told to stop); when both fail, the first failure is raised. When a copy went out,
    ``on_won(copy_won)`` says which of the two answered first."""
    original = asyncio.create_task(first)
    running: set[asyncio.Task[T]] = {original}
    hedged = False
    try:
        done, _ = await asyncio.wait(running, timeout=delay)
        if not done:
            copy = second()
            if copy is not None:
                running.add(asyncio.create_task(copy))
                hedged = True
        first_error: BaseException | None = None
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is None:
                    if hedged:
                        on_won(task is not original)
                    return task.result()
                first_error = first_error or error
        assert first_error is not None
        raise first_error
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
