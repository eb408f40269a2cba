"""RetryPolicy: retry elsewhere within the deadline; never re-run an accepted non-idempotent one."""

from __future__ import annotations

import pytest

from llmnode.nodes.requests.retry import RetryPolicy

POLICY = RetryPolicy(base_backoff_ms=10.0, max_backoff_ms=40.0, max_attempts=6)


def test_first_refusal_reroutes_at_once() -> None:
    decision = POLICY.decide("busy", 1, now=100.0, deadline=101.0)
    assert decision.retry
    assert decision.at == 100.0


def test_repeated_refusals_back_off() -> None:
    assert POLICY.decide("busy", 2, now=100.0, deadline=101.0).at == pytest.approx(100.010)
    assert POLICY.decide("busy", 3, now=100.0, deadline=101.0).at == pytest.approx(100.020)


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    delays = [
        POLICY.decide("failed", attempts, now=0.0, deadline=10.0).at for attempts in (1, 2, 3, 4, 5)
    ]
    assert delays == pytest.approx([0.010, 0.020, 0.040, 0.040, 0.040])


def test_no_retry_when_the_backoff_would_pass_the_deadline() -> None:
    decision = POLICY.decide("timeout", 1, now=100.0, deadline=100.005)
    assert not decision.retry
    assert decision.reason == "deadline"


def test_no_retry_after_the_last_attempt() -> None:
    decision = POLICY.decide("failed", 6, now=0.0, deadline=10.0)
    assert not decision.retry
    assert decision.reason == "attempts_exhausted"


@pytest.mark.parametrize("kind", ["failed", "timeout"])
def test_accepted_non_idempotent_request_is_not_retried(kind: str) -> None:
    decision = POLICY.decide(
        kind,  # type: ignore[arg-type]
        1,
        now=0.0,
        deadline=10.0,
        idempotent=False,
        accepted=True,
    )
    assert not decision.retry
    assert decision.reason == "not_idempotent"


def test_non_idempotent_request_refused_before_acceptance_is_retried() -> None:
    decision = POLICY.decide("busy", 1, now=0.0, deadline=10.0, idempotent=False, accepted=False)
    assert decision.retry


def test_hedging_waits_a_multiple_of_the_estimate_and_at_least_the_minimum() -> None:
    policy = RetryPolicy(hedge_factor=2.0, hedge_min_ms=50.0)
    assert policy.hedge_after(100.0) == 200.0
    assert policy.hedge_after(10.0) == 50.0


def test_non_idempotent_requests_are_never_hedged() -> None:
    assert RetryPolicy().hedge_after(100.0, idempotent=False) is None
