"""MariaDB access shared by the daemons that use it (aiomysql).

Mirrors :mod:`deploy.runtime.pg`: the daemon starts without its database,
deadlocks and Galera certification failures are retried (the server rolled
the work back), a lost connection is retried only for idempotent work and is
otherwise a 503. The DSN may name several hosts
(``mysql://u:p@h1:3306,h2:3306/db``) or one load balancer in front of a
Galera cluster; on a connection failure the next host is tried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiomysql
import pymysql
import structlog

from deploy.runtime.aio import within
from deploy.runtime.backoff import Backoff
from deploy.runtime.http import DependencyUnavailable, is_dependency_down

log = structlog.get_logger("mariadb")
T = TypeVar("T")

# ER_LOCK_DEADLOCK (also Galera's certification failure), ER_LOCK_WAIT_TIMEOUT
RETRYABLE_CODES = {1213, 1205}


@dataclass(frozen=True)
class MariaDsn:
    hosts: list[tuple[str, int]]
    user: str
    password: str
    database: str

    @classmethod
    def parse(cls, dsn: str) -> MariaDsn:
        parts = urlsplit(dsn)
        if parts.scheme not in ("mysql", "mariadb"):
            raise ValueError("must start with mysql:// or mariadb://")
        netloc = parts.netloc.rsplit("@", 1)
        userinfo, hostlist = (netloc[0], netloc[1]) if len(netloc) == 2 else ("", netloc[0])
        user, _, password = userinfo.partition(":")
        hosts = []
        for item in hostlist.split(","):
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "3306")
            hosts.append((host or "127.0.0.1", int(port)))
        return cls(hosts, unquote(user), unquote(password), parts.path.lstrip("/"))


async def connect_session(dsn: MariaDsn, timeout: float = 5.0) -> aiomysql.Connection:
    """A dedicated autocommit session outside any pool (named locks live as long as it does):
    the DSN's hosts are tried in turn, the last one's error raised if none answers."""
    for host, port in dsn.hosts:
        try:
            return await within(timeout, aiomysql.connect(
                host=host, port=port, user=dsn.user, password=dsn.password, db=dsn.database,
                connect_timeout=timeout, autocommit=True))
        except Exception:
            if (host, port) == dsn.hosts[-1]:
                raise
    raise ValueError("the DSN names no host")


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class MariaDB:
    def __init__(self, dsn: str, *, max_size: int = 20, connect_timeout: float = 5.0,
                 command_timeout: float = 10.0) -> None:
        self.dsn = MariaDsn.parse(dsn)
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._host = 0
        self._pool: aiomysql.Pool | None = None
        self._pool_lock = asyncio.Lock()

    async def start(self) -> None:
        """Nothing connects yet: the first request does, so start-up never waits for the database."""

    async def _get_pool(self) -> aiomysql.Pool:
        async with self._pool_lock:
            if self._pool is None:
                host, port = self.dsn.hosts[self._host]
                self._pool = await aiomysql.create_pool(
                    minsize=0, maxsize=self.max_size, host=host, port=port, user=self.dsn.user,
                    password=self.dsn.password, db=self.dsn.database, autocommit=False,
                    connect_timeout=self.connect_timeout, charset="utf8mb4", pool_recycle=300,
                    # NOW(6) and DATETIME columns are UTC. (Isolation stays the server's: every
                    # read that decides a write locks with FOR UPDATE, so it holds either way.)
                    init_command="SET time_zone = '+00:00'",
                )
            return self._pool

    async def _fail_over(self, broken: aiomysql.Pool) -> None:
        """Drop the pool after a connection failure; with several hosts, move to the next."""
        async with self._pool_lock:
            if self._pool is broken:
                self._pool = None
                self._host = (self._host + 1) % len(self.dsn.hosts)
                broken.close()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            try:
                await within(5, self._pool.wait_closed())
            except Exception:
                pass

    def pool_stats(self) -> tuple[int, int, int]:
        """(connections open, lent out, maximum), from memory: read by metrics."""
        pool = self._pool
        if pool is None:
            return 0, 0, self.max_size
        return pool.size, pool.size - pool.freesize, self.max_size

    async def ping(self) -> bool:
        try:
            await within(3, self.run(lambda c: fetchval(c, "SELECT 1"), idempotent=False))
            return True
        except Exception:
            return False

    async def run(self, fn: Callable[[aiomysql.Connection], Awaitable[T]], *, idempotent: bool,
                  attempts: int = 3) -> T:
        backoff: Backoff | None = None  # made on the first retry: seeding a Random showed in the pay profile
        for attempt in range(1, attempts + 1):
            pool = None
            try:
                pool = await self._get_pool()
                conn = await within(self.connect_timeout, pool.acquire())
                try:
                    result = await within(self.command_timeout, fn(conn))
                except BaseException:
                    # The connection's state is unknown (mid-transaction, mid-read): never reuse it.
                    conn.close()
                    raise
                finally:
                    pool.release(conn)
                return result
            except pymysql.err.MySQLError as exc:
                if _code(exc) in RETRYABLE_CODES:
                    if attempt == attempts:
                        raise DependencyUnavailable("database contention; retry", retry_after=1) from None
                elif is_dependency_down(exc):
                    await self._lost(pool, exc, attempt, attempts, idempotent)
                else:
                    raise
            except (OSError, asyncio.TimeoutError) as exc:
                await self._lost(pool, exc, attempt, attempts, idempotent)
            backoff = backoff or Backoff(base=0.05, cap=0.5)
            await asyncio.sleep(backoff.next_delay())
        raise AssertionError("unreachable")

    async def _lost(self, pool, exc, attempt: int, attempts: int, idempotent: bool) -> None:
        if pool is not None:
            await self._fail_over(pool)
        if not idempotent or attempt == attempts:
            log.warning("database_unavailable", reason=repr(exc), attempt=attempt)
            raise DependencyUnavailable("database unavailable; retry shortly", retry_after=1) from None

    async def transaction(self, fn: Callable[[aiomysql.Connection], Awaitable[T]], *, idempotent: bool) -> T:
        async def in_transaction(conn: aiomysql.Connection) -> T:
            await conn.begin()
            try:
                result = await fn(conn)
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()
            return result

        return await self.run(in_transaction, idempotent=idempotent)


# --- small query helpers (aiomysql has cursors only) ---------------------------


async def execute(conn: aiomysql.Connection, sql: str, args: Sequence[Any] | None = None) -> int:
    async with conn.cursor() as cur:
        return await cur.execute(sql, args)


async def executemany(conn: aiomysql.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    if not rows:
        return 0
    async with conn.cursor() as cur:
        return await cur.executemany(sql, rows)


async def fetchall(conn: aiomysql.Connection, sql: str, args: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


async def fetchone(conn: aiomysql.Connection, sql: str, args: Sequence[Any] | None = None) -> dict[str, Any] | None:
    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute(sql, args)
        return await cur.fetchone()


async def fetchval(conn: aiomysql.Connection, sql: str, args: Sequence[Any] | None = None) -> Any:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        row = await cur.fetchone()
        return row[0] if row else None
