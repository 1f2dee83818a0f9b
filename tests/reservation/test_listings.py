"""Seat and event listings: keyset pages, and seat counts kept exact without counting seats."""

import asyncio
import random

from tests.helpers import wait_until
from tests.reservation.conftest import create_event, gather_limited, seats_of

SECTIONS = [{"name": name, "rows": 2, "seats_per_row": 3, "price_minor": 100, "currency": "EUR"} for name in "BA"]


async def test_seats_come_in_pages_in_order_and_a_page_follows_its_cursor(reservation):
    api = reservation.api
    event = await create_event(api, SECTIONS)
    other = await create_event(api)
    url = f"/api/events/{event['id']}/seats"
    labels, after = [], ""
    while True:
        page = (await api.get(f"{url}?limit=4{after}")).body
        assert len(page["seats"]) <= 4
        labels += [s["label"] for s in page["seats"]]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert labels == [f"{s}-{r}-{n}" for s in "AB" for r in (1, 2) for n in (1, 2, 3)]
    assert (await api.get(f"{url}?limit=12")).body["next"] is None, "an exact last page says so"

    seats = await seats_of(api, event["id"])
    held = [seats[1]["id"], seats[7]["id"], seats[8]["id"]]
    reply = await api.post("/api/reservations", {"event_id": event["id"], "seat_ids": held[1:], "user_id": "u"})
    assert reply.status == 201
    assert (await api.post("/api/reserve", {"seat_id": held[0], "user_id": "u"})).status == 201
    first = (await api.get(f"{url}?status=held&limit=2")).body
    rest = (await api.get(f"{url}?status=held&limit=2&after={first['next']}")).body
    assert [s["id"] for s in first["seats"] + rest["seats"]] == held and rest["next"] is None
    available = (await api.get(f"{url}?status=available&after={seats[0]['id']}")).body["seats"]
    assert [s["id"] for s in available] == [s["id"] for s in seats[2:] if s["id"] not in held]

    theirs = (await seats_of(api, other["id"]))[0]["id"]
    for query, field in ((f"after={theirs}", "after"), ("after=nope", "after"), ("limit=0", "limit"),
                         ("limit=5001", "limit"), ("limit=ten", "limit")):
        reply = await api.get(f"{url}?{query}")
        assert reply.status == 422 and reply.body["error"]["details"] == {"field": field}, (query, reply.body)


async def test_events_come_in_pages_by_start_time(reservation):
    api = reservation.api
    created = []
    for day in (5, 3, 9, 1, 7):
        reply = await api.post("/api/events", {"name": f"day {day}", "venue": "Hall",
                                               "starts_at": f"2027-01-0{day}T20:00:00Z",
                                               "layout": {"sections": SECTIONS[:1]}})
        created.append(reply.body)
    names, after = [], ""
    while True:
        page = (await api.get(f"/api/events?limit=2{after}")).body
        assert len(page["events"]) <= 2
        names += [e["name"] for e in page["events"]]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert names == ["day 1", "day 3", "day 5", "day 7", "day 9"]
    assert all(e["seats"]["total"] == 6 for e in (await api.get("/api/events")).body["events"])
    bad = await api.get(f"/api/events?after={(await seats_of(api, created[0]['id']))[0]['id']}")
    assert bad.status == 422 and bad.body["error"]["details"] == {"field": "after"}


async def test_seat_counts_stay_exact_under_concurrent_holds_releases_sales_and_expiry(cluster):
    # Two replicas, so two sweepers and two count settlers run against each other too.
    a = await cluster.start(TICKETFLOW_HOLD_TTL_SECONDS="1", TICKETFLOW_SWEEP_INTERVAL_SECONDS="0.2")
    b = await cluster.start(TICKETFLOW_HOLD_TTL_SECONDS="1", TICKETFLOW_SWEEP_INTERVAL_SECONDS="0.2")
    event = await create_event(a.api, [{"name": "C", "rows": 10, "seats_per_row": 30, "price_minor": 100,
                                        "currency": "EUR"}])
    other = await create_event(a.api)
    seats = [s["id"] for s in await seats_of(a.api, event["id"])]
    rng = random.Random(9)

    async def buyer(i: int) -> None:
        api = (a, b)[i % 2].api
        picks = rng.sample(seats, rng.randint(1, 4))
        held = await api.post("/api/reservations", {"event_id": event["id"], "seat_ids": picks, "user_id": f"u{i}"})
        outcomes.append(held.status)
        if held.status != 201:
            assert held.status == 409, held.body  # someone else holds one of them
            return
        fate = rng.random()
        if fate < 0.3:
            assert (await api.delete(f"/api/reservations/{held.body['id']}")).status in (200, 409)
        elif fate < 0.6:
            assert (await api.post(f"/api/reservations/{held.body['id']}/confirm")).status in (200, 409)
        # else: left to expire, released by a sweeper or by the next hold that meets it

    snapshots, outcomes = [], []

    async def compare_while_buying(burst) -> None:
        # The counts and a real COUNT, read in one statement (one snapshot), again and again mid-burst.
        while not burst.done():
            row = (await cluster.sql("""
                SELECT (SELECT jsonb_build_object('total', sum(total), 'available', sum(available),
                                                  'held', sum(held), 'sold', sum(sold))
                          FROM seat_count_deltas WHERE event_id = $1) AS kept,
                       (SELECT jsonb_build_object('total', count(*),
                                                  'available', count(*) FILTER (WHERE status = 'available'),
                                                  'held', count(*) FILTER (WHERE status = 'held'),
                                                  'sold', count(*) FILTER (WHERE status = 'sold'))
                          FROM seats WHERE event_id = $1) AS counted""", event["id"]))[0]
            snapshots.append((row["kept"], row["counted"]))

    burst = asyncio.ensure_future(gather_limited((buyer(i) for i in range(400)), 40))
    await compare_while_buying(burst)
    await burst
    print(f"{outcomes.count(201)} holds, {outcomes.count(409)} refused, {len(snapshots)} snapshots compared")
    assert outcomes.count(201) > 100 and outcomes.count(409) > 10
    assert len(snapshots) > 3 and all(kept == counted for kept, counted in snapshots), \
        [pair for pair in snapshots if pair[0] != pair[1]][:3]

    async def truth() -> dict:
        rows = await cluster.sql("SELECT status, count(*) AS n FROM seats WHERE event_id = $1 GROUP BY status",
                                 event["id"])
        counts = {"available": 0, "held": 0, "sold": 0, **{r["status"]: r["n"] for r in rows}}
        return {"total": sum(counts.values()), **counts}

    async def listed() -> dict:
        return {e["id"]: e["seats"] for e in (await a.api.get("/api/events")).body["events"]}

    async def all_expired_and_settled() -> bool:
        unsettled = await cluster.sql("SELECT count(*) AS n FROM seat_count_deltas WHERE NOT settled")
        return (await truth())["held"] == 0 and unsettled[0]["n"] == 0

    await wait_until(all_expired_and_settled, 20, "every hold expiring and every count delta settling")
    final = await truth()
    assert final["sold"] > 0 and final["available"] > 0, final
    assert (await b.api.get(f"/api/events/{event['id']}")).body["seats"] == final
    assert await listed() == {event["id"]: final,
                              other["id"]: {"total": 10, "available": 10, "held": 0, "sold": 0}}
    async def folded() -> bool:
        rows = await cluster.sql("SELECT count(*) AS n FROM seat_count_deltas WHERE event_id = $1", event["id"])
        return rows[0]["n"] == 1

    # The last expiries' deltas may land just after the check above; the next settle folds them.
    await wait_until(folded, 10, "settling folding the event's deltas into one row")
