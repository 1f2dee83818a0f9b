"""Messages the portal keeps retrying, so that a stuck sale is seen, not silent.

A message is *stuck* from its first failed attempt (a peer down or answering
something unexpected) until it is processed. It stays unacked in the queue and
is retried in place with backoff; this registry is what operators see of it:

- the log: one warning when it becomes stuck (``message_stuck``), then one every
  ``log_every`` seconds while it stays so (``message_still_stuck``), never one per
  attempt; an info line when it finally goes through (``message_unstuck``);
- ``/ready``: the count and the oldest age (public: no ids);
- ``GET /api/stuck`` (service role): each message with its id, order, attempts,
  age and last answer; ``ticketflow status`` prints the count and oldest age.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from deploy.runtime.times import rfc3339

log = structlog.get_logger("portal.stuck")


@dataclass
class Stuck:
    message_id: str
    order_id: str | None
    type: str | None
    since: float
    attempts: int = 0
    last_answer: str = ""
    logged_at: float = 0.0


@dataclass
class StuckMessages:
    log_every: float = 60.0
    clock: Any = time.monotonic
    wall: Any = time.time
    _stuck: dict[str, Stuck] = field(default_factory=dict)

    def failed(self, message_id: str, order_id: str | None, kind: str | None, answer: str) -> int:
        """Record a failed attempt; returns how many attempts this message has failed."""
        now = self.clock()
        entry = self._stuck.get(message_id)
        if entry is None:
            entry = self._stuck[message_id] = Stuck(message_id, order_id, kind, now, logged_at=now)
            entry.attempts, entry.last_answer = 1, answer
            log.warning("message_stuck", **self._fields(entry, now))
            return 1
        entry.attempts += 1
        entry.last_answer = answer
        if now - entry.logged_at >= self.log_every:
            entry.logged_at = now
            log.warning("message_still_stuck", **self._fields(entry, now))
        return entry.attempts

    def done(self, message_id: str, outcome: str) -> None:
        """The message left the portal (processed, dead-lettered, or handed back to the broker)."""
        entry = self._stuck.pop(message_id, None)
        if entry is not None:
            log.info("message_unstuck", outcome=outcome, **self._fields(entry, self.clock()))

    def _fields(self, entry: Stuck, now: float) -> dict[str, Any]:
        return {"message_id": entry.message_id, "order_id": entry.order_id, "type": entry.type,
                "attempts": entry.attempts, "age_seconds": round(now - entry.since, 1),
                "last_answer": entry.last_answer}

    def summary(self) -> dict[str, Any]:
        """For /ready: how many, and the oldest age in seconds (no ids: /ready is public)."""
        now = self.clock()
        oldest = max((now - e.since for e in self._stuck.values()), default=0.0)
        return {"count": len(self._stuck), "oldest_seconds": round(oldest, 1)}

    def listing(self) -> list[dict[str, Any]]:
        """Every stuck message, oldest first, with when it became stuck (RFC 3339)."""
        now, wall = self.clock(), self.wall()
        out = []
        for entry in sorted(self._stuck.values(), key=lambda e: e.since):
            since = rfc3339(wall - (now - entry.since))
            out.append({**self._fields(entry, now), "stuck_since": since})
        return out
