"""The outbox relay: streams outbox rows to billing over the protocol link.

Exactly one relay is active across all replicas: the one holding a PostgreSQL
advisory lock on its own dedicated connection. If that replica dies its
session ends, the server releases the lock, and a standby takes it within
``relay_lock_retry`` seconds. Two relays overlapping for a moment (a holder
cut off but not yet noticed) is harmless: billing keeps one connection per
stream and resumes from its durable position.

The same connection LISTENs for the outbox NOTIFY so a new row leaves within
milliseconds; the sender's poll interval is the fallback if a notification is missed.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from deploy.runtime.backoff import Backoff
from protocol.link import LinkSettings
from protocol.sender import Sender
from reservation_daemon.config import Settings
from reservation_daemon.store import STREAM, ReservationStore

log = structlog.get_logger("reservation.relay")

RELAY_LOCK_KEY = 0x7466_7265_6C61  # "tfrela": the reservations relay
NOTIFY_CHANNEL = "tf_outbox_reservations"


class OutboxRelay:
    def __init__(self, settings: Settings, store: ReservationStore, node: str) -> None:
        self.settings = settings
        self.store = store
        self.node = node
        self.active = False
        self.sender: Sender | None = None
        self._stopping = asyncio.Event()

    async def stop(self) -> None:
        self._stopping.set()
        if self.sender is not None:
            await self.sender.stop()

    async def run(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while not self._stopping.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.settings.pg_dsn, timeout=5)
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                    backoff.reset()
                    await self._lead(conn)
                else:
                    await conn.close()
                    conn = None
                    await self._sleep(self.settings.relay_lock_retry)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay_interrupted", stream=STREAM, reason=repr(exc))
            finally:
                self.active = False
                if conn is not None:
                    conn.terminate()  # also releases the lock if the server still has the session
            await self._sleep(backoff.next_delay())

    async def _lead(self, conn: asyncpg.Connection) -> None:
        s = self.settings
        sender = self.sender = Sender(
            s.billing_host, s.billing_port, STREAM, self.store.read_outbox,
            LinkSettings(secret=s.link_secret, node=self.node, window=s.link_window),
            head=self.store.outbox_head, on_ack=self.store.record_ack, poll_interval=s.relay_poll,
        )
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: sender.notify())
        self.active = True
        log.info("relay_active", stream=STREAM, node=self.node)
        sending = asyncio.create_task(sender.run())
        try:
            # Keep checking that the lock's session is alive: if it is gone, so is the lock.
            while not self._stopping.is_set() and not sending.done():
                await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)
                await self._sleep(1.0)
        finally:
            await sender.stop()
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            self.sender = None
            log.info("relay_standby", stream=STREAM, node=self.node)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass
