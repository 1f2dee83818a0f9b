"""Exponential backoff with full jitter (PROTOCOL.md section 8; the AWS architecture blog's recipe).

The n-th delay after the last reset (n counted from 0) is drawn uniformly from
``[0, min(cap, base * 2**n)]``. Full jitter spreads reconnecting peers over the
whole interval so a fleet that lost the same server does not come back in
lock-step. When to :meth:`Backoff.reset` is the caller's rule: only after real
progress, never after a half-success.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.05
    cap: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0
