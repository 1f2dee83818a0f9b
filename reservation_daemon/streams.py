"""The outbox relay to billing: a PostgreSQL advisory lock picks the one active replica.

Writers insert outbox rows without a sequence number; the relay numbers them as it reads
(``tf_outbox_read``), and while its link is down a :class:`Sequencer` on the leading replica
numbers them on its own, so positions, lag and pruning always see the stream as committed.

Wake-ups, without a NOTIFY per commit: after a commit that wrote outbox rows, a replica
whose relay leads wakes it directly, at most once per ``LOCAL_WAKE_INTERVAL`` (each wake
costs the relay a numbering transaction with a WAL flush; one per hold competed with the
holds' own commits: HTTP holds/s rose ~10-25 % in paired runs with 2 ms); any other replica
sends one coalesced NOTIFY (at most one per ``NOTIFY_INTERVAL``) that the leader's lock
session LISTENs for. The sender's poll interval is the fallback if a notification is missed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import asyncpg
import structlog

from deploy.runtime.aio import wait_event
from deploy.runtime.coalesce import Coalesced
from deploy.runtime.config import link_targets, sender_link
from deploy.runtime.pg import Database
from deploy.runtime.relay import OutboxRelay, outbox_relay
from reservation_daemon.config import Settings
from reservation_daemon.store import STREAM, ReservationStore

log = structlog.get_logger("reservation.streams")

RELAY_LOCK_KEY = 0x7466_7265_6C61  # "tfrela": the reservations relay
NOTIFY_CHANNEL = "tf_outbox_reservations"
NOTIFY_INTERVAL = 0.005  # at most one NOTIFY per this many seconds per process
LOCAL_WAKE_INTERVAL = 0.002  # at most one wake of this process's own relay per this many seconds


class Sequencer:
    """Numbers committed outbox rows while this replica leads and its link is down.

    With the link up the relay's reads number rows themselves (one round trip); this covers
    the rest, so the stream's head, lag and pruning never wait for billing to come back.
    """

    def __init__(self, store: ReservationStore, link_up: Callable[[], bool], interval: float) -> None:
        self.store = store
        self.link_up = link_up
        self.interval = interval
        self._wake = asyncio.Event()
        self._failures = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled (the lock is released): a pass at once, then on each wake-up or poll."""
        self._wake.set()
        while True:
            await wait_event(self._wake, self.interval)
            self._wake.clear()
            if self.link_up():
                continue
            try:
                await self.store.sequence_outbox()
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                if math.log10(self._failures).is_integer():
                    log.warning("sequencing_failed", stream=STREAM, reason=repr(exc), failures=self._failures)


class PgAdvisoryLock:
    def __init__(self, dsn: str, sequencer: Sequencer) -> None:
        self.dsn = dsn
        self.sequencer = sequencer
        self.conn: asyncpg.Connection | None = None
        self._sequencing: asyncio.Task | None = None

    async def acquire(self, wake: Callable[[], None]) -> bool:
        self.conn = await asyncpg.connect(self.dsn, timeout=5)
        if not await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
            return False

        def woken(*_: object) -> None:
            wake()
            self.sequencer.wake()

        await self.conn.add_listener(NOTIFY_CHANNEL, woken)
        self._sequencing = asyncio.create_task(self.sequencer.run(), name="outbox-sequencer")
        return True

    async def check(self) -> None:
        assert self.conn is not None
        await self.conn.fetchval("SELECT 1")

    async def release(self) -> None:
        if self._sequencing is not None:
            self._sequencing.cancel()
            await asyncio.gather(self._sequencing, return_exceptions=True)
            self._sequencing = None
        if self.conn is not None:
            self.conn.terminate()  # ending the session releases the lock
            self.conn = None


class Wakeups:
    """What runs after this process commits outbox rows (``store.on_emit``)."""

    def __init__(self, relay: OutboxRelay, sequencer: Sequencer, db: Database) -> None:
        self.relay = relay
        self.sequencer = sequencer
        self.notify = Coalesced("outbox_notify", lambda: db.run(
            lambda c: c.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL), idempotent=True),
            interval=NOTIFY_INTERVAL)
        self.local = Coalesced("relay_wake", self._wake_local, interval=LOCAL_WAKE_INTERVAL)

    async def _wake_local(self) -> None:
        self.relay.notify()
        self.sequencer.wake()

    def __call__(self) -> None:
        if self.relay.active:
            self.local.request()
        else:
            self.notify.request()  # the leader is another replica: one NOTIFY for a burst of commits

    async def close(self) -> None:
        await self.notify.close()
        await self.local.close()


def make_relay(settings: Settings, store: ReservationStore, node: str) -> tuple[OutboxRelay, Wakeups]:
    """The relay with its sequencer, and the wake-ups this process's commits run (``store.on_emit``)."""
    relay: OutboxRelay

    def link_up() -> bool:
        return relay.sender is not None and relay.sender.connected

    sequencer = Sequencer(store, link_up, settings.relay_poll)
    relay = outbox_relay(STREAM, link_targets(settings.billing_host, settings.billing_port), store.read_outbox,
                         store.outbox_head, store.record_ack, sender_link(settings, node),
                         lambda: PgAdvisoryLock(settings.pg_dsn, sequencer),
                         poll_interval=settings.relay_poll, lock_retry=settings.relay_lock_retry)
    wakeups = Wakeups(relay, sequencer, store.db)
    store.on_emit.append(wakeups)
    return relay, wakeups
