"""A fake clock for code that takes its time as a callable (``clock=time.monotonic`` by default).

Timer tests advance it instead of sleeping, so they run in no time and never race the machine.
"""

from __future__ import annotations


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock never goes back"
        self.now += seconds
