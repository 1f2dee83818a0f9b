"""The outbox relay to billing: a PostgreSQL advisory lock picks the one active replica.

The lock's session also LISTENs for the outbox NOTIFY, so a new row leaves
within milliseconds; the sender's poll interval is the fallback if a
notification is missed.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from deploy.runtime.config import link_targets, sender_link
from deploy.runtime.relay import OutboxRelay, outbox_relay
from reservation_daemon.config import Settings
from reservation_daemon.store import STREAM, ReservationStore

RELAY_LOCK_KEY = 0x7466_7265_6C61  # "tfrela": the reservations relay
NOTIFY_CHANNEL = "tf_outbox_reservations"


class PgAdvisoryLock:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None

    async def acquire(self, wake: Callable[[], None]) -> bool:
        self.conn = await asyncpg.connect(self.dsn, timeout=5)
        if not await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
            return False
        await self.conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake())
        return True

    async def check(self) -> None:
        assert self.conn is not None
        await self.conn.fetchval("SELECT 1")

    async def release(self) -> None:
        if self.conn is not None:
            self.conn.terminate()  # ending the session releases the lock
            self.conn = None


def make_relay(settings: Settings, store: ReservationStore, node: str) -> OutboxRelay:
    return outbox_relay(STREAM, link_targets(settings.billing_host, settings.billing_port), store.read_outbox,
                        store.outbox_head, store.record_ack, sender_link(settings, node),
                        lambda: PgAdvisoryLock(settings.pg_dsn),
                        poll_interval=settings.relay_poll, lock_retry=settings.relay_lock_retry)
