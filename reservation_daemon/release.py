"""Billing's word before a hold is released (issue 9, hole 3).

Billing is the authority on whether a hold has a payment. Before this daemon
releases a held reservation — the sweeper's expiry or the buyer's DELETE — it
asks billing in one batched service call, and billing answers per order,
atomically with its own order row:

- ``released``: no payment is charging or taken; billing cancelled the order, so
  none can start afterwards. The hold may go.
- ``paid``: the money is taken. The sweeper confirms the hold itself (the seat is
  the buyer's); the portal's confirm later finds it confirmed.
- ``charging``: a payment is in flight. Keep the hold; ask again next sweep.

If billing cannot be asked, nothing is released: holds stay held (safety over
availability — an outage of billing keeps expired holds' seats off sale until it
returns, it never sells a paid seat twice). The outage is logged once, when it
starts, and shown by ``/ready`` in its ``release_check`` entry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from deploy.runtime.peer import Peer, PeerUnavailable
from deploy.runtime.times import rfc3339

log = structlog.get_logger("reservation.release")

PATH = "/api/internal/holds/release-check"
ANSWERS = ("released", "paid", "charging")


def sort_holds(due: Sequence[Any], answers: dict[str, str]) -> tuple[list[Any], list[Any], list[Any]]:
    """What billing's answers mean for due holds: (to expire, to confirm, to keep and ask again).

    ``released`` expires a hold, ``paid`` confirms it; ``charging``, no answer, or an answer
    this daemon does not know keeps it (never release a hold without billing's word).
    """
    released = [i for i in due if answers.get(str(i)) == "released"]
    paid = [i for i in due if answers.get(str(i)) == "paid"]
    kept = [i for i in due if answers.get(str(i)) not in ("released", "paid")]
    return released, paid, kept


class ReleaseCheck:
    def __init__(self, billing: Peer, clock=time.time) -> None:
        self.billing = billing
        self.clock = clock
        self.unreachable_since: float | None = None
        self.failed_calls = 0
        self.last_error = ""

    async def ask(self, reservation_ids: Sequence[Any]) -> dict[str, str] | None:
        """Billing's answer per id (str), or None when billing could not be asked (keep every hold)."""
        ids = [str(i) for i in reservation_ids]
        try:
            status, body = await self.billing.call("POST", PATH, {"order_ids": ids})
        except PeerUnavailable as exc:
            self._failed(str(exc))
            return None
        answers = body.get("answers") if status == 200 and isinstance(body, dict) else None
        if not isinstance(answers, dict):
            self._failed(f"{PATH} answered {status}")
            return None
        self._reached()
        return {i: answers[i] for i in ids if answers.get(i) in ANSWERS}

    def _failed(self, reason: str) -> None:
        self.failed_calls += 1
        self.last_error = reason[:300]
        if self.unreachable_since is None:
            self.unreachable_since = self.clock()
            # One line per outage, not one per sweep.
            log.warning("billing_unreachable_holds_kept", reason=self.last_error,
                        detail="no hold is released until billing answers")

    def _reached(self) -> None:
        if self.unreachable_since is not None:
            log.info("billing_reachable_again", outage_seconds=round(self.clock() - self.unreachable_since, 1),
                     failed_calls=self.failed_calls)
        self.unreachable_since = None
        self.failed_calls = 0
        self.last_error = ""

    def status(self) -> dict[str, Any]:
        """For /ready: ``ok``, or since when billing could not be asked and how often it failed."""
        if self.unreachable_since is None:
            return {"state": "ok"}
        return {"state": "billing_unreachable", "since": rfc3339(self.unreachable_since),
                "seconds": round(self.clock() - self.unreachable_since, 1), "failed_calls": self.failed_calls,
                "last_error": self.last_error}
