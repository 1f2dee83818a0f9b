"""The organizers' figures (issue 14): an event's seats from the reservation daemon
(GET /api/events/{id}/stats) and its money from billing (GET /api/events/{id}/sales), both for the
event's organizer (and services) only: another organizer gets 404, a buyer or the door 403,
anonymous 401. Every answer is checked against the daemons' OpenAPI documents by ApiClient."""

import uuid

from tests.billing.conftest import order_appears
from tests.helpers import wait_until
from tests.support.auth import token

LAYOUT = {"sections": [{"name": "FLOOR", "rows": 2, "seats_per_row": 5, "price_minor": 4500, "currency": "EUR"},
                       {"name": "BALCONY", "rows": 1, "seats_per_row": 4, "price_minor": 3000, "currency": "EUR"},
                       {"name": "VIP", "rows": 1, "seats_per_row": 2, "price_minor": 12000, "currency": "USD"}]}


async def _sold_event(pipeline):
    """An organizer's event with: 2 FLOOR + 1 BALCONY paid (EUR), 1 VIP paid then refunded (USD), 1 VIP paid,
    1 FLOOR held and not paid."""
    pipeline.r = await pipeline.reservation()
    pipeline.b = await pipeline.billing()
    organizer = str(uuid.uuid4())
    event = await pipeline.r.api.as_(token("organizer", subject=organizer)).post(
        "/api/events", {"name": "Figures", "venue": "Hall", "starts_at": "2027-01-01T20:00:00Z", "layout": LAYOUT})
    assert event.status == 201, event.body
    seats = (await pipeline.r.api.get(f"/api/events/{event.body['id']}/seats")).body["seats"]
    by_section = {name: [s["id"] for s in seats if s["section"] == name] for name in ("FLOOR", "BALCONY", "VIP")}
    orders = {}
    for name, seat_ids in {"eur": by_section["FLOOR"][:2] + by_section["BALCONY"][:1],
                           "refunded": by_section["VIP"][:1], "usd": by_section["VIP"][1:2],
                           "pending": by_section["FLOOR"][2:3]}.items():
        held = await pipeline.r.api.post("/api/reservations", {"event_id": event.body["id"], "seat_ids": seat_ids,
                                                               "user_id": str(uuid.uuid4())})
        assert held.status == 201, held.body
        await wait_until(lambda: order_appears(pipeline.b, held.body["id"]), 10, f"order {name} reaching billing")
        orders[name] = held.body["id"]
        if name != "pending":
            paid = await pipeline.b.api.post(f"/api/orders/{held.body['id']}/pay",
                                             headers={"Idempotency-Key": f"pay-{name}"})
            assert paid.status == 200, paid.body
    refunded = await pipeline.b.api.as_(token("organizer", subject=organizer)).post(
        f"/api/orders/{orders['refunded']}/refund", {"reason": "moved"})
    assert refunded.status == 200, refunded.body
    return event.body["id"], organizer, orders


async def test_sales_and_seat_figures_are_right_and_only_for_the_events_organizer(pipeline):
    event_id, organizer, orders = await _sold_event(pipeline)
    mine = token("organizer", subject=organizer)

    sales = await pipeline.b.api.as_(mine).get(f"/api/events/{event_id}/sales")
    assert sales.status == 200, sales.body
    assert sales.body["revenue"] == [{"currency": "EUR", "orders": 1, "seats": 3, "amount_minor": 2 * 4500 + 3000},
                                     {"currency": "USD", "orders": 1, "seats": 1, "amount_minor": 12000}]
    assert sales.body["by_section"] == [
        {"section": "BALCONY", "currency": "EUR", "seats": 1, "amount_minor": 3000},
        {"section": "FLOOR", "currency": "EUR", "seats": 2, "amount_minor": 9000},
        {"section": "VIP", "currency": "USD", "seats": 1, "amount_minor": 12000}]
    by_status = {(o["status"], o["currency"]): (o["orders"], o["amount_minor"]) for o in sales.body["orders"]}
    assert by_status == {("paid", "EUR"): (1, 12000), ("paid", "USD"): (1, 12000),
                         ("refunded", "USD"): (1, 12000), ("pending", "EUR"): (1, 4500)}
    over_time = sales.body["over_time"]
    assert over_time["bucket_seconds"] == 60  # everything was paid within the test's minute or two
    assert sum(p["seats"] for p in over_time["points"]) == 4
    assert sum(p["amount_minor"] for p in over_time["points"] if p["currency"] == "EUR") == 12000
    assert sum(p["amount_minor"] for p in over_time["points"] if p["currency"] == "USD") == 12000

    stats = await pipeline.r.api.as_(mine).get(f"/api/events/{event_id}/stats")
    assert stats.status == 200, stats.body
    # Paid seats stay held in the reservation daemon until the portal confirms the sale (no portal here);
    # the refunded VIP seat is still held too (the portal releases it).
    assert stats.body["event"]["seats"] == {"total": 16, "available": 10, "held": 6, "sold": 0}
    assert stats.body["sections"] == [
        {"section": "BALCONY", "currency": "EUR", "price_minor": 3000, "total": 4, "available": 3, "held": 1, "sold": 0},
        {"section": "FLOOR", "currency": "EUR", "price_minor": 4500, "total": 10, "available": 7, "held": 3, "sold": 0},
        {"section": "VIP", "currency": "USD", "price_minor": 12000, "total": 2, "available": 0, "held": 2, "sold": 0}]

    # Services see the same figures; nobody else does.
    assert (await pipeline.b.api.get(f"/api/events/{event_id}/sales")).body["revenue"] == sales.body["revenue"]
    assert (await pipeline.r.api.get(f"/api/events/{event_id}/stats")).body == stats.body
    for api, path in ((pipeline.b.api, f"/api/events/{event_id}/sales"),
                      (pipeline.r.api, f"/api/events/{event_id}/stats")):
        stranger = await api.as_(token("organizer")).get(path)  # another organizer: as if there were no event
        assert stranger.status == 404 and stranger.body["error"]["code"] == "EVENT_NOT_FOUND", stranger.body
        for role in ("buyer", "door"):
            assert (await api.as_(token(role)).get(path)).status == 403, (path, role)
        anonymous = await api.as_(None).get(path)
        assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer"), path
        unknown = await api.as_(mine).get(path.replace(event_id, str(uuid.uuid4())))
        assert unknown.status == 404, path

