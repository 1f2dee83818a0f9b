"""Inbox.apply decides a whole batch in a few statements (issue 13): a batch mixing every kind of event
gets exactly the outcomes and order states that applying its events one at a time gives."""

import uuid

import pytest

from billing_daemon.store import BillingStore
from deploy.runtime.mysql import MariaDB, execute, fetchall
from protocol.messages import Event
from tests.support.stack import fresh_mariadb_database

pytestmark = pytest.mark.stack

STREAM = "reservations"
AT = "2027-01-01T00:00:00Z"


def created(order: str, **changes) -> dict:
    return {"id": order, "event_id": "e", "user_id": "u", "status": "held", "seats": [{"id": "s"}],
            "amount_minor": 100, "currency": "EUR", "created_at": AT, "expires_at": "2027-01-01T00:10:00Z",
            **changes}


def change(order: str, kind: str) -> dict:
    at = {"reservation.cancelled": "cancelled_at", "reservation.expired": "expired_at",
          "reservation.confirmed": "confirmed_at"}[kind]
    extra = {"amount_minor": 100, "currency": "EUR"} if kind == "reservation.confirmed" else {}
    return {"reservation_id": order, "event_id": "e", "user_id": "u", "seat_ids": ["s"], at: AT, **extra}


class Orders:
    def __init__(self) -> None:
        self.a, self.b, self.c, self.paid, self.failed, self.released = (str(uuid.uuid4()) for _ in range(6))


def history(o: Orders) -> tuple[list[Event], list[Event]]:
    """The set-up batch (orders to be made paid and failed), then the batch under test."""
    setup = [Event(1, str(uuid.uuid4()), "reservation.created", "t", AT, created(o.paid)),
             Event(2, str(uuid.uuid4()), "reservation.created", "t", AT, created(o.failed))]
    first_a = str(uuid.uuid4())
    kinds = [
        ("reservation.created", created(o.a), first_a),
        ("reservation.created", created(o.b), None),
        ("reservation.cancelled", change(o.a, "reservation.cancelled"), None),   # cancels A
        ("reservation.expired", change(o.a, "reservation.expired"), None),       # A is already cancelled
        ("reservation.created", created(o.a), first_a),                          # a copy of an applied id
        ("reservation.cancelled", change(o.c, "reservation.cancelled"), None),   # no such order
        ("reservation.created", created(str(uuid.uuid4()), amount_minor="ten"), None),  # malformed
        ("reservation.renamed", {}, None),                                       # unknown type
        ("reservation.confirmed", change(o.b, "reservation.confirmed"), None),   # noted
        ("reservation.cancelled", change(o.paid, "reservation.cancelled"), None),  # paid: kept
        ("reservation.created", created(o.released), None),                      # released before it came
        ("reservation.expired", change(o.failed, "reservation.expired"), None),  # failed: cancelled
        ("reservation.cancelled", change(o.b, "reservation.cancelled"), None),   # B, opened in this batch
    ]
    batch = [Event(3 + i, event_id or str(uuid.uuid4()), kind, "t", AT, data)
             for i, (kind, data, event_id) in enumerate(kinds)]
    return setup, batch


async def run(dsn: str, o: Orders, one_at_a_time: bool) -> tuple[list, dict, int]:
    db = MariaDB(dsn, max_size=2)
    store = BillingStore(db)
    try:
        await store.migrate()
        setup, batch = history(o)
        await store.apply_reservation_events(STREAM, setup)
        await db.transaction(lambda c: execute(c, "UPDATE orders SET status = IF(id = %s, 'paid', 'failed')"
                                                  " WHERE id IN (%s, %s)", (o.paid, o.paid, o.failed)),
                             idempotent=True)
        assert await store.inbox.release_check([o.released]) == {o.released: "released"}
        if one_at_a_time:
            for event in batch:
                await store.apply_reservation_events(STREAM, [event])
        else:
            await store.apply_reservation_events(STREAM, batch)
        await store.apply_reservation_events(STREAM, batch)  # the whole batch re-sent: changes nothing
        rows = await db.run(lambda c: fetchall(c, "SELECT seq, type, outcome FROM inbox_events ORDER BY seq"),
                            idempotent=True)
        orders = await db.run(lambda c: fetchall(c, "SELECT id, status FROM orders"), idempotent=True)
        return ([(r["seq"], r["type"], r["outcome"]) for r in rows], {r["id"]: r["status"] for r in orders},
                await store.stream_position(STREAM))
    finally:
        await db.close()


async def test_a_mixed_batch_has_the_outcomes_of_its_events_applied_one_by_one():
    o = Orders()
    async with fresh_mariadb_database("tf_inbox_batch") as batched, \
            fresh_mariadb_database("tf_inbox_single") as single:
        together = await run(batched, o, one_at_a_time=False)
        alone = await run(single, o, one_at_a_time=True)
    assert together == alone
    outcomes, orders, position = together
    assert position == 15
    assert outcomes == [
        (1, "reservation.created", "order_opened"),
        (2, "reservation.created", "order_opened"),
        (3, "reservation.created", "order_opened"),
        (4, "reservation.created", "order_opened"),
        (5, "reservation.cancelled", "order_cancelled"),
        (6, "reservation.expired", "order_cancelled_kept"),
        # 7: the same event id as 3, applied already: no second record, no effect
        (8, "reservation.cancelled", "unknown_order"),
        (9, "reservation.created", "malformed"),
        (10, "reservation.renamed", "noted"),
        (11, "reservation.confirmed", "noted"),
        (12, "reservation.cancelled", "order_paid_kept"),
        (13, "reservation.created", "order_opened_released"),
        (14, "reservation.expired", "order_cancelled"),
        (15, "reservation.cancelled", "order_cancelled"),
    ]
    assert orders == {o.a: "cancelled", o.b: "cancelled", o.paid: "paid", o.failed: "cancelled",
                      o.released: "cancelled"}


async def test_a_batch_larger_than_one_insert_statement_opens_every_order():
    """More events than INSERT_ROWS: the multi-row INSERTs are split, and every order and record lands."""
    from billing_daemon.store.inbox import INSERT_ROWS

    count = INSERT_ROWS * 2 + 7
    async with fresh_mariadb_database("tf_inbox_big") as dsn:
        db = MariaDB(dsn, max_size=2)
        store = BillingStore(db)
        try:
            await store.migrate()
            ids = [str(uuid.uuid4()) for _ in range(count)]
            await store.apply_reservation_events(STREAM, [
                Event(i + 1, str(uuid.uuid4()), "reservation.created", "t", AT, created(order))
                for i, order in enumerate(ids)])
            assert await store.stream_position(STREAM) == count
            rows = await db.run(lambda c: fetchall(
                c, "SELECT (SELECT count(*) FROM orders WHERE status = 'pending') AS orders,"
                   " (SELECT count(*) FROM inbox_events WHERE outcome = 'order_opened') AS records"),
                idempotent=True)
            assert rows == [{"orders": count, "records": count}]
        finally:
            await db.close()
