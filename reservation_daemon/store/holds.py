"""Holds and reservations: each state change is one call to a stored function (one round trip)
that also writes its outbox row; plus the sweeper's claim/settle around billing's word, and the audit log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import structlog

from deploy.runtime import correlation
from deploy.runtime.pg import Database
from reservation_daemon.store.outcome import Outcome

log = structlog.get_logger("reservation.holds")

# Outcomes after which the transaction may have written an outbox row (a replayed or repeated
# answer wrote none: the wake-up it causes is spurious and harmless), and the event type it wrote.
EMITTING = {"held": "reservation.created", "cancelled": "reservation.cancelled",
            "confirmed": "reservation.confirmed", "released": "reservation.cancelled"}


class HoldStore:
    db: Database

    emitted: Callable[[], None]  # OutboxStore's: wakes the relay after a commit that wrote outbox rows

    def _answer(self, outcome: Outcome, reservation_id: uuid.UUID | None = None) -> Outcome:
        kind = EMITTING.get(outcome.name)
        if kind is not None:
            self.emitted()
            # The trace's first step (README, "Tracing"); the request's correlation_id is bound.
            # A replayed answer (Idempotency-Key) logs it again though it wrote no new row.
            # The body is JSON text on a connection without the pool's codec (the bench's dedicated one).
            body = outcome.body if isinstance(outcome.body, dict) else {}
            order_id = reservation_id or body.get("id")
            log.info("event_emitted", type=kind, order_id=str(order_id) if order_id else None)
        return outcome

    async def reserve(self, reservation_id: uuid.UUID, event_id: uuid.UUID | None, seat_ids: list[uuid.UUID],
                      user_id: str, ttl_seconds: float, idempotency: tuple[str, str, str] | None,
                      ) -> Outcome:
        """Hold the seats, all or nothing, in one round trip (tf_reserve)."""
        scope, key, request_hash = idempotency or (None, None, None)
        row = await self.db.run(lambda c: c.fetchrow(
            "SELECT outcome, body FROM tf_reserve($1, $2, $3, $4, make_interval(secs => $5), $6, $7, $8, $9)",
            reservation_id, event_id, seat_ids, user_id, ttl_seconds, scope, key, request_hash, correlation.current(),
        ), idempotent=idempotency is not None)
        return self._answer(Outcome(row["outcome"], row["body"]))

    async def get_reservation(self, reservation_id: uuid.UUID) -> dict[str, Any] | None:
        return await self.db.run(lambda c: c.fetchval("SELECT tf_reservation_json($1)", reservation_id),
                                 idempotent=True)

    async def reservation_parties(self, reservation_id: uuid.UUID) -> dict[str, Any] | None:
        """Who may see a reservation: its buyer, its event's organizer; and its status."""
        return await self.db.run(lambda c: c.fetchrow(
            "SELECT r.user_id, e.organizer_id, r.status FROM reservations r JOIN events e ON e.id = r.event_id"
            " WHERE r.id = $1", reservation_id), idempotent=True)

    async def audit(self, actor: str, role: str, action: str, target: uuid.UUID, reason: str | None = None) -> None:
        """Record who changed a reservation's seats, when and why."""
        await self.db.run(lambda c: c.execute(
            "INSERT INTO audit_log (actor, actor_role, action, target, reason) VALUES ($1, $2, $3, $4, $5)",
            actor, role, action, target, reason), idempotent=False)

    async def audit_trail(self, target: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT tf_time(at) AS at, actor, actor_role, action, reason FROM audit_log WHERE target = $1"
            " ORDER BY id", target), idempotent=True)
        return [dict(r) for r in rows]

    async def cancel(self, reservation_id: uuid.UUID) -> Outcome:
        # Releasing is idempotent (a second release answers the same), so it may be retried.
        row = await self.db.run(lambda c: c.fetchrow("SELECT * FROM tf_cancel($1, $2)", reservation_id,
                                                     correlation.current()), idempotent=True)
        return self._answer(Outcome(row["outcome"], row["body"]), reservation_id)

    async def confirm(self, reservation_id: uuid.UUID) -> Outcome:
        row = await self.db.run(lambda c: c.fetchrow("SELECT * FROM tf_confirm($1, $2)", reservation_id,
                                                     correlation.current()), idempotent=True)
        return self._answer(Outcome(row["outcome"], row["body"]), reservation_id)

    async def release_sold(self, reservation_id: uuid.UUID) -> Outcome:
        row = await self.db.run(lambda c: c.fetchrow("SELECT * FROM tf_release_sold($1, $2)", reservation_id,
                                                     correlation.current()), idempotent=True)
        return self._answer(Outcome(row["outcome"], row["body"]), reservation_id)

    async def claim_due(self, limit: int, lease_seconds: float) -> list[uuid.UUID]:
        """Due holds (past their expiry, still held) this replica asks billing about next."""
        return await self.db.run(lambda c: c.fetchval(
            "SELECT tf_claim_due($1, make_interval(secs => $2))", limit, lease_seconds), idempotent=True)

    async def settle_holds(self, released: list[uuid.UUID], paid: list[uuid.UUID],
                           kept: list[uuid.UUID]) -> tuple[int, int]:
        """Act on billing's word: expire ``released``, confirm ``paid``, ask again about ``kept``.

        Returns (holds expired, holds confirmed). Idempotent: each step re-checks the hold's state.
        """
        row = await self.db.run(lambda c: c.fetchrow("SELECT * FROM tf_settle_holds($1, $2, $3)",
                                                     released, paid, kept), idempotent=True)
        if row["expired"] or row["confirmed"]:
            self.emitted()
        return row["expired"], row["confirmed"]
