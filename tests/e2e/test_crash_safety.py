"""500 purchases while every daemon in turn is SIGKILLed and RabbitMQ is restarted.

Afterwards the whole history must hold: every paid order has exactly one
finalized sale and one notification, no seat is sold twice, and every link's
lag returns to zero.
"""

import asyncio
import random
import time
from collections import Counter

import aiohttp
import pytest

from tests.e2e.conftest import FullPipeline
from tests.helpers import wait_until
from tests.support.stack import fresh_mariadb_database, fresh_pg_database, private_server_fixture

PURCHASES = 500


def settled(reply) -> bool:
    """Neither 503 nor 409 REQUEST_IN_PROGRESS: the answer a retrying client stops at."""
    return reply.status != 503 and not (reply.status == 409 and reply.body["error"]["code"] == "REQUEST_IN_PROGRESS")


async def patient(call, what: str, done=settled, timeout: float = 120):
    """Retry ``call`` through crashes: connection errors, 503s, and whatever ``done`` rejects."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = await call()
            if done(reply):
                return reply
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass
        assert time.monotonic() < deadline, f"{what} never succeeded"
        await asyncio.sleep(0.1)


private_rabbitmq = private_server_fixture("rabbitmq")  # the test restarts it


@pytest.fixture
async def full(private_rabbitmq, tmp_path):
    """conftest's ``full`` pipeline on a private RabbitMQ (the test restarts it) and the shared databases."""
    async with fresh_pg_database("tf_e2e_res") as pg, fresh_mariadb_database("tf_e2e_bill") as maria, \
            fresh_pg_database("tf_e2e_bridge") as bridge, fresh_pg_database("tf_e2e_portal") as portal, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        p = FullPipeline(pg, maria, bridge, tmp_path, session, portal_dsn=portal)
        p.amqp_url = private_rabbitmq.url()
        try:
            yield p
        finally:
            p.stop()


async def test_500_purchases_survive_every_daemon_killed_and_rabbitmq_restarted(full, private_rabbitmq):
    await full.start_all(TICKETFLOW_PAY_RESUME_AFTER_SECONDS="1")
    reservation, billing = full["reservation"], full["billing"]
    event = (await reservation.api.post("/api/events", {
        "name": "Crash", "venue": "Lab", "starts_at": "2027-01-01T20:00:00Z",
        "layout": {"sections": [{"name": "C", "rows": 10, "seats_per_row": 60, "price_minor": 1500,
                                 "currency": "EUR"}]}})).body
    seats = [s["id"] for s in (await reservation.api.get(f"/api/events/{event['id']}/seats")).body["seats"]]
    random.Random(3).shuffle(seats)
    completed: list[str] = []

    async def purchase(i: int, seat: str) -> str:
        key = f"crash-{i}"
        held = await patient(lambda: reservation.api.post("/api/reserve", {"seat_id": seat, "user_id": f"u{i}"},
                                                          headers={"Idempotency-Key": key}), f"hold {i}")
        assert held.status == 201, held.body
        rid = held.body["id"]
        await patient(lambda: billing.api.get(f"/api/orders/{rid}"), f"order {i}", done=lambda r: r.status == 200)
        paid = await patient(
            lambda: billing.api.post(f"/api/orders/{rid}/pay", headers={"Idempotency-Key": key}), f"payment {i}",
            done=settled)
        assert paid.status == 200, paid.body
        completed.append(rid)
        return rid

    semaphore = asyncio.Semaphore(20)

    async def limited(i, seat):
        async with semaphore:
            return await purchase(i, seat)

    buying = asyncio.gather(*(limited(i, s) for i, s in enumerate(seats[:PURCHASES])))
    # Chaos at points chosen by progress, not by the clock.
    for step, victim in enumerate(["reservation", "billing", "bridge", "portal", "rabbitmq"]):
        target = (step + 1) * PURCHASES // 6
        await wait_until(lambda: len(completed) >= target, 120, f"{target} purchases before killing {victim}")
        if victim == "rabbitmq":
            await asyncio.to_thread(private_rabbitmq.stop)
            await asyncio.to_thread(private_rabbitmq.up)
        else:
            full[victim].process.kill()
            await full[victim].process.start_ready(30)
    reservation_ids = await buying
    assert len(set(reservation_ids)) == PURCHASES

    async def all_finalized() -> bool:
        rows = await full.portal_sql("SELECT count(*) AS n FROM portal_processed WHERE type = 'payment.succeeded'")
        return rows[0]["n"] >= PURCHASES

    await wait_until(all_finalized, 120, "every payment finalized by the portal")

    # The whole history.
    sales = await full.portal_sql("SELECT order_id, outcome FROM portal_processed WHERE type = 'payment.succeeded'")
    per_order = Counter(r["order_id"] for r in sales)
    assert set(per_order) == set(reservation_ids) and set(per_order.values()) == {1}, "a sale finalized twice"
    assert {r["outcome"] for r in sales} == {"sale_finalized"}
    notes = await full.portal_sql("SELECT order_id FROM portal_notifications WHERE kind = 'purchase_confirmed'")
    per_order = Counter(r["order_id"] for r in notes)
    assert set(per_order) == set(reservation_ids) and set(per_order.values()) == {1}, "a notification lost or doubled"
    confirmed = await full.reservation_sql("SELECT id FROM reservations WHERE status = 'confirmed'")
    assert {str(r["id"]) for r in confirmed} == set(reservation_ids)
    sold = await full.reservation_sql("SELECT reservation_id FROM seats WHERE status = 'sold'")
    assert len(sold) == PURCHASES and {str(r["reservation_id"]) for r in sold} == set(reservation_ids)
    paid = await full.maria("SELECT count(*) AS n FROM orders WHERE status = 'paid'")
    assert paid[0]["n"] == PURCHASES
    charges = await full.maria("SELECT count(*) AS n FROM payment_attempts WHERE status = 'succeeded'")
    assert charges[0]["n"] == PURCHASES, "a payment was charged twice"

    async def lags_zero() -> bool:
        res = await full.reservation_sql("SELECT last_seq - acked_seq AS lag FROM stream_heads")
        bill = await full.maria("SELECT last_seq - acked_seq AS lag FROM stream_heads")
        queued = await full.queue_depth(full.names.portal_queue)
        return res[0]["lag"] == 0 and bill[0]["lag"] == 0 and queued == 0

    await wait_until(lags_zero, 60, "every link's lag returning to zero")
