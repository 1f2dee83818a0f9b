"""Background work every replica runs: releasing expired holds, pruning old rows, settling seat counts.

Both are safe with several replicas at once (SKIP LOCKED; idempotent deletes).
"""

from __future__ import annotations

import asyncio
import random

import structlog

from reservation_daemon.config import Settings
from reservation_daemon.store import ReservationStore

log = structlog.get_logger("reservation.jobs")

PRUNE_INTERVAL = 300.0


async def sweep_expired_holds(settings: Settings, store: ReservationStore) -> None:
    while True:
        try:
            released = await store.expire_due(settings.sweep_batch)
            if released:
                log.info("holds_expired", count=released)
            if released == settings.sweep_batch:
                continue  # a backlog: keep going without waiting
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("sweep_failed", reason=repr(exc))
        await asyncio.sleep(settings.sweep_interval * random.uniform(0.8, 1.2))


async def prune_old_rows(settings: Settings, store: ReservationStore) -> None:
    while True:
        try:
            outbox, keys = await store.prune(settings.retention_hours, settings.idempotency_hours)
            if outbox or keys:
                log.info("pruned", outbox_rows=outbox, idempotency_keys=keys)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("prune_failed", reason=repr(exc))
        await asyncio.sleep(PRUNE_INTERVAL * random.uniform(0.8, 1.2))


SETTLE_INTERVAL = 1.0


async def settle_seat_counts(store: ReservationStore) -> None:
    """Keep each event's seat counts at a few rows (migration 0004); one replica at a time does the work."""
    while True:
        try:
            await store.settle_seat_counts()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("settle_seat_counts_failed", reason=repr(exc))
        await asyncio.sleep(SETTLE_INTERVAL * random.uniform(0.8, 1.2))
