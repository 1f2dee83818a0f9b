"""Inbox.apply takes a batch past the position as all new and looks ids up only when the primary key
says one was applied before (issue 13); released holds are probed, not looked up per order. These
pin that the shortcuts change no outcome, in the cases where they must step aside."""

import uuid

import pytest

from billing_daemon.store import BillingStore
from billing_daemon.store.inbox import INSERT_ROWS
from deploy.runtime.mysql import MariaDB, fetchall
from protocol.messages import Event
from tests.billing.test_inbox_batches import AT, STREAM, created
from tests.support.stack import fresh_mariadb_database

pytestmark = pytest.mark.stack


def opened(seq: int, order: str, event_id: str | None = None) -> Event:
    return Event(seq, event_id or str(uuid.uuid4()), "reservation.created", "t", AT, created(order))


async def with_store(prefix: str, body) -> None:
    async with fresh_mariadb_database(prefix) as dsn:
        db = MariaDB(dsn, max_size=2)
        store = BillingStore(db)
        try:
            await store.migrate()
            await body(store, db)
        finally:
            await db.close()


async def query(db: MariaDB, sql: str, args=None) -> list[dict]:
    return await db.run(lambda c: fetchall(c, sql, args), idempotent=True)


async def test_an_applied_id_deep_in_a_big_batch_undoes_the_optimistic_inserts_and_is_skipped():
    """The re-sent id sits in the batch's third INSERT statement: the statements before it (orders and
    records) already ran when the primary key refuses it; the batch is decided again from scratch."""
    async def body(store: BillingStore, db: MariaDB) -> None:
        first = opened(1, str(uuid.uuid4()))
        await store.apply_reservation_events(STREAM, [first])
        count = INSERT_ROWS * 2 + 50
        orders = [str(uuid.uuid4()) for _ in range(count)]
        batch = [opened(i + 2, order) for i, order in enumerate(orders)]
        copy_at = INSERT_ROWS * 2 + 10
        batch[copy_at] = opened(copy_at + 2, orders[copy_at], event_id=first.id)  # an applied id, new seq
        await store.apply_reservation_events(STREAM, batch)

        assert await store.stream_position(STREAM) == count + 1
        rows = await query(db, "SELECT (SELECT count(*) FROM orders) AS orders,"
                               " (SELECT count(*) FROM inbox_events) AS records,"
                               " (SELECT count(*) FROM orders WHERE id = %s) AS copied,"
                               " (SELECT seq FROM inbox_events WHERE event_id = %s) AS seq",
                           (orders[copy_at], first.id))
        # every order but the copy's opened once, one record each, the copy's id still at seq 1
        assert rows == [{"orders": count, "records": count, "copied": 0, "seq": 1}]

    await with_store("tf_inbox_unseen", body)


async def test_a_batch_repeating_an_id_of_its_own_applies_the_first_copy_only():
    async def body(store: BillingStore, db: MariaDB) -> None:
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        first = opened(1, a)
        await store.apply_reservation_events(STREAM, [first, opened(2, b), opened(3, str(uuid.uuid4()), first.id)])
        assert await store.stream_position(STREAM) == 3
        assert [r["id"] for r in await query(db, "SELECT id FROM orders ORDER BY id")] == sorted([a, b])
        assert await query(db, "SELECT seq FROM inbox_events ORDER BY seq") == [{"seq": 1}, {"seq": 2}]

    await with_store("tf_inbox_twice", body)


async def test_a_release_of_another_order_neither_cancels_nor_is_consumed_by_the_batch():
    """released_holds is not empty: the batch's orders are looked up, and only theirs are taken."""
    async def body(store: BillingStore, db: MariaDB) -> None:
        elsewhere, released, kept = (str(uuid.uuid4()) for _ in range(3))
        assert await store.inbox.release_check([elsewhere, released]) == {elsewhere: "released",
                                                                          released: "released"}
        await store.apply_reservation_events(STREAM, [opened(1, kept), opened(2, released)])
        rows = await query(db, "SELECT seq, outcome FROM inbox_events ORDER BY seq")
        assert rows == [{"seq": 1, "outcome": "order_opened"}, {"seq": 2, "outcome": "order_opened_released"}]
        statuses = {r["id"]: r["status"] for r in await query(db, "SELECT id, status FROM orders")}
        assert statuses == {kept: "pending", released: "cancelled"}
        assert await query(db, "SELECT order_id FROM released_holds") == [{"order_id": elsewhere}]

    await with_store("tf_inbox_released", body)
