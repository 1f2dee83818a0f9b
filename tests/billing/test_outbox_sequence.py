"""The payments stream's sequence, assigned by the relay (issue 13), on the real MariaDB.

Writers insert unnumbered outbox rows; ``Outbox.read``/``head`` number the committed ones
(billing_daemon/store/outbox.py). These tests check what that must keep: a gap-free stream
with each committed event exactly once, commit order where two events are ordered, writers
never waiting for the sequencer nor the sequencer for writers, retention never dropping an
unnumbered row, and the migration numbering the rows already there.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import aiomysql
import pytest

from billing_daemon.store import BillingStore
from billing_daemon.store.outbox import Outbox
from deploy.runtime.migrations import discover, split_statements
from deploy.runtime.mysql import MariaDB, connect_session, execute, fetchall, fetchval
from tests.helpers import wait_until
from tests.support.stack import fresh_mariadb_database

WRITERS = 16
PER_WRITER = 25


@pytest.fixture
async def db():
    async with fresh_mariadb_database("tf_outbox_seq") as dsn:
        database = MariaDB(dsn, max_size=WRITERS + 4)
        await BillingStore(database).migrate()
        await database.run(lambda c: execute(c, "CREATE TABLE test_orders (id INT PRIMARY KEY, n INT NOT NULL)"
                                                " ENGINE=InnoDB"), idempotent=True)
        await database.transaction(lambda c: execute(c, "INSERT INTO test_orders SELECT seq, 0 FROM seq_1_to_100"),
                                   idempotent=True)
        try:
            yield database
        finally:
            await database.close()


def checked_in(marker: str, order: int = 1) -> dict:
    """A valid ticket.checked_in payload whose ``id`` names the write that emitted it."""
    return {"id": marker, "order_id": str(order), "event_id": "e", "seat_id": "s", "seat_label": "A1",
            "checked_in_at": "2027-01-01T00:00:00Z"}


async def session(database: MariaDB) -> aiomysql.Connection:
    conn = await connect_session(database.dsn)
    await conn.autocommit(False)
    return conn


async def lock_and_emit(conn: aiomysql.Connection, outbox: Outbox, order: int, marker: str) -> None:
    """A payment-path writer's shape: lock the order's row, change it, emit last."""
    await conn.begin()
    await execute(conn, "SELECT n FROM test_orders WHERE id = %s FOR UPDATE", (order,))
    await execute(conn, "UPDATE test_orders SET n = n + 1 WHERE id = %s", (order,))
    await outbox.emit(conn, "ticket.checked_in", checked_in(marker, order))


async def numbered(database: MariaDB) -> list[dict]:
    return await database.run(lambda c: fetchall(
        c, "SELECT seq, JSON_VALUE(data, '$.id') AS marker FROM outbox WHERE seq IS NOT NULL ORDER BY seq"),
        idempotent=True)


async def waiting_for_a_lock(database: MariaDB, connection_id: int) -> bool:
    """The session is inside its FOR UPDATE (which cannot finish while another holds the row).

    The process list, not information_schema.innodb_trx: that is a cache refreshed only when
    it was not read for 0.1 s, so a tight poll would read the same stale copy for ever."""
    return bool(await database.run(lambda c: fetchval(
        c, "SELECT COUNT(*) FROM information_schema.processlist WHERE id = %s AND info LIKE '%%FOR UPDATE%%'",
        (connection_id,)), idempotent=True))


async def test_concurrent_writers_with_rollbacks_give_a_gap_free_stream_of_each_commit_once(db):
    outbox = Outbox(db)
    committed: list[str] = []
    rng = random.Random(13)

    class Abandon(Exception):
        pass

    async def writer(w: int) -> None:
        for i in range(PER_WRITER):
            marker, roll_back = f"{w}-{i}", rng.random() < 0.2
            order = rng.randint(1, 10)  # few orders: writers of one order wait for each other's lock

            async def write(conn: aiomysql.Connection, order=order, marker=marker, roll_back=roll_back) -> None:
                await execute(conn, "SELECT n FROM test_orders WHERE id = %s FOR UPDATE", (order,))
                await outbox.emit(conn, "ticket.checked_in", checked_in(marker, order))
                if roll_back:
                    raise Abandon()

            try:
                await db.transaction(write, idempotent=False)
                committed.append(marker)
            except Abandon:
                pass

    # The relay reads concurrently, as the sender does: each read resumes after the last seq it got.
    received: list = []
    writing = asyncio.gather(*(writer(w) for w in range(WRITERS)))

    async def relay() -> None:
        while True:
            finished = writing.done()  # before the read: a read after the last commit ends the loop
            batch = await outbox.read(received[-1].seq if received else 0, 64)
            received.extend(batch)
            if not batch:
                if finished:
                    return
                await asyncio.sleep(0.005)  # the sender's poll interval, not a synchronisation

    await asyncio.gather(writing, relay())
    seqs = [e.seq for e in received]
    assert seqs == list(range(1, len(seqs) + 1)), "the stream has a gap or a repeat"
    assert sorted(e.data["id"] for e in received) == sorted(committed), "a committed event missing or doubled"
    assert 0 < len(committed) < WRITERS * PER_WRITER, "the run must commit some writes and roll some back"
    assert await outbox.head() == len(committed)
    state = await outbox.state()
    assert state["unsequenced"] == 0 and state["last_seq"] == len(committed)


async def test_a_sequencer_numbers_committed_rows_only_and_neither_side_waits_for_the_other(db):
    outbox = Outbox(db)
    open_writer, other, sequencer = await session(db), await session(db), await session(db)
    try:
        # A writer inserts first (smaller id) and stays open.
        await lock_and_emit(open_writer, outbox, 1, "early-insert-late-commit")
        # A sequencer holding the head's lock (a second relay mid-batch) does not hold up writers:
        await sequencer.begin()
        await execute(sequencer, "SELECT last_seq FROM stream_heads WHERE stream = 'payments' FOR UPDATE")
        await asyncio.wait_for(lock_and_emit(other, outbox, 2, "late-insert-early-commit"), 5)
        await asyncio.wait_for(other.commit(), 5)
        await sequencer.rollback()
        # ... and numbering does not wait for the open writer: it numbers what is committed.
        assert await asyncio.wait_for(outbox.head(), 5) == 1
        assert [r["marker"] for r in await numbered(db)] == ["late-insert-early-commit"]
        assert (await outbox.state())["lag"] == 1, "numbered, not yet acknowledged"
        await open_writer.commit()
        assert (await outbox.state())["lag"] == 2, "the committed, unnumbered row counts in the lag"
        events = await outbox.read(0, 10)
        assert [(e.seq, e.data["id"]) for e in events] == [(1, "late-insert-early-commit"),
                                                           (2, "early-insert-late-commit")]
    finally:
        for conn in (open_writer, other, sequencer):
            conn.close()


async def test_two_events_of_one_order_come_out_in_commit_order(db):
    outbox = Outbox(db)
    first, second, unrelated = await session(db), await session(db), await session(db)
    try:
        await lock_and_emit(first, outbox, 7, "first")
        second_id = await fetchval(second, "SELECT CONNECTION_ID()")
        waiting = asyncio.create_task(lock_and_emit(second, outbox, 7, "second"))  # waits for order 7's lock
        await wait_until(lambda: waiting_for_a_lock(db, second_id), 10,
                         "the second writer waiting for the order's row lock")
        await lock_and_emit(unrelated, outbox, 8, "unrelated")
        await unrelated.commit()
        await first.commit()
        await asyncio.wait_for(waiting, 10)
        await second.commit()
        events = await outbox.read(0, 10)  # all three in one sequencing batch
        order = [e.data["id"] for e in events]
        assert [e.seq for e in events] == [1, 2, 3]
        assert order.index("first") < order.index("second"), order
    finally:
        for conn in (first, second, unrelated):
            conn.close()


async def test_retention_never_drops_a_row_the_relay_has_not_numbered(db):
    outbox = Outbox(db)
    for marker in ("a", "b"):
        await db.transaction(lambda c, m=marker: outbox.emit(c, "ticket.checked_in", checked_in(m)),
                             idempotent=False)
    assert await outbox.head() == 2
    await outbox.record_ack(2)
    await db.transaction(lambda c: outbox.emit(c, "ticket.checked_in", checked_in("c")), idempotent=False)
    assert await outbox.prune(0) == 2
    rows = await db.run(lambda c: fetchall(c, "SELECT seq, JSON_VALUE(data, '$.id') AS marker FROM outbox"),
                        idempotent=True)
    assert rows == [{"seq": None, "marker": "c"}]
    assert [(e.seq, e.data["id"]) for e in await outbox.read(2, 10)] == [(3, "c")]


async def test_the_migration_keeps_the_numbers_of_rows_written_before_it():
    async with fresh_mariadb_database("tf_outbox_mig") as dsn:
        database = MariaDB(dsn)
        try:
            async def before_0007(conn: aiomysql.Connection) -> None:
                await execute(conn, "CREATE TABLE schema_migrations (version INT PRIMARY KEY, name VARCHAR(200)"
                                    " NOT NULL, applied_at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB")
                for migration in discover("billing_daemon.migrations"):
                    if migration.version < 7:
                        for statement in split_statements(migration.sql):
                            await execute(conn, statement)
                        await execute(conn, "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                      (migration.version, migration.name))
                for seq in (2, 3, 1):  # written by the old emit: numbered, head at 3, 1 acknowledged
                    await execute(conn, "INSERT INTO outbox (stream, seq, event_id, type, data, created_at)"
                                        " VALUES ('payments', %s, %s, 'ticket.checked_in', %s, NOW(6))",
                                  (seq, str(uuid.uuid4()), f'{{"id": "old-{seq}"}}'))
                await execute(conn, "UPDATE stream_heads SET last_seq = 3, acked_seq = 1")
                await conn.commit()

            await database.run(before_0007, idempotent=False)
            assert (await BillingStore(database).migrate())[0] == "0007_outbox_sequenced_by_relay"  # later ones follow
            outbox = Outbox(database)
            await database.transaction(lambda c: outbox.emit(c, "ticket.checked_in", checked_in("new")),
                                       idempotent=False)
            assert [(e.seq, e.data["id"]) for e in await outbox.read(0, 10)] == [
                (1, "old-1"), (2, "old-2"), (3, "old-3"), (4, "new")]
            assert (await outbox.state())["lag"] == 3
        finally:
            await database.close()

