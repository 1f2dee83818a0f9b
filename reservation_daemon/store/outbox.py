"""The outbox stream to billing (read, head, acknowledgements, state) and pruning of old rows."""

from __future__ import annotations

from typing import Any

import asyncpg

from deploy.runtime.pg import Database
from protocol.messages import Event

STREAM = "reservations"
SOURCE = "ticketflow/reservation"


class OutboxStore:
    db: Database

    async def read_outbox(self, after: int, limit: int) -> list[Event]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT seq, event_id, type, data, tf_time(created_at) AS time FROM outbox"
            " WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3", STREAM, after, limit,
        ), idempotent=True)
        return [Event(r["seq"], str(r["event_id"]), r["type"], SOURCE, r["time"], r["data"]) for r in rows]

    async def outbox_head(self) -> int:
        return await self.db.run(
            lambda c: c.fetchval("SELECT last_seq FROM stream_heads WHERE stream = $1", STREAM), idempotent=True)

    async def record_ack(self, seq: int) -> None:
        await self.db.run(lambda c: c.execute(
            "UPDATE stream_heads SET acked_seq = greatest(acked_seq, $2), acked_at = now() WHERE stream = $1",
            STREAM, seq), idempotent=True)

    async def stream_state(self) -> dict[str, Any]:
        row = await self.db.run(lambda c: c.fetchrow(
            "SELECT last_seq, acked_seq, tf_time(acked_at) AS acked_at FROM stream_heads WHERE stream = $1", STREAM),
            idempotent=True)
        return {"stream": STREAM, "last_seq": row["last_seq"], "acked_seq": row["acked_seq"],
                "lag": row["last_seq"] - row["acked_seq"], "acked_at": row["acked_at"]}

    async def prune(self, retention_hours: float, idempotency_hours: float) -> tuple[int, int]:
        """Delete acknowledged outbox rows past retention and forgotten idempotency keys."""
        async def prune(conn: asyncpg.Connection) -> tuple[int, int]:
            outbox = await conn.execute(
                """
                DELETE FROM outbox o USING stream_heads h
                 WHERE o.stream = h.stream AND o.seq <= h.acked_seq
                   AND o.created_at < now() - make_interval(secs => $1)
                """, retention_hours * 3600)
            keys = await conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
                idempotency_hours * 3600)
            return int(outbox.split()[-1]), int(keys.split()[-1])

        return await self.db.run(prune, idempotent=True)
