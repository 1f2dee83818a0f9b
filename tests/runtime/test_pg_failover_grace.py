"""A request arriving in a failover's last moments waits for the new primary (deploy.runtime.pg.Database.run):
a server that cannot be reached yet, or a session still on a standby (read-only), is retried within
``connect_grace`` for any work, since nothing was written; past the grace the answer is a 503."""

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from deploy.runtime.http import DependencyUnavailable
from deploy.runtime.pg import Database
from tests.support.stack import fresh_pg_database

pytestmark = pytest.mark.stack


async def test_a_write_rejected_as_read_only_runs_again_once_the_server_takes_writes():
    async with fresh_pg_database("tf_pg_grace") as dsn:
        db = Database(dsn, max_size=2, connect_grace=2.0)
        await db.start()
        try:
            await db.run(lambda c: c.execute("CREATE TABLE t (n int)"), idempotent=False)
            calls = 0

            async def write(conn):
                nonlocal calls
                calls += 1
                async with conn.transaction(readonly=calls < 3):  # a standby for the first two tries
                    await conn.execute("INSERT INTO t VALUES (1)")

            await db.run(write, idempotent=False)
            assert calls == 3
            assert await db.run(lambda c: c.fetchval("SELECT count(*) FROM t"), idempotent=True) == 1
        finally:
            await db.close()


async def test_a_server_that_stays_read_only_is_a_503_after_the_grace():
    async with fresh_pg_database("tf_pg_grace") as dsn:
        db = Database(dsn, max_size=1, connect_grace=0.3)
        await db.start()
        try:
            async def write(conn):
                async with conn.transaction(readonly=True):
                    await conn.execute("CREATE TABLE never (n int)")

            started = time.monotonic()
            with pytest.raises(DependencyUnavailable):
                await db.run(write, idempotent=False)
            assert time.monotonic() - started >= 0.3
        finally:
            await db.close()


async def test_a_request_that_cannot_connect_yet_waits_for_the_server_within_the_grace():
    """Like HAProxy's read-write port while no primary is UP: the first connection is closed at once;
    the ones after it reach the real server. The waiting request must be served, not answered 503."""
    async with fresh_pg_database("tf_pg_grace") as dsn:
        real = urlsplit(dsn)
        rejected = 0

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        async def no_primary_then_forward(client_reader, client_writer):
            nonlocal rejected
            if not rejected:
                rejected += 1
                client_writer.close()
                return
            server_reader, server_writer = await asyncio.open_connection(real.hostname, real.port)
            await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer),
                                 return_exceptions=True)

        proxy = await asyncio.start_server(no_primary_then_forward, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        db = Database(real._replace(netloc=f"{real.netloc.rpartition('@')[0]}@127.0.0.1:{port}").geturl(),
                      max_size=1, connect_grace=5.0)
        await db.start()
        try:
            assert await db.run(lambda c: c.fetchval("SELECT 42"), idempotent=False) == 42
            assert rejected == 1, "the proxy never refused a connection: the test proved nothing"
        finally:
            await db.close()
            proxy.close()
