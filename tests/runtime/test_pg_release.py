"""Pooled connections go back to the pool without asyncpg's reset round trip, yet never carry
session state from work that failed (deploy.runtime.pg.Database.run)."""

import asyncpg
import pytest

from deploy.runtime.pg import Database
from tests.support.stack import fresh_pg_database

LOCK = 4242_4242


class Boom(Exception):
    pass


@pytest.mark.stack
async def test_work_that_fails_leaves_no_session_lock_on_its_pooled_connection():
    async with fresh_pg_database("tf_pg_release") as dsn:
        db = Database(dsn, max_size=1)
        await db.start()
        other = await asyncpg.connect(dsn)
        try:
            async def lock_then_fail(conn):
                await conn.execute("SELECT pg_advisory_lock($1)", LOCK)
                raise Boom()

            with pytest.raises(Boom):
                await db.run(lock_then_fail, idempotent=False)
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK), \
                "the failed work's session lock survived on the pooled connection"
            await other.execute("SELECT pg_advisory_unlock($1)", LOCK)
            # The one pooled connection is usable again, and the same one (not a new session).
            assert await db.run(lambda c: c.fetchval("SELECT 1"), idempotent=True) == 1
        finally:
            await other.close()
            await db.close()


@pytest.mark.stack
async def test_completed_work_keeps_its_connection_and_sends_no_reset():
    async with fresh_pg_database("tf_pg_release") as dsn:
        db = Database(dsn, max_size=1)
        await db.start()
        try:
            seen: list[str] = []
            first = await db.run(lambda c: c.fetchval("SELECT pg_backend_pid()"), idempotent=True)

            async def traced(conn):
                conn.add_query_logger(lambda record: seen.append(record.query))
                return await conn.fetchval("SELECT pg_backend_pid()")

            assert await db.run(traced, idempotent=True) == first
            assert await db.run(lambda c: c.fetchval("SELECT pg_backend_pid()"), idempotent=True) == first
            assert not any("RESET ALL" in q or "UNLISTEN" in q for q in seen), seen
        finally:
            await db.close()
