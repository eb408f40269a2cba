"""Waiting between tries as the retry policy decides (asyncio sleep, no other I/O)."""

from __future__ import annotations

import asyncio

from llmnode.errors import DeadlineExceeded, MeshError, NoCapacity
from llmnode.nodes.requests.retry import ErrorKind, RetryPolicy


async def back_off(
    policy: RetryPolicy,
    now: float,
    kind: ErrorKind,
    attempts: int,
    deadline: float,
    error: MeshError,
    idempotent: bool = True,
    accepted: bool = False,
) -> None:
    """Wait as ``policy`` says before the next try, or raise ``error`` when it says not to
    retry (attempts exhausted, deadline too close, an accepted request that is not
    idempotent)."""
    decision = policy.decide(
        kind, attempts, now, deadline, idempotent=idempotent, accepted=accepted
    )
    if not decision.retry:
        if decision.reason == "deadline" and not isinstance(error, NoCapacity):
            raise DeadlineExceeded(f"{error}; no time left to retry") from error
        raise error
    if decision.at > now:
        await asyncio.sleep(decision.at - now)
