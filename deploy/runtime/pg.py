"""PostgreSQL access shared by the daemons that use it: a pool that survives the server
going away, retries where they are safe, and precise errors where they are not.

The pool starts empty (``min_size=0``) so a daemon starts even while its database
is down; each request then either gets a connection or a 503.
"""

from __future__ import annotations

import asyncio
import json
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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing beyond asyncpg's own rollback.

    asyncpg always rolls back an open transaction first; its default reset then sends a
    round trip per release (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) undoing session
    state nothing here leaves behind when its work completes: pooled work uses transaction-scoped locks and
    ``SET LOCAL`` only, the migrator unlocks its session lock itself, and LISTEN lives on
    the relay's own connection (work that fails is reset in full, :meth:`Database.run`). Skipping it halves the round trips of a one-statement request.
    """


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    def __init__(self, dsn: str, *, max_size: int = 20, command_timeout: float = 10.0,
                 connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
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
        Idempotency-Key, the retry is safe).
        """
        assert self.pool is not None, "Database.start() first"
        backoff: Backoff | None = None  # made on the first retry: most calls never need one
        for attempt in range(1, attempts + 1):
            try:
                conn = await self.pool.acquire(timeout=self.connect_timeout)
                try:
                    result = await fn(conn)
                except BaseException:
                    # Work cut short may leave session state (a session lock it meant to release):
                    # the full reset, which the pool skips on the way back (_keep_session).
                    await self._release(conn, reset=True)
                    raise
                await self._release(conn)
                return result
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
        raise AssertionError("unreachable")

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

