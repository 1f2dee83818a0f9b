"""tf_reserve's answers, read at the SQL level (issue 13 made it build its body from values in hand).

The held body must be exactly what tf_reservation_json reads back and what the outbox carries,
and every refusal keeps its outcome and body.
"""

import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from reservation_daemon.store import Section
from tests.reservation.test_sequencing import store  # noqa: F401  (fixture)

pytestmark = pytest.mark.stack

RESERVE = ("SELECT outcome, body FROM tf_reserve($1, $2, $3, $4, make_interval(secs => 600), $5, $6, $7)")


async def _event(store, sections, organizer="org-7") -> tuple[uuid.UUID, list[asyncpg.Record]]:  # noqa: F811
    event_id = uuid.uuid4()
    answer = await store.create_event(event_id, "Body", "Hall", datetime(2030, 1, 1, tzinfo=UTC), "",
                                      sections, organizer_id=organizer)
    assert answer.name == "event_created", answer
    conn = await asyncpg.connect(store.dsn)
    try:
        return event_id, await conn.fetch("SELECT id, label FROM seats WHERE event_id = $1 ORDER BY label", event_id)
    finally:
        await conn.close()


@pytest.fixture
async def conn(store):  # noqa: F811
    c = await asyncpg.connect(store.dsn)
    await c.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        yield c
    finally:
        await c.close()


async def test_the_held_body_is_what_tf_reservation_json_reads_back_and_what_the_outbox_carries(store, conn):  # noqa: F811
    event_id, seats = await _event(store, [Section("A", 2, 3, 1500, "EUR"), Section("B", 1, 2, 900, "EUR")])
    # Seats named against label order and across sections: the body lists them by label.
    picked = [seats[6]["id"], seats[0]["id"], seats[4]["id"]]
    for event in (event_id, None):
        rid = uuid.uuid4()
        outcome, body = await conn.fetchrow(RESERVE, rid, event, picked, "buyer-1", None, None, None)
        assert outcome == "held"
        assert body == await conn.fetchval("SELECT tf_reservation_json($1)", rid)
        assert body == await conn.fetchval("SELECT data FROM outbox WHERE data->>'id' = $1", str(rid))
        assert body["organizer_id"] == "org-7" and [s["label"] for s in body["seats"]] == sorted(
            s["label"] for s in seats if s["id"] in picked)
        assert body["amount_minor"] == 1500 + 1500 + 900
        await conn.execute("UPDATE seats SET status = 'available', reservation_id = NULL WHERE id = ANY ($1)",
                           picked)
    # An event without an organizer: the body says null, as tf_reservation_json does.
    rid = uuid.uuid4()
    _, no_org_seats = await _event(store, [Section("C", 1, 1, 10, "USD")], organizer=None)
    outcome, body = await conn.fetchrow(RESERVE, rid, None, [no_org_seats[0]["id"]], "buyer-2", None, None, None)
    assert outcome == "held" and body["organizer_id"] is None
    assert body == await conn.fetchval("SELECT tf_reservation_json($1)", rid)


async def test_every_refusal_keeps_its_outcome_and_body(store, conn):  # noqa: F811
    event_id, seats = await _event(store, [Section("A", 1, 4, 100, "EUR"), Section("B", 1, 1, 100, "USD")])
    other_event, other_seats = await _event(store, [Section("A", 1, 1, 100, "EUR")])
    eur = [s["id"] for s in seats if s["label"].startswith("A")]
    usd = [s["id"] for s in seats if s["label"].startswith("B")]
    unknown = uuid.uuid4()
    held, taken = sorted(eur[:2])
    assert (await conn.fetchrow(RESERVE, uuid.uuid4(), None, [held, taken], "first", None, None, None))[0] == "held"

    async def answer(event, ids):
        return tuple(await conn.fetchrow(RESERVE, uuid.uuid4(), event, ids, "u", None, None, None))

    assert await answer(event_id, [eur[2], unknown]) == ("seat_not_found", {"seat_ids": [str(unknown)]})
    assert await answer(uuid.uuid4(), [eur[2]]) == ("event_not_found", {})
    assert await answer(event_id, [eur[2], other_seats[0]["id"]]) == ("seat_not_in_event", {})
    assert await answer(other_event, [eur[2]]) == ("seat_not_in_event", {})
    assert await answer(event_id, [eur[3], taken, eur[2], held]) == (
        "seat_unavailable", {"seat_ids": [str(held), str(taken)]})
    assert await answer(None, [eur[2], usd[0]]) == ("mixed_currencies", {})
    # Nothing of the refused holds stayed: the remaining seats are free, one hold exists.
    assert await conn.fetchval("SELECT count(*) FROM seats WHERE status = 'held'") == 2
    assert await conn.fetchval("SELECT count(*) FROM reservations") == 1


async def test_an_idempotency_key_answers_the_first_body_again(store, conn):  # noqa: F811
    _, seats = await _event(store, [Section("A", 1, 2, 100, "EUR")])
    first = tuple(await conn.fetchrow(RESERVE, uuid.uuid4(), None, [seats[0]["id"]], "u", "u", "k1", "h1"))
    again = tuple(await conn.fetchrow(RESERVE, uuid.uuid4(), None, [seats[0]["id"]], "u", "u", "k1", "h1"))
    assert first[0] == "held" and again == first
    assert tuple(await conn.fetchrow(RESERVE, uuid.uuid4(), None, [seats[1]["id"]], "u", "u", "k1", "h2")) == (
        "key_reused", {})
