"""The token bucket that paces model transfers, on an explicit clock."""

from __future__ import annotations

from llmnode.agents.models.transfer import TokenBucket


def test_a_burst_passes_at_once_then_bytes_wait_their_turn() -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0)
    assert bucket.take(500, now=0.0) == 0.0
    assert bucket.take(250, now=0.0) == 0.25  # 250 bytes of debt at 1000 B/s
    assert bucket.take(250, now=0.25) == 0.25  # the debt paid; these wait their own turn


def test_idle_time_refills_only_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0)
    bucket.take(500, now=0.0)
    assert bucket.take(500, now=100.0) == 0.0
    assert bucket.take(1, now=100.0) > 0.0


def test_over_a_long_run_the_rate_holds() -> None:
    bucket = TokenBucket(rate=1_000_000.0, burst=100_000.0)
    now = 0.0
    for _ in range(1000):  # 100 MB in chunks of 100 kB
        now += bucket.take(100_000, now)
    assert 99.0 <= now <= 100.0
