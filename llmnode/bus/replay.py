"""Replay protection: a sliding window of sequence numbers per (sender, epoch) (pure, no I/O).

RFC 6479 style: each sender keeps the highest sequence number seen in its current epoch and a
bitmap of the ``width`` numbers below it. A number above the highest is new; one inside the
window is new only if its bit is clear; one below the window is refused (too old to tell).
A newer epoch from a sender (it restarted) replaces its window; an older epoch is refused.

:meth:`ReplayWindows.check` only looks; :meth:`ReplayWindows.accept` records, and must be
called only after the frame's signature verified, so forged frames cannot poison a window.
"""

from __future__ import annotations

DEFAULT_WIDTH = 1024


class _Window:
    __slots__ = ("bitmap", "epoch", "highest")

    def __init__(self, epoch: int, sequence: int) -> None:
        self.epoch = epoch
        self.highest = sequence
        self.bitmap = 1  # bit i set: sequence ``highest - i`` was seen


class ReplayWindows:
    """One sliding window per sender. ``width`` is how far out of order a frame may arrive."""

    __slots__ = ("_mask", "_width", "_windows")

    def __init__(self, width: int = DEFAULT_WIDTH) -> None:
        if width < 1:
            raise ValueError("the replay window width must be positive")
        self._width = width
        self._mask = (1 << width) - 1
        self._windows: dict[bytes, _Window] = {}

    @property
    def width(self) -> int:
        return self._width

    def check(self, sender: bytes, epoch: int, sequence: int) -> bool:
        """Whether (epoch, sequence) from ``sender`` would be new. Records nothing."""
        window = self._windows.get(sender)
        if window is None or epoch > window.epoch:
            return True
        if epoch < window.epoch:
            return False
        if sequence > window.highest:
            return True
        offset = window.highest - sequence
        if offset >= self._width:
            return False
        return not (window.bitmap >> offset) & 1

    def accept(self, sender: bytes, epoch: int, sequence: int) -> bool:
        """Record (epoch, sequence) from ``sender``; False (and no change) if it is a replay."""
        window = self._windows.get(sender)
        if window is None or epoch > window.epoch:
            self._windows[sender] = _Window(epoch, sequence)
            return True
        if epoch < window.epoch:
            return False
        if sequence > window.highest:
            shift = sequence - window.highest
            window.bitmap = (
                ((window.bitmap << shift) | 1) & self._mask if shift < self._width else 1
            )
            window.highest = sequence
            return True
        offset = window.highest - sequence
        if offset >= self._width or (window.bitmap >> offset) & 1:
            return False
        window.bitmap |= 1 << offset
        return True

    def forget(self, sender: bytes) -> None:
        self._windows.pop(sender, None)

    def __len__(self) -> int:
        return len(self._windows)
