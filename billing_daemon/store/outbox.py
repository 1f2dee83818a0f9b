"""The payments stream's outbox: rows appended by writers, numbered, read, acked and pruned by the relay.

How the sequence is assigned (issue 13). Writers insert rows WITHOUT a sequence number
(``seq`` NULL): one INSERT, no shared row held to commit, so payments, refunds and
check-ins of different orders no longer serialise on the stream's head. The single
active relay numbers them (:meth:`Outbox.sequence`, run by ``read`` and ``head``) in
one READ COMMITTED transaction:

1. ``SELECT ... FROM stream_heads ... FOR UPDATE`` — serialises sequencers only (two
   relays overlapping briefly); no writer touches this row any more;
2. ``SELECT id FROM outbox WHERE seq IS NULL ORDER BY id LIMIT n`` — a consistent,
   non-locking read: it sees only committed rows and never waits for (nor blocks) a
   writer's insert, and READ COMMITTED takes no gap locks;
3. one UPDATE numbering those rows last_seq+1.. in id order, then last_seq advanced.

Why that is commit order wherever order matters. A read sees every transaction that
committed before it, so each row numbered in a later batch committed after every row of
the earlier batches (had it committed earlier, the earlier read would have seen it).
Within a batch the order is the AUTO_INCREMENT id, taken when the row is inserted: a
writer that saw another's committed change — by waiting for its row lock, or by reading
it — inserts after that commit, so after the other's insert, and gets a larger id. That
holds because ``emit`` is called LAST in the writer's transaction, after its row locks.
Rows of unrelated orders may be numbered in id rather than commit order; nothing can
observe the difference.

The sequence on the wire stays gap-free: one transaction gives k rows k consecutive
numbers, and only numbered rows are ever read.

Fencing (issue 12): the relay is picked by a lease (billing_daemon/store/lease.py) whose
every take bumps an epoch and writes it to ``stream_heads.relay_epoch``. A relay numbers
only under its own epoch (``Outbox.epoch``, checked in step 1 under the row lock): a
deposed relay's late numbering raises :class:`Fenced` and numbers nothing, so two relays
never interleave numbers. Under Galera the take and the sequencer both write that row, so
certification orders them cluster-wide. AUTO_INCREMENT ids are time
ordered only within one node (``auto_increment_offset`` interleaves nodes): every writer
must reach the cluster through one writer node, as billing_daemon/streams.py already asks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiomysql
import structlog

from deploy.runtime import correlation, events
from deploy.runtime.ids import uuid7
from deploy.runtime.mysql import MariaDB, execute, fetchall, fetchone, fetchval
from deploy.runtime.times import rfc3339
from protocol.messages import Event

log = structlog.get_logger("billing.outbox")

OUT_STREAM = "payments"
SOURCE = "ticketflow/billing"
SEQUENCE_BATCH = 1000  # rows numbered per sequencing transaction at most (bounds the UPDATE's size)
# Seconds the server lets the relay's numbering transaction sit idle before ending it (and the
# session): a relay frozen mid-transaction (SIGSTOP, a VM pause) would otherwise hold the
# stream's head row, and with it the next relay's lease take and numbering, until it woke.
SEQUENCER_IDLE_TIMEOUT = 1


class Fenced(RuntimeError):
    """The relay lease moved to another epoch: this process may no longer number the stream."""


class Outbox:
    def __init__(self, db: MariaDB) -> None:
        self.db = db
        # The relay lease's epoch this process numbers under (set when its relay takes the
        # lease); None: unfenced, for tools and tests that number directly.
        self.epoch: int | None = None
        self.on_emit: list[Callable[[], None]] = []  # run after a commit that wrote rows (wakes the relay)
        self._numbered = 0  # the highest seq this process knows is assigned (a lower bound of last_seq)

    async def emit(self, conn: aiomysql.Connection, kind: str, data: dict[str, Any]) -> None:
        """Append to the stream in the caller's transaction (one INSERT; the relay numbers the row).

        Call it LAST, just before commit, after every row lock the transaction takes: the
        row's AUTO_INCREMENT id, taken here, is what orders it among rows committed in the
        same sequencing batch, and it agrees with commit order only for writers that insert
        after the locks (and reads) that order them (see the module's docstring).
        The row keeps the correlation id of what this task is doing (the request, or the
        reservation event being applied): README, "Tracing".
        """
        data = events.validated(kind, data)  # the contract every consumer reads (deploy/runtime/events.py)
        await execute(conn, "INSERT INTO outbox (stream, event_id, type, data, created_at, correlation_id)"
                            " VALUES (%s, %s, %s, %s, NOW(6), %s)",
                      (OUT_STREAM, str(uuid7()), kind, json.dumps(data), correlation.current()))
        # A trace step; logged inside the transaction (a rollback after it leaves this line alone).
        log.info("event_emitted", type=kind, order_id=data.get("order_id"))

    def emitted(self) -> None:
        """Tell the relay (after the commit) that new rows may exist."""
        for callback in self.on_emit:
            callback()

    async def _sequence(self, conn: aiomysql.Connection, limit: int) -> int:
        """Number up to ``limit`` committed, unnumbered rows in id order; returns the stream's last_seq."""
        await conn.rollback()  # a pooled session may hold a read's open transaction: SET would refuse
        fenced = self.epoch is not None
        if fenced:  # a relay paused inside this transaction must not hold the head (and every lease take)
            await execute(conn, f"SET SESSION idle_transaction_timeout = {SEQUENCER_IDLE_TIMEOUT}")
        await execute(conn, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED")  # the next transaction only
        await conn.begin()
        try:
            head = await fetchone(conn, "SELECT last_seq, relay_epoch FROM stream_heads WHERE stream = %s FOR UPDATE",
                                  (OUT_STREAM,))
            if self.epoch is not None and head["relay_epoch"] != self.epoch:
                raise Fenced(f"the relay lease is at epoch {head['relay_epoch']}, this relay's is {self.epoch}")
            last = int(head["last_seq"])
            ids = [r["id"] for r in await fetchall(
                conn, "SELECT id FROM outbox FORCE INDEX (outbox_unsequenced) WHERE stream = %s AND seq IS NULL"
                      " ORDER BY id LIMIT %s", (OUT_STREAM, limit))]
            if ids:
                cases = " ".join(["WHEN %s THEN %s"] * len(ids))
                numbered = [v for n, row_id in enumerate(ids, start=last + 1) for v in (row_id, n)]
                placeholders = ", ".join(["%s"] * len(ids))
                changed = await execute(conn, f"UPDATE outbox SET seq = CASE id {cases} END"
                                              f" WHERE id IN ({placeholders}) AND seq IS NULL", (*numbered, *ids))
                if changed != len(ids):  # impossible under the head's lock; never commit a gap
                    raise RuntimeError(f"numbered {changed} of {len(ids)} outbox rows")
                last += len(ids)
                await execute(conn, "UPDATE stream_heads SET last_seq = %s WHERE stream = %s", (last, OUT_STREAM))
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        if fenced:  # the pooled session goes back to other work without the sequencer's limit
            await execute(conn, "SET SESSION idle_transaction_timeout = DEFAULT")
        self._numbered = max(self._numbered, last)
        return last

    async def sequence(self, limit: int = SEQUENCE_BATCH) -> int:
        """Number pending rows (the relay's job; see the module's docstring); returns last_seq."""
        return await self.db.run(lambda c: self._sequence(c, limit), idempotent=True)

    async def read(self, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` events after ``after`` in sequence order, numbering pending rows first
        unless enough rows past ``after`` are numbered already."""
        async def read(conn: aiomysql.Connection) -> list[dict[str, Any]]:
            if after + limit > self._numbered:
                await self._sequence(conn, max(limit, SEQUENCE_BATCH))
            return await fetchall(
                conn, "SELECT seq, event_id, type, data, created_at, correlation_id FROM outbox"
                      " WHERE stream = %s AND seq > %s ORDER BY seq LIMIT %s", (OUT_STREAM, after, limit))

        rows = await self.db.run(read, idempotent=True)
        return [Event(r["seq"], r["event_id"], r["type"], SOURCE, rfc3339(r["created_at"]), json.loads(r["data"]),
                      r["correlation_id"]) for r in rows]

    async def head(self) -> int:
        """The stream's last sequence number, after numbering what is pending."""
        return await self.sequence()

    async def record_ack(self, seq: int) -> None:
        async def record(conn: aiomysql.Connection) -> None:
            # The same row as the lease's take: a relay frozen between this UPDATE and its commit
            # would hold every take (on one server) for as long as it is frozen, so the fenced
            # relay bounds this transaction like the sequencer's.
            fenced = self.epoch is not None
            if fenced:
                await conn.rollback()
                await execute(conn, f"SET SESSION idle_transaction_timeout = {SEQUENCER_IDLE_TIMEOUT}")
            await execute(conn, "UPDATE stream_heads SET acked_seq = GREATEST(acked_seq, %s), acked_at = NOW(6)"
                                " WHERE stream = %s", (seq, OUT_STREAM))
            await conn.commit()
            if fenced:
                await execute(conn, "SET SESSION idle_transaction_timeout = DEFAULT")

        await self.db.run(record, idempotent=True)

    async def state(self) -> dict[str, Any]:
        """The stream's head, its acknowledged position and its lag: numbered rows not yet
        acknowledged plus committed rows the relay has not numbered yet."""
        async def state(conn: aiomysql.Connection) -> dict[str, Any]:
            row = await fetchone(conn, "SELECT last_seq, acked_seq FROM stream_heads WHERE stream = %s",
                                 (OUT_STREAM,))
            pending = await fetchval(conn, "SELECT COUNT(*) FROM outbox FORCE INDEX (outbox_unsequenced)"
                                           " WHERE stream = %s AND seq IS NULL", (OUT_STREAM,))
            await conn.commit()
            return {**row, "pending": int(pending)}

        s = await self.db.run(state, idempotent=True)
        return {"stream": OUT_STREAM, "last_seq": s["last_seq"], "acked_seq": s["acked_seq"],
                "unsequenced": s["pending"], "lag": s["last_seq"] - s["acked_seq"] + s["pending"]}

    async def prune(self, retention_hours: float) -> int:
        """Drop acknowledged rows older than the retention (kept that long for replays). Rows not
        numbered yet are never dropped (``seq <= acked_seq`` is not true of a NULL seq)."""
        async def prune(conn: aiomysql.Connection) -> int:
            deleted = await execute(conn, "DELETE o FROM outbox o JOIN stream_heads h ON h.stream = o.stream"
                                          " WHERE o.seq IS NOT NULL AND o.seq <= h.acked_seq"
                                          " AND o.created_at < NOW(6) - INTERVAL %s SECOND",
                                    (int(retention_hours * 3600),))
            await conn.commit()
            return deleted

        return await self.db.run(prune, idempotent=True)
