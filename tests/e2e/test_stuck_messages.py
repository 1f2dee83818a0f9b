"""Hole 4 of issue 9: the portal dead-letters only messages it cannot read.

A proxy in front of the real reservation daemon answers the portal's confirm
wrongly for a while (429, 400, an HTML 500, 422); the real daemons do the rest.
"""

import json

import aio_pika

from deploy.ops.status import render_stuck, stuck_messages
from tests.e2e.test_pipeline import buy, notifications
from tests.helpers import wait_until
from tests.support.fault_proxy import FaultProxy

JSON = "application/json"
WRONG_ANSWERS = [
    (429, JSON, json.dumps({"error": {"code": "RATE_LIMITED", "message": "slow down"}})),
    (400, JSON, json.dumps({"error": {"code": "MALFORMED_REQUEST", "message": "???"}})),
    (500, "text/html", "<html><body>Internal Server Error</body></html>"),
    (422, JSON, json.dumps({"error": {"code": "VALIDATION_FAILED", "message": "no"}})),
]


async def test_a_confirm_answered_unexpectedly_is_retried_shown_as_stuck_and_finalized_later(full):
    proxy = FaultProxy("/confirm", WRONG_ANSWERS)
    await proxy.start()
    try:
        await full.start_all(TICKETFLOW_RESERVATION_URL=proxy.url, TICKETFLOW_PORTAL_RETRY_CAP_SECONDS="0.3",
                             TICKETFLOW_PORTAL_STUCK_LOG_SECONDS="3600")
        proxy.upstream = full["reservation"].api.base_url
        portal = full["portal"]
        held, _ = await buy(full, "held-up")
        await wait_until(lambda: proxy.injected >= 2 * len(WRONG_ANSWERS), 30,
                         "the portal retrying its confirm through every kind of wrong answer")

        ready = (await portal.api.get("/ready")).body
        assert ready["checks"]["stuck"]["count"] == 1 and ready["checks"]["stuck"]["oldest_seconds"] > 0, ready
        [stuck] = (await portal.api.get("/api/stuck")).body["stuck"]
        assert stuck["order_id"] == held["id"] and stuck["type"] == "payment.succeeded"
        assert stuck["attempts"] >= 2 * len(WRONG_ANSWERS)
        assert stuck["last_answer"].startswith(("reservation confirm answered", "POST http")), stuck
        assert (await portal.api.as_(None).get("/api/stuck")).status == 401
        status_lines = render_stuck(stuck_messages(portal.api.base_url))
        assert "1 message(s) retrying" in status_lines[1], status_lines
        assert await full.queue_depth(full.names.dead_letter_queue) == 0
        assert (await full["reservation"].api.get(f"/api/reservations/{held['id']}")).body["status"] == "held"
        logged = [json.loads(line) for line in portal.process.log_lines() if line.startswith("{")]
        warnings = [e for e in logged if e.get("event") in ("message_stuck", "message_still_stuck")]
        assert len(warnings) == 1 and warnings[0]["order_id"] == held["id"], warnings  # not one per attempt

        proxy.failing = False  # the reservation daemon's answers are normal again

        async def notified() -> bool:
            return [n["kind"] for n in await notifications(full, "held-up")] == ["purchase_confirmed"]

        await wait_until(notified, 20, "the sale finalized once the answers were normal")
    finally:
        await proxy.stop()
    assert (await full["reservation"].api.get(f"/api/reservations/{held['id']}")).body["status"] == "confirmed"
    assert (await full["billing"].api.get(f"/api/orders/{held['id']}")).body["status"] == "paid"
    assert (await portal.api.get("/ready")).body["checks"]["stuck"] == {"count": 0, "oldest_seconds": 0.0}
    assert (await portal.api.get("/api/stuck")).body["stuck"] == []
    assert await full.queue_depth(full.names.dead_letter_queue) == 0
    assert await full.queue_depth(full.names.portal_queue) == 0
    assert any('"message_unstuck"' in line for line in portal.process.log_lines())


async def test_a_malformed_message_still_goes_to_the_dead_letter_queue_at_once(full):
    await full.start_all()
    connection = await aio_pika.connect(full.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(full.names.exchange)
        lacking = {"specversion": "1.0", "id": "lacks-fields", "type": "payment.succeeded", "source": "x",
                   "data": {"order_id": "o"}}
        await exchange.publish(aio_pika.Message(json.dumps(lacking).encode(), message_id="lacks-fields"),
                               routing_key="payment.succeeded")
        await wait_until(lambda: _depth_is(full, full.names.dead_letter_queue, 1), 10, "the message dead-lettered")
        dead = await (await channel.declare_queue(full.names.dead_letter_queue, durable=True)).get(timeout=5)
        assert dead.message_id == "lacks-fields" and "lacks" in dead.headers["x-ticketflow-reason"]
        assert dead.headers.get("x-delivery-count", 0) == 0  # at once: not after retries
        await dead.ack()
    finally:
        await connection.close()
    assert (await full["portal"].api.get("/ready")).body["checks"]["stuck"]["count"] == 0


async def _depth_is(full, queue: str, n: int) -> bool:
    return await full.queue_depth(queue) == n
