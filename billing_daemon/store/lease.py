"""The relay lease: which billing replica relays (and numbers) the payments stream, cluster-wide.

Why not GET_LOCK. A named lock lives in one MariaDB server's memory; under Galera two
replicas on two nodes both get "the" lock. A row is replicated and a write to it is
certified cluster-wide, so a compare-and-set UPDATE on it has exactly one winner.

The row (``relay_leases``, migration 0008): ``owner`` (random per attempt), ``epoch`` (+1 on
every take: the fencing token) and ``expires_at``. Only the database's clock (``NOW(6)``)
decides whether the row is free; process clocks are never compared with it.

- take: in ONE transaction, ``UPDATE ... SET owner, epoch = epoch + 1, expires_at = NOW(6) +
  ttl WHERE expires_at <= NOW(6)`` (free or expired), read the new epoch, and write it to
  ``stream_heads.relay_epoch``. 0 rows changed, or a deadlock / Galera certification failure
  (1213, a concurrent take on another node): not the leader.
- renew: ``UPDATE ... SET expires_at = NOW(6) + ttl WHERE owner AND epoch AND expires_at >
  NOW(6)``, every ``renew_every`` (the relay's check interval). 0 rows or any error: lost.
- give up (shutdown, or after losing it): ``expires_at = LEAST(expires_at, NOW(6))`` for our
  owner and epoch only, so a standby takes it at its next attempt instead of after the TTL.

Stopping never depends on reaching the database. The holder keeps a local deadline on its
own monotonic clock (:class:`LeaseTimer`): the moment it SENT the statement that took or
renewed the lease, plus the TTL, minus two renew intervals. The database's expiry is
measured from a later moment (when the statement ran), so the local deadline comes first
even if every reply is lost; the relay checks the lease every renew interval, so it notices
the deadline at most one interval late and has another interval left to stop its sender
before a standby can take the lease. A process paused past its deadline (SIGSTOP, a VM
freeze) finds it expired at its first check after waking and stops.

Late writes of a deposed holder: the sequencer numbers rows only while
``stream_heads.relay_epoch`` equals its own epoch, read under the row's FOR UPDATE lock
(``billing_daemon/store/outbox.py``). A take writes the same row, so a numbering transaction
of the old epoch either committed before the take or is refused (on one node by the row
lock, across Galera nodes by certification of the two writes). A relay paused inside its
numbering (or ack) transaction would hold that row lock, and with it every take, for as long
as it is paused: the sequencer and the ack ask the server to end their transaction once idle
for ``SEQUENCER_IDLE_TIMEOUT`` (1 s). What a deposed sender may
still send is numbered already and is idempotent by event id at the receiver.

Assumes the Galera nodes' clocks agree to well under the TTL (NTP): a take on one node
compares the expiry written by another node's ``NOW(6)`` with its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import aiomysql
import pymysql
import structlog

from deploy.runtime.aio import within
from deploy.runtime.mysql import RETRYABLE_CODES, MariaDsn, connect_session, execute, fetchval

log = structlog.get_logger("relay_lease")


class LeaseLost(RuntimeError):
    """The lease is no longer ours (expired by our clock, renewal refused or failed)."""


class LeaseTimer:
    """When a holder must consider its lease gone, by its own clock alone (pure; tested with a fake clock)."""

    def __init__(self, ttl: float, renew_every: float) -> None:
        if ttl <= 3 * renew_every:
            raise ValueError("the lease TTL must be more than three renew intervals")
        self.ttl = ttl
        self.renew_every = renew_every
        self.deadline: float | None = None  # None: not held
        self.renewed_at = 0.0  # when the last successful take/renew was SENT

    def held(self, sent_at: float) -> None:
        """A take or renewal sent at ``sent_at`` succeeded."""
        self.renewed_at = sent_at
        self.deadline = sent_at + self.ttl - 2 * self.renew_every

    def drop(self) -> None:
        self.deadline = None

    def valid(self, now: float) -> bool:
        return self.deadline is not None and now < self.deadline

    def renew_due(self, now: float) -> bool:
        return now >= self.renewed_at + self.renew_every

    def remaining(self, now: float) -> float:
        return 0.0 if self.deadline is None else max(0.0, self.deadline - now)


class RelayLease:
    """A :class:`deploy.runtime.relay.LeaderLock` backed by a ``relay_leases`` row (one per attempt)."""

    def __init__(self, dsn: str, stream: str, *, ttl: float, renew_every: float,
                 on_epoch: Callable[[int], None] = lambda epoch: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dsn = MariaDsn.parse(dsn)
        self.stream = stream
        self.owner = uuid.uuid4().hex
        self.timer = LeaseTimer(ttl, renew_every)
        self.on_epoch = on_epoch
        self.clock = clock
        self.epoch: int | None = None
        self.conn: aiomysql.Connection | None = None

    @property
    def _ttl_us(self) -> int:
        return int(self.timer.ttl * 1_000_000)

    async def acquire(self, wake: Callable[[], None]) -> bool:
        self.conn = await connect_session(self.dsn)
        try:
            epoch, sent = await self._take(self.conn)
        except pymysql.err.MySQLError as exc:
            if exc.args and exc.args[0] in RETRYABLE_CODES:  # a concurrent take won (Galera: certification failure)
                return False
            raise
        if epoch is None:
            return False
        self.epoch = epoch
        self.timer.held(sent)
        self.on_epoch(epoch)
        log.info("relay_lease_taken", stream=self.stream, epoch=epoch)
        return True

    async def _take(self, conn: aiomysql.Connection) -> tuple[int | None, float]:
        """The take's transaction: the new epoch (None if the lease is held) and when the
        statement that set the committed expiry was sent."""
        await conn.begin()
        try:
            if await execute(conn, "UPDATE relay_leases SET owner = %s, epoch = epoch + 1,"
                                   " expires_at = NOW(6) + INTERVAL %s MICROSECOND, taken_at = NOW(6)"
                                   " WHERE stream = %s AND expires_at <= NOW(6)",
                             (self.owner, self._ttl_us, self.stream)) != 1:
                await conn.rollback()
                return None, 0.0
            epoch = int(await fetchval(conn, "SELECT epoch FROM relay_leases WHERE stream = %s", (self.stream,)))
            # May wait for a deposed relay's sequencing transaction (the server ends one left idle:
            # outbox.SEQUENCER_IDLE_TIMEOUT), so the expiry is set again after it, and the local
            # deadline counts from there.
            await execute(conn, "UPDATE stream_heads SET relay_epoch = %s WHERE stream = %s", (epoch, self.stream))
            sent = self.clock()
            await execute(conn, "UPDATE relay_leases SET expires_at = NOW(6) + INTERVAL %s MICROSECOND"
                                " WHERE stream = %s", (self._ttl_us, self.stream))
            await conn.commit()
            return epoch, sent
        except BaseException:
            await conn.rollback()
            raise

    async def check(self) -> None:
        """Renew when due; raise :class:`LeaseLost` once the lease may no longer be ours."""
        now = self.clock()
        if not self.timer.valid(now):
            self._lose("expired by the local clock")
        if not self.timer.renew_due(now):
            return
        assert self.conn is not None and self.epoch is not None
        try:
            renewed = await within(self.timer.remaining(now), execute(
                self.conn, "UPDATE relay_leases SET expires_at = NOW(6) + INTERVAL %s MICROSECOND"
                           " WHERE stream = %s AND owner = %s AND epoch = %s AND expires_at > NOW(6)",
                (self._ttl_us, self.stream, self.owner, self.epoch)))
        except (pymysql.err.MySQLError, OSError, asyncio.TimeoutError) as exc:
            self._lose(f"renewal failed: {exc!r}")
        if renewed != 1:
            self._lose("renewal refused: the lease expired or was taken")
        self.timer.held(now)

    def _lose(self, reason: str) -> None:
        self.timer.drop()
        log.warning("relay_lease_lost", stream=self.stream, epoch=self.epoch, reason=reason)
        raise LeaseLost(reason)

    async def release(self) -> None:
        """Give the lease up if it is still ours (idempotent), then close the session."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if self.epoch is not None:
                await within(1, execute(conn, "UPDATE relay_leases SET expires_at = LEAST(expires_at, NOW(6))"
                                              " WHERE stream = %s AND owner = %s AND epoch = %s",
                                        (self.stream, self.owner, self.epoch)))
        except Exception:  # a standby takes it after the TTL instead
            pass
        finally:
            self.timer.drop()
            conn.close()
