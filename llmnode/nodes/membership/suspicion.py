"""Lifeguard's suspicion timer: shrinks from a maximum as accusers confirm (no I/O)."""

from __future__ import annotations

from llmnode.nodes.membership.config import remaining_suspicion


class Suspicion:
    """A suspicion of one member at one incarnation, and when it turns into death."""

    __slots__ = ("confirmations", "expected", "incarnation", "maximum", "minimum", "started")

    def __init__(
        self, incarnation: int, accuser: bytes, now: float, bounds: tuple[float, float], k: int
    ) -> None:
        self.incarnation = incarnation
        self.started = now
        self.minimum, self.maximum = bounds
        self.expected = k
        self.confirmations = {accuser}  # the first accuser does not count as a confirmation

    def confirm(self, accuser: bytes) -> bool:
        if len(self.confirmations) - 1 >= self.expected or accuser in self.confirmations:
            return False
        self.confirmations.add(accuser)
        return True

    def deadline(self) -> float:
        timeout = remaining_suspicion(
            len(self.confirmations) - 1, self.expected, self.minimum, self.maximum
        )
        return self.started + timeout
