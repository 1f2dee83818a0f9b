"""The inbox reads the reservation stream through the event contract: a malformed event is recorded, not a wall."""

import uuid

import pytest

from billing_daemon.store import BillingStore
from deploy.runtime.mysql import MariaDB, fetchall
from protocol.messages import Event
from tests.support.stack import fresh_mariadb_database

pytestmark = pytest.mark.stack


async def test_a_malformed_event_is_recorded_and_the_stream_moves_on():
    async with fresh_mariadb_database("tf_inbox") as dsn:
        db = MariaDB(dsn, max_size=2)
        store = BillingStore(db)
        try:
            await store.migrate()
            order = str(uuid.uuid4())
            created = {"id": order, "event_id": str(uuid.uuid4()), "user_id": "u", "status": "held", "seats": [],
                       "amount_minor": 100, "currency": "EUR", "created_at": "2027-01-01T00:00:00Z",
                       "expires_at": "2027-01-01T00:10:00Z"}
            batch = [
                Event(1, str(uuid.uuid4()), "reservation.created", "t", "2027-01-01T00:00:00Z",
                      {**created, "amount_minor": "one hundred"}),  # a producer bug: the wrong type
                Event(2, str(uuid.uuid4()), "reservation.created", "t", "2027-01-01T00:00:00Z", created),
                Event(3, str(uuid.uuid4()), "reservation.renamed", "t", "2027-01-01T00:00:00Z", {}),  # unknown type
            ]
            await store.apply_reservation_events("reservations", batch)
            assert await store.stream_position("reservations") == 3, "nothing blocks the stream"
            rows = await db.run(lambda c: fetchall(c, "SELECT seq, outcome FROM inbox_events ORDER BY seq"),
                                idempotent=True)
            assert [(r["seq"], r["outcome"]) for r in rows] == [(1, "malformed"), (2, "order_opened"), (3, "noted")]
            orders = await db.run(lambda c: fetchall(c, "SELECT id, amount_minor FROM orders"), idempotent=True)
            assert [(r["id"], r["amount_minor"]) for r in orders] == [(order, 100)]
        finally:
            await db.close()
