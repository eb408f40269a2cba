"""When a refused, failed or timed-out request is tried again, and when to hedge (pure, no I/O).

The router asks :meth:`RetryPolicy.decide` after every try that did not answer; the tests of the
policy are the tests of what runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ErrorKind = Literal["busy", "failed", "timeout"]


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Whether to retry elsewhere, and at what time (seconds, the caller's clock)."""

    retry: bool
    at: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a request that was refused, failed or timed out is retried on another node.

    A refusal (``busy``) re-routes at once the first time (another node is likely free), then
    backs off exponentially like the other kinds: ``base_backoff_ms`` × 2^(attempts - 1), capped
    at ``max_backoff_ms``. No retry when the next attempt could not start with
    ``min_useful_ms`` left before the deadline, after ``max_attempts`` attempts, or when a
    non-idempotent request was accepted by a node (it may have run; running it twice is worse).
    """

    # Defaults: a request whose every node stays full gets NoCapacity after about 1.3 s of
    # backing off (0, 20, 40, ... 640 ms), not at its deadline; a failing one after 8 tries.
    base_backoff_ms: float = 20.0
    max_backoff_ms: float = 1000.0
    max_attempts: int = 8
    min_useful_ms: float = 1.0
    hedge_factor: float = 2.0
    hedge_min_ms: float = 50.0

    def decide(
        self,
        kind: ErrorKind,
        attempts: int,
        now: float,
        deadline: float,
        *,
        idempotent: bool = True,
        accepted: bool = False,
    ) -> RetryDecision:
        """Decide after attempt number ``attempts`` (1 = the first) ended with ``kind``."""
        if accepted and not idempotent and kind != "busy":
            return RetryDecision(False, reason="not_idempotent")
        if attempts >= self.max_attempts:
            return RetryDecision(False, reason="attempts_exhausted")
        exponent = attempts - 1 if kind != "busy" else attempts - 2
        delay_ms = 0.0 if exponent < 0 else self.base_backoff_ms * 2.0**exponent
        delay_ms = min(delay_ms, self.max_backoff_ms)
        at = now + delay_ms / 1000.0
        if deadline - at < self.min_useful_ms / 1000.0:
            return RetryDecision(False, reason="deadline")
        return RetryDecision(True, at=at, reason=kind)

    def hedge_after(self, estimate_ms: float, *, idempotent: bool = True) -> float | None:
        """Milliseconds after which to send a second copy elsewhere, or None not to hedge."""
        if not idempotent or not math.isfinite(estimate_ms):
            return None
        return max(self.hedge_min_ms, self.hedge_factor * estimate_ms)
