"""PostgreSQL access shared by the daemons that use it: a pool that survives the server
going away, retries where they are safe, and precise errors where they are not.

The pool starts empty (``min_size=0``) so a daemon starts even while its database
is down; each request then either gets a connection or a 503.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import structlog

from deploy.runtime.aio import within
from deploy.runtime.backoff import Backoff
from deploy.runtime.http import DependencyUnavailable, is_dependency_down

log = structlog.get_logger("pg")
T = TypeVar("T")

# Rolled back by the server; running the whole transaction again is always safe.
RETRYABLE = (asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError)
# The server is a standby (the session was opened during a failover, before the promotion finished, or the
# address routes to a replica): a read-only transaction wrote nothing, so any work may run again on a new
# session, within the connect grace, and is otherwise answered 503 like an unreachable server.
NOT_PRIMARY = (asyncpg.exceptions.ReadOnlySQLTransactionError,)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing beyond asyncpg's own rollback.

    asyncpg always rolls back an open transaction first; its default reset then sends a
    round trip per release (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) undoing session
    state nothing here leaves behind when its work completes: pooled work uses transaction-scoped locks and
    ``SET LOCAL`` only, the migrator unlocks its session lock itself, and LISTEN lives on
    the relay's own connection (work that fails is reset in full, :meth:`Database.run`). Skipping it halves the round trips of a one-statement request.
    """


# A session whose peer vanished without a FIN (a frozen host, a cut path) is noticed by TCP itself: keepalive
# probes after 5 s idle, every 2 s, 2 unanswered -> dead; data unacknowledged for 8 s -> dead. Through HAProxy
# this watches the HAProxy hop; HAProxy's own check cuts the server side (on-marked-down shutdown-sessions).
KEEPALIVE = ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
             (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), 5),
             (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 2),
             (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 2),
             (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), 8000))


def _keepalive(conn: asyncpg.Connection) -> None:
    sock = conn._transport.get_extra_info("socket") if conn._transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in KEEPALIVE:
        if option is not None:
            sock.setsockopt(level, option, value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    _keepalive(conn)
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _pause(backoff: Backoff | None, until: float) -> Backoff:
    """Wait a short jittered backoff step before trying again (never past ``until``)."""
    backoff = backoff or Backoff(base=0.05, cap=0.25)
    await asyncio.sleep(min(backoff.next_delay(), max(0.0, until - time.monotonic())))
    return backoff


class Database:
    def __init__(self, dsn: str, *, max_size: int = 20, command_timeout: float = 10.0,
                 connect_timeout: float = 5.0, connect_grace: float = 1.0) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        # How long a request waits for a connection while the server is unreachable (a failover's last
        # moments) before it is answered 503: connecting sends no work, so any work may wait.
        self.connect_grace = connect_grace
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=0, max_size=self.max_size, command_timeout=self.command_timeout,
            timeout=self.connect_timeout, init=_init_connection, reset=_keep_session,
            server_settings={"timezone": "UTC", "application_name": "ticketflow"},
            max_inactive_connection_lifetime=60,
        )

    async def close(self) -> None:
        if self.pool is not None:
            try:
                await within(5, self.pool.close())
            except Exception:
                self.pool.terminate()

    def pool_stats(self) -> tuple[int, int, int]:
        """(connections open, lent out, maximum), from memory: read by metrics."""
        pool = self.pool
        if pool is None:
            return 0, 0, self.max_size
        return pool.get_size(), pool.get_size() - pool.get_idle_size(), self.max_size

    async def ping(self) -> bool:
        try:
            await within(2, self.run(lambda c: c.fetchval("SELECT 1"), idempotent=False))
            return True
        except Exception:
            return False

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, idempotent: bool,
                  attempts: int = 3) -> T:
        """Run ``fn`` on a pooled connection.

        Serialization failures and deadlocks are retried (the server rolled the
        work back). A lost connection is retried only when ``idempotent``: a
        non-idempotent write that lost its connection may or may not have
        committed, so the caller gets a 503 and decides (with an
        Idempotency-Key, the retry is safe). Failing to get a connection at all
        sent nothing, so it is retried for any work, for ``connect_grace``
        seconds: a failover's new primary then serves the waiting request as
        soon as it is routed, instead of after the client's own backoff.
        """
        assert self.pool is not None, "Database.start() first"
        backoff: Backoff | None = None  # made on the first retry: most calls never need one
        attempt = 0
        grace_until = time.monotonic() + self.connect_grace  # from the start: a full pool's wait counts too
        while True:
            attempt += 1
            try:
                conn = await self.pool.acquire(timeout=self.connect_timeout)
            except Exception as exc:
                if not is_dependency_down(exc):
                    raise
                if time.monotonic() >= grace_until:
                    log.warning("database_unavailable", reason=repr(exc), attempt=attempt)
                    raise DependencyUnavailable("database unavailable; retry shortly", retry_after=1) from None
                attempt -= 1  # no work was sent: this try does not count
                backoff = await _pause(backoff, grace_until)
                continue
            try:
                try:
                    result = await fn(conn)
                except BaseException:
                    # Work cut short may leave session state (a session lock it meant to release):
                    # the full reset, which the pool skips on the way back (_keep_session).
                    await self._release(conn, reset=True)
                    raise
                await self._release(conn)
                return result
            except NOT_PRIMARY as exc:
                if time.monotonic() >= grace_until:
                    log.warning("database_not_primary", reason=repr(exc), attempt=attempt)
                    raise DependencyUnavailable("database is failing over; retry shortly", retry_after=1) from None
                attempt -= 1  # rejected before writing anything; after the promotion the same session writes
                backoff = await _pause(backoff, grace_until)
                continue
            except RETRYABLE:
                if attempt == attempts:
                    raise DependencyUnavailable("database contention; retry", retry_after=1) from None
            except Exception as exc:
                if not is_dependency_down(exc):
                    raise
                if not idempotent or attempt == attempts:
                    log.warning("database_unavailable", reason=repr(exc), attempt=attempt)
                    raise DependencyUnavailable("database unavailable; retry shortly", retry_after=1) from None
            backoff = backoff or Backoff(base=0.05, cap=0.5)
            await asyncio.sleep(backoff.next_delay())

    async def _release(self, conn: asyncpg.Connection, reset: bool = False) -> None:
        # After the server drops a session, asyncpg's reset on release can fail
        # (MagicStack/asyncpg#784). The pool has then terminated the connection and
        # taken its slot back; the work itself already finished, so it must not fail.
        assert self.pool is not None
        if reset and not conn.is_closed():
            try:
                await conn.reset(timeout=self.connect_timeout)
            except Exception:
                conn.terminate()  # state we cannot undo leaves with the session
        try:
            await self.pool.release(conn)
        except Exception as exc:
            log.info("connection_discarded", reason=repr(exc))

    async def transaction(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, idempotent: bool) -> T:
        async def in_transaction(conn: asyncpg.Connection) -> T:
            async with conn.transaction():
                return await fn(conn)

        return await self.run(in_transaction, idempotent=idempotent)

