"""Every event the daemons really emit fits the contract in deploy/runtime/events.py."""

import json

from deploy.runtime import events
from tests.e2e.test_access import make_world
from tests.helpers import wait_until
from tests.support.auth import token


async def test_every_emitted_event_fits_its_declared_schema(full):
    await full.start_all()
    world = await make_world(full)  # a hold, its order and a payment
    reservation, billing = full["reservation"].api, full["billing"].api
    buyer = reservation.as_(token("buyer"))
    cancelled = await buyer.post("/api/reserve", {"seat_id": world.free_seats[0]})
    assert (await buyer.delete(f"/api/reservations/{cancelled.body['id']}")).status == 200
    assert (await billing.as_(token("door")).post("/api/checkin", {"code": world.ticket_code})).status == 200
    refund = await billing.as_(world.token("organizer")).post(f"/api/orders/{world.reservation_id}/refund",
                                                              {"reason": "contract"})
    assert refund.status == 200

    async def released() -> bool:  # the portal confirmed the sale, then released it after the refund
        rows = await full.reservation_sql("SELECT type FROM outbox WHERE type = 'reservation.cancelled'")
        return len(rows) == 2

    await wait_until(released, 15, "the refunded sale's seats released")
    produced = [(r["type"], json.loads(r["data"]) if isinstance(r["data"], str) else r["data"])
                for r in await full.reservation_sql("SELECT type, data FROM outbox ORDER BY seq")]
    produced += [(r["type"], json.loads(r["data"])) for r in await full.maria("SELECT type, data FROM outbox ORDER BY seq")]
    kinds = {kind for kind, _ in produced}
    assert kinds == {"reservation.created", "reservation.cancelled", "reservation.confirmed", "payment.succeeded",
                     "ticket.checked_in", "payment.refunded"}, kinds
    for kind, data in produced:
        events.parse(kind, data)  # raises MalformedEvent naming the field that does not fit
