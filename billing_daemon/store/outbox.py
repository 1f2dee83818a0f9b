"""The payments stream's outbox: rows appended in the writer's transaction, read, acked and pruned by the relay."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiomysql

from deploy.runtime import events
from deploy.runtime.ids import uuid7
from deploy.runtime.mysql import MariaDB, execute, fetchall, fetchone, fetchval
from deploy.runtime.times import rfc3339
from protocol.messages import Event

OUT_STREAM = "payments"
SOURCE = "ticketflow/billing"


class Outbox:
    def __init__(self, db: MariaDB) -> None:
        self.db = db
        self.on_emit: list[Callable[[], None]] = []  # run after a commit that wrote rows (wakes the relay)

    async def emit(self, conn: aiomysql.Connection, kind: str, data: dict[str, Any]) -> int:
        """Append to the stream in the caller's transaction; the row lock keeps seqs gap-free.

        Call it LAST, just before commit: the stream_heads row lock it takes serialises every
        writer of the stream until commit, so anything after it is time all of them wait.
        """
        data = events.validated(kind, data)  # the contract every consumer reads (deploy/runtime/events.py)
        await execute(conn, "UPDATE stream_heads SET last_seq = LAST_INSERT_ID(last_seq + 1) WHERE stream = %s",
                      (OUT_STREAM,))
        seq = await fetchval(conn, "SELECT LAST_INSERT_ID()")
        await execute(conn, "INSERT INTO outbox (stream, seq, event_id, type, data, created_at)"
                            " VALUES (%s, %s, %s, %s, %s, NOW(6))",
                      (OUT_STREAM, seq, str(uuid7()), kind, json.dumps(data)))
        return seq

    def emitted(self) -> None:
        """Tell the relay (after the commit) that new rows may exist."""
        for callback in self.on_emit:
            callback()

    async def read(self, after: int, limit: int) -> list[Event]:
        rows = await self.db.run(lambda c: fetchall(
            c, "SELECT seq, event_id, type, data, created_at FROM outbox WHERE stream = %s AND seq > %s"
               " ORDER BY seq LIMIT %s", (OUT_STREAM, after, limit)), idempotent=True)
        return [Event(r["seq"], r["event_id"], r["type"], SOURCE, rfc3339(r["created_at"]), json.loads(r["data"]))
                for r in rows]

    async def head(self) -> int:
        return int(await self.db.run(lambda c: fetchval(
            c, "SELECT last_seq FROM stream_heads WHERE stream = %s", (OUT_STREAM,)), idempotent=True))

    async def record_ack(self, seq: int) -> None:
        async def record(conn: aiomysql.Connection) -> None:
            await execute(conn, "UPDATE stream_heads SET acked_seq = GREATEST(acked_seq, %s), acked_at = NOW(6)"
                                " WHERE stream = %s", (seq, OUT_STREAM))
            await conn.commit()

        await self.db.run(record, idempotent=True)

    async def state(self) -> dict[str, Any]:
        row = await self.db.run(lambda c: fetchone(
            c, "SELECT last_seq, acked_seq FROM stream_heads WHERE stream = %s", (OUT_STREAM,)), idempotent=True)
        return {"stream": OUT_STREAM, "last_seq": row["last_seq"], "acked_seq": row["acked_seq"],
                "lag": row["last_seq"] - row["acked_seq"]}

    async def prune(self, retention_hours: float) -> int:
        """Drop acknowledged rows older than the retention (kept that long for replays)."""
        async def prune(conn: aiomysql.Connection) -> int:
            deleted = await execute(conn, "DELETE o FROM outbox o JOIN stream_heads h ON h.stream = o.stream"
                                          " WHERE o.seq <= h.acked_seq AND o.created_at < NOW(6) - INTERVAL %s SECOND",
                                    (int(retention_hours * 3600),))
            await conn.commit()
            return deleted

        return await self.db.run(prune, idempotent=True)
