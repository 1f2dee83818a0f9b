"""Background work every replica runs: releasing expired holds, pruning old rows, settling seat counts.

Each is safe with several replicas at once (claims with SKIP LOCKED and a lease; idempotent deletes).
"""

from __future__ import annotations

import asyncio
import random

import structlog

from deploy.runtime.aio import every, prune_step
from reservation_daemon.config import Settings
from reservation_daemon.release import ReleaseCheck, sort_holds
from reservation_daemon.store import ReservationStore

log = structlog.get_logger("reservation.jobs")

PRUNE_INTERVAL = 300.0


async def sweep_expired_holds(settings: Settings, store: ReservationStore, check: ReleaseCheck) -> None:
    """Release holds past their expiry — each only with billing's word (see reservation_daemon.release)."""
    lease = settings.peer_timeout + settings.sweep_interval  # longer than one call to billing
    while True:
        backlog = False
        try:
            due = await store.claim_due(settings.sweep_batch, lease)
            if due:
                answers = await check.ask(due) or {}
                released, paid, kept = sort_holds(due, answers)
                expired, confirmed = await store.settle_holds(released, paid, kept)
                if expired:
                    log.info("holds_expired", count=expired)
                if confirmed:
                    # Paid, but the sale was not finalized in time (the pipeline lags): the seat is the buyer's.
                    log.info("paid_holds_confirmed", count=confirmed, reservation_ids=[str(i) for i in paid][:20])
                backlog = len(due) == settings.sweep_batch and bool(released or paid)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("sweep_failed", reason=repr(exc))
        if not backlog:  # a backlog: keep going without waiting
            await asyncio.sleep(settings.sweep_interval * random.uniform(0.8, 1.2))


async def prune_old_rows(settings: Settings, store: ReservationStore) -> None:
    await every(PRUNE_INTERVAL, "prune",
                lambda: prune_step(store, settings.retention_hours, settings.idempotency_hours))


SETTLE_INTERVAL = 1.0


async def settle_seat_counts(store: ReservationStore) -> None:
    """Keep each event's seat counts at a few rows (migration 0004); one replica at a time does the work."""
    await every(SETTLE_INTERVAL, "settle_seat_counts", store.settle_seat_counts)
