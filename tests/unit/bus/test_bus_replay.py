"""Replay windows: properties of the RFC 6479 style sliding window."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llmnode.bus.replay import ReplayWindows

SENDER = b"s" * 32
WIDTH = 64

sequences = st.lists(st.integers(min_value=0, max_value=400), max_size=300)


@given(sequences)
def test_every_sequence_number_is_accepted_at_most_once(numbers: list[int]) -> None:
    windows = ReplayWindows(WIDTH)
    accepted = [n for n in numbers if windows.accept(SENDER, 1, n)]
    assert len(accepted) == len(set(accepted))


@given(sequences)
def test_check_agrees_with_accept_and_records_nothing(numbers: list[int]) -> None:
    windows = ReplayWindows(WIDTH)
    for number in numbers:
        would = windows.check(SENDER, 1, number)
        assert windows.check(SENDER, 1, number) == would  # check alone changes nothing
        assert windows.accept(SENDER, 1, number) == would


@given(st.lists(st.integers(min_value=0, max_value=10**12), unique=True, max_size=200))
def test_increasing_sequences_are_all_accepted(numbers: list[int]) -> None:
    windows = ReplayWindows(WIDTH)
    assert all(windows.accept(SENDER, 1, n) for n in sorted(numbers))


@given(st.permutations(list(range(WIDTH))))
def test_any_reordering_within_the_window_is_accepted(order: list[int]) -> None:
    windows = ReplayWindows(WIDTH)
    windows.accept(SENDER, 1, WIDTH - 1)
    assert all(windows.accept(SENDER, 1, n) for n in order if n != WIDTH - 1)


@settings(max_examples=200)
@given(st.integers(min_value=WIDTH, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_numbers_older_than_the_window_are_refused(highest: int, back: int) -> None:
    windows = ReplayWindows(WIDTH)
    windows.accept(SENDER, 1, highest)
    old = highest - WIDTH - (back % (highest - WIDTH + 1))
    assert not windows.accept(SENDER, 1, old)


@given(st.integers(min_value=0, max_value=2**32 - 2), st.integers(min_value=0, max_value=2**40))
def test_newer_epoch_replaces_the_window_and_older_epoch_is_refused(
    epoch: int, sequence: int
) -> None:
    windows = ReplayWindows(WIDTH)
    assert windows.accept(SENDER, epoch, sequence + 1000)
    assert windows.accept(SENDER, epoch + 1, 0)  # restarted: numbering starts over
    assert not windows.accept(SENDER, epoch, sequence + 2000)


def test_senders_have_independent_windows() -> None:
    windows = ReplayWindows(WIDTH)
    assert windows.accept(b"a" * 32, 1, 5)
    assert windows.accept(b"b" * 32, 1, 5)
    assert not windows.accept(b"a" * 32, 1, 5)
