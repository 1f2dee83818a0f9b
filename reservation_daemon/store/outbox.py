"""The outbox stream to billing (numbering, read, head, acknowledgements, state) and pruning of old rows.

Writers insert outbox rows without a sequence number (tf_emit); the relay numbers committed
rows (tf_sequence_outbox) as it reads them, so the stream is gap-free and in commit order
without a lock shared by every writer (README, "Order of the reservation stream").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from deploy.runtime.pg import Database
from protocol.messages import Event

STREAM = "reservations"
SOURCE = "ticketflow/reservation"
SEQUENCE_BATCH = 10_000  # rows numbered per transaction outside reads (head, link down, pruning)


class OutboxStore:
    db: Database
    on_emit: list[Callable[[], None]]  # run after a commit that may have written outbox rows

    def emitted(self) -> None:
        """A transaction that wrote outbox rows committed: wake whoever relays them."""
        for callback in self.on_emit:
            callback()

    async def read_outbox(self, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` events after ``after`` in seq order; committed rows are numbered first (one round trip).

        Not in a transaction: the numbers are committed before the answer arrives.
        """
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT seq, event_id, type, data, created, correlation_id FROM tf_outbox_read($1, $2, $3)",
            STREAM, after, limit,
        ), idempotent=True)
        return [Event(r["seq"], str(r["event_id"]), r["type"], SOURCE, r["created"], r["data"], r["correlation_id"])
                for r in rows]

    async def outbox_head(self) -> int:
        """The stream's last seq, after numbering what has committed."""
        return await self.sequence_outbox()

    async def sequence_outbox(self, limit: int = SEQUENCE_BATCH) -> int:
        """Number up to ``limit`` committed rows; returns the stream's last seq."""
        return await self.db.run(lambda c: c.fetchval("SELECT tf_sequence_outbox($1, $2)", STREAM, limit),
                                 idempotent=True)

    # --- seat changes, read from the numbered stream (reservation_daemon.seatstream) -----------

    async def numbered_head(self) -> int:
        """The stream's last numbered seq, without numbering anything (a read, no lock)."""
        return await self.db.run(lambda c: c.fetchval(
            "SELECT last_seq FROM stream_heads WHERE stream = $1", STREAM), idempotent=True)

    async def numbered_after(self, after: int, limit: int) -> list[asyncpg.Record]:
        """(seq, type, data) of numbered events after ``after``, in seq order (the stream's own index)."""
        return await self.db.run(lambda c: c.fetch(
            "SELECT seq, type, data FROM outbox WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            STREAM, after, limit), idempotent=True)

    async def numbered_of_event(self, event_id: str, after: int, upto: int) -> list[asyncpg.Record] | None:
        """(seq, type, data) of one event's numbered events in (after, upto], or None if some are pruned."""
        async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record] | None:
            oldest = await conn.fetchval("SELECT min(seq) FROM outbox WHERE stream = $1 AND seq IS NOT NULL",
                                         STREAM)
            if after < upto and (oldest is None or oldest > after + 1):
                return None
            return await conn.fetch(
                "SELECT seq, type, data FROM outbox WHERE stream = $1 AND seq > $2 AND seq <= $3"
                " AND data->>'event_id' = $4 ORDER BY seq", STREAM, after, upto, event_id)
        return await self.db.run(fetch, idempotent=True)

    async def record_ack(self, seq: int) -> None:
        await self.db.run(lambda c: c.execute(
            "UPDATE stream_heads SET acked_seq = greatest(acked_seq, $2), acked_at = now() WHERE stream = $1",
            STREAM, seq), idempotent=True)

    async def stream_state(self) -> dict[str, Any]:
        """Head, acknowledged position and lag; rows committed but not numbered yet count as lag."""
        row = await self.db.run(lambda c: c.fetchrow(
            "SELECT h.last_seq, h.acked_seq, tf_time(h.acked_at) AS acked_at,"
            " (SELECT count(*) FROM outbox o WHERE o.stream = h.stream AND o.seq IS NULL) AS unsequenced"
            " FROM stream_heads h WHERE h.stream = $1", STREAM), idempotent=True)
        return {"stream": STREAM, "last_seq": row["last_seq"], "acked_seq": row["acked_seq"],
                "unsequenced": row["unsequenced"],
                "lag": row["last_seq"] - row["acked_seq"] + row["unsequenced"], "acked_at": row["acked_at"]}

    async def prune(self, retention_hours: float, idempotency_hours: float) -> tuple[int, int]:
        """Delete acknowledged outbox rows past retention and forgotten idempotency keys.

        Committed rows are numbered first, so "acknowledged" is judged against the stream as it
        is now; rows without a number are never deleted.
        """
        async def prune(conn: asyncpg.Connection) -> tuple[int, int]:
            await conn.fetchval("SELECT tf_sequence_outbox($1, $2)", STREAM, SEQUENCE_BATCH)
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
