"""A stand-in downstream receiver, run as its own process so tests can SIGKILL it.

Its store is a PostgreSQL database: each batch's rows and the stream position
commit in one transaction, exactly as a real receiver must. Event ids are
unique: a duplicate that reached apply is counted, so a test can prove none did.

    TF_RECV_DSN=... TF_RECV_PORT=... TF_RECV_STREAM=reservations python -m tests.support.pg_receiver
"""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg
import uvloop

from deploy.runtime import logs
from protocol.link import LinkSettings
from protocol.receiver import Receiver

SCHEMA = """
CREATE TABLE IF NOT EXISTS received (seq bigint PRIMARY KEY, event_id text UNIQUE NOT NULL,
                                     type text NOT NULL, data jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS position (stream text PRIMARY KEY, seq bigint NOT NULL);
CREATE TABLE IF NOT EXISTS duplicates (event_id text NOT NULL);
"""


class PgStore:
    def __init__(self, pool: asyncpg.Pool, stream: str) -> None:
        self.pool = pool
        self.stream = stream

    async def position(self) -> int:
        return await self.pool.fetchval("SELECT coalesce(max(seq), 0) FROM position WHERE stream = $1", self.stream)

    async def apply(self, events) -> None:
        import json

        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetch(
                """INSERT INTO received (seq, event_id, type, data)
                   SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[])
                   ON CONFLICT (event_id) DO NOTHING RETURNING event_id""",
                [e.seq for e in events], [e.id for e in events], [e.type for e in events],
                [json.dumps(e.data) for e in events],
            )
            if len(inserted) != len(events):
                got = {r["event_id"] for r in inserted}
                await conn.executemany("INSERT INTO duplicates VALUES ($1)",
                                       [(e.id,) for e in events if e.id not in got])
            await conn.execute(
                "INSERT INTO position VALUES ($1, $2) ON CONFLICT (stream) DO UPDATE SET seq = $2",
                self.stream, events[-1].seq)


async def main() -> None:
    pool = await asyncpg.create_pool(os.environ["TF_RECV_DSN"], min_size=1, max_size=4)
    await pool.execute(SCHEMA)
    stream = os.environ.get("TF_RECV_STREAM", "reservations")
    secret = os.environ.get("TF_RECV_SECRET", "ticketflow-dev-link-secret-change-me").encode()
    receiver = Receiver({stream: PgStore(pool, stream)}, LinkSettings(secret=secret, node="test-receiver"),
                        port=int(os.environ["TF_RECV_PORT"]))
    await receiver.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await receiver.stop()
    await pool.close()


if __name__ == "__main__":
    logs.configure("test-receiver")
    uvloop.run(main())
