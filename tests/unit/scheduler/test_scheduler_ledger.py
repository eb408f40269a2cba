"""InFlightLedger: the caller's own record of what it has in flight, correcting stale gossip."""

from __future__ import annotations

import pytest

from llmnode.nodes.requests.scheduler import InFlightLedger

NODE = b"\x01" * 32
OTHER = b"\x02" * 32
SERVICE = "model:tiny"


def test_outstanding_counts_sent_minus_finished() -> None:
    ledger = InFlightLedger()
    ledger.sent(NODE, SERVICE, b"a", 1.0)
    ledger.sent(NODE, SERVICE, b"b", 1.1)
    ledger.finished(NODE, SERVICE, b"a", 1.5)
    assert ledger.outstanding(NODE, SERVICE) == 1
    assert ledger.outstanding(OTHER, SERVICE) == 0
    assert ledger.outstanding(NODE, "model:other") == 0


def test_requests_sent_after_the_gossip_are_added_to_it() -> None:
    ledger = InFlightLedger()
    ledger.sent(NODE, SERVICE, b"before", 1.0)
    ledger.sent(NODE, SERVICE, b"after-1", 2.5)
    ledger.sent(NODE, SERVICE, b"after-2", 2.6)
    assert ledger.sent_since(NODE, SERVICE, 2.0) == 2
    assert ledger.correction(NODE, SERVICE, 2.0) == 2


def test_requests_in_the_gossip_that_finished_since_are_subtracted() -> None:
    ledger = InFlightLedger()
    ledger.sent(NODE, SERVICE, b"in-snapshot", 1.0)
    ledger.sent(NODE, SERVICE, b"came-and-went", 2.5)
    ledger.finished(NODE, SERVICE, b"in-snapshot", 3.0)
    ledger.finished(NODE, SERVICE, b"came-and-went", 3.1)
    # Snapshot at 2.0 held "in-snapshot" (now gone); "came-and-went" was never in it.
    assert ledger.finished_since(NODE, SERVICE, 2.0) == 1
    assert ledger.correction(NODE, SERVICE, 2.0) == -1


def test_completions_before_a_newer_gossip_no_longer_count() -> None:
    ledger = InFlightLedger()
    ledger.sent(NODE, SERVICE, b"a", 1.0)
    ledger.finished(NODE, SERVICE, b"a", 2.0)
    assert ledger.finished_since(NODE, SERVICE, 1.5) == 1
    assert ledger.finished_since(NODE, SERVICE, 2.5) == 0


def test_refused_request_is_forgotten_without_counting_a_completion() -> None:
    ledger = InFlightLedger()
    ledger.sent(NODE, SERVICE, b"a", 1.0)
    ledger.refused(NODE, SERVICE, b"a")
    assert ledger.outstanding(NODE, SERVICE) == 0
    assert ledger.finished_since(NODE, SERVICE, 0.5) == 0


def test_unknown_request_ids_are_ignored() -> None:
    ledger = InFlightLedger()
    ledger.finished(NODE, SERVICE, b"never-sent", 1.0, service_ms=10.0)
    ledger.refused(NODE, SERVICE, b"never-sent")
    assert ledger.outstanding(NODE, SERVICE) == 0
    assert ledger.service_ms(NODE, SERVICE) is None


def test_service_time_is_an_exponentially_weighted_average_of_observations() -> None:
    ledger = InFlightLedger(smoothing=0.5)
    for index, service_ms in enumerate([100.0, 200.0, 200.0]):
        request_id = bytes([index])
        ledger.sent(NODE, SERVICE, request_id, float(index))
        ledger.finished(NODE, SERVICE, request_id, index + 0.5, service_ms=service_ms)
    assert ledger.service_ms(NODE, SERVICE) == pytest.approx(175.0)


def test_forget_drops_everything_about_a_node() -> None:
    ledger = InFlightLedger()
    ledger.sent(NODE, SERVICE, b"a", 1.0)
    ledger.sent(OTHER, SERVICE, b"b", 1.0)
    ledger.forget(NODE)
    assert ledger.outstanding(NODE, SERVICE) == 0
    assert ledger.outstanding(OTHER, SERVICE) == 1


def test_old_completions_are_pruned_after_the_history_window() -> None:
    ledger = InFlightLedger(history_seconds=10.0)
    ledger.sent(NODE, SERVICE, b"a", 0.0)
    ledger.finished(NODE, SERVICE, b"a", 1.0)
    ledger.sent(NODE, SERVICE, b"b", 20.0)
    ledger.finished(NODE, SERVICE, b"b", 21.0)
    assert ledger.finished_since(NODE, SERVICE, 0.0) == 0  # "a" fell out of the window


def test_smoothing_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="smoothing"):
        InFlightLedger(smoothing=0.0)


def test_reported_service_times_are_averaged_and_a_repeated_report_counts_once() -> None:
    ledger = InFlightLedger()
    node = b"n" * 32
    assert ledger.reported_service_ms(node, "model:m", 100.0, 0.1) == 100.0
    assert ledger.reported_service_ms(node, "model:m", 200.0, 0.1) == pytest.approx(110.0)
    # the same record read again (a piggybacked load moved its time, not its EWMA)
    assert ledger.reported_service_ms(node, "model:m", 200.0, 0.1) == pytest.approx(110.0)
