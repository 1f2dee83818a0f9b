"""SIGTERM while payments are at the gateway: they finish and are answered before the daemon exits."""

import asyncio

from tests.billing.conftest import hold_one, order_appears
from tests.helpers import wait_until


async def test_payments_in_flight_at_sigterm_complete_and_are_answered(pipeline):
    reservation = await pipeline.reservation()
    billing = await pipeline.billing(TICKETFLOW_PAYMENT_LATENCY_MS="1500")  # a slow gateway
    holds = [await hold_one(reservation, f"buyer-{i}") for i in range(8)]
    for held in holds:
        await wait_until(lambda: order_appears(billing, held["id"]), 10, "the order appearing")
    paying = [asyncio.create_task(billing.api.post(f"/api/orders/{h['id']}/pay", headers={"Idempotency-Key": h["id"]}))
              for h in holds]

    async def all_at_the_gateway() -> bool:
        rows = await pipeline.maria("SELECT count(*) AS n FROM payment_attempts WHERE status = 'charging'")
        return rows[0]["n"] == len(holds)

    await wait_until(all_at_the_gateway, 10, "every payment waiting on the gateway")
    code = await asyncio.to_thread(billing.process.terminate, 15)
    replies = await asyncio.gather(*paying)

    assert code == 0, billing.process.log_tail()
    assert [r.status for r in replies] == [200] * len(holds), [r.body for r in replies]
    paid = await pipeline.maria("SELECT count(*) AS n FROM orders WHERE status = 'paid'")
    assert paid[0]["n"] == len(holds)
