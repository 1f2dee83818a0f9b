"""Billing killed (SIGKILL) or cut off from MariaDB between charging a card and recording it.

The mock gateway's ledger (a file outside billing's database) is the truth
about the money: every test ends by checking it against billing's records.
"""

import asyncio
import time

import aiohttp
import pytest

from billing_daemon.gateway import read_ledger
from deploy.runtime.mysql import MariaDsn
from tests.billing.conftest import hold_one, order_appears
from tests.helpers import TcpGate, wait_until
from tests.support.stack import free_port

pytestmark = pytest.mark.slow


async def start_billing(pipeline, tmp_path, **env):
    ledger = tmp_path / "gateway.jsonl"
    billing = await pipeline.billing(TICKETFLOW_MOCK_GATEWAY_LEDGER=str(ledger), **env)
    return billing, ledger


async def pay_until_killed(billing, order_id: str, key: str, ledger) -> None:
    """Start a payment, and SIGKILL billing while the charge sits in the gateway's latency."""
    paying = asyncio.create_task(billing.api.post(f"/api/orders/{order_id}/pay", headers={"Idempotency-Key": key}))
    await wait_until(lambda: any(r["op"] == "charge" for r in read_ledger(ledger)), 10,
                     "the charge reaching the gateway")
    billing.process.kill()
    with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)):
        await paying


def ledger_ops(ledger) -> list[tuple[str, int]]:
    return [(r["op"], r["amount_minor"]) for r in read_ledger(ledger)]


@pytest.mark.parametrize("hold", ["kept", "gone"])
async def test_a_charge_orphaned_by_sigkill_is_resolved_without_any_retry(pipeline, tmp_path, hold):
    reservation = await pipeline.reservation()
    billing, ledger = await start_billing(pipeline, tmp_path, TICKETFLOW_PAYMENT_LATENCY_MS="3000",
                                          TICKETFLOW_PAY_RESOLVE_AFTER_SECONDS="2")
    held = await hold_one(reservation, "gave-up")
    await wait_until(lambda: order_appears(billing, held["id"]), 10, "the order appearing")
    await pay_until_killed(billing, held["id"], "once", ledger)
    if hold == "gone":
        # The hold expired while billing was down (as another replica would apply reservation.expired).
        await pipeline.maria("UPDATE orders SET status = 'cancelled' WHERE id = %s", (held["id"],))
    await billing.process.start_ready()  # and the buyer never comes back

    async def resolved() -> bool:
        rows = await pipeline.maria("SELECT status FROM payment_attempts WHERE order_id = %s", (held["id"],))
        return rows[0]["status"] != "charging"

    await wait_until(resolved, 15, "the resolver recording the orphaned attempt")
    order = (await billing.api.get(f"/api/orders/{held['id']}")).body
    events = [r["type"] for r in await pipeline.maria("SELECT type FROM outbox ORDER BY seq")]
    if hold == "kept":
        assert order["status"] == "paid" and len(order["tickets"]) == 1, order
        assert ledger_ops(ledger) == [("charge", 2500)], "captured: one charge, no refund"
        assert events == ["payment.succeeded"]
    else:
        assert order["status"] == "cancelled" and [p["status"] for p in order["payments"]] == ["refunded"]
        assert ledger_ops(ledger) == [("charge", 2500), ("refund", 2500)], "not captured: one charge, one refund"
        assert [r["amount_minor"] for r in order["refunds"]] == [2500]
        assert events == ["payment.refunded"]
    answer = await pipeline.maria("SELECT status FROM idempotency_keys")
    assert answer == [{"status": 200 if hold == "kept" else 409}], "the abandoned key holds the real answer"


async def retry_until_answered(billing, order_id: str, key: str, within: float):
    """A client following the API: on 503 or 409 REQUEST_IN_PROGRESS retry the same key; returns (reply, seconds)."""
    started = time.monotonic()
    while True:
        try:
            reply = await billing.api.post(f"/api/orders/{order_id}/pay", headers={"Idempotency-Key": key})
            busy = reply.status == 503 or (reply.status == 409 and reply.body["error"]["code"] == "REQUEST_IN_PROGRESS")
            if not busy:
                return reply, time.monotonic() - started
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        assert time.monotonic() - started < within, f"no answer within {within}s: {reply.status} {reply.body}"
        await asyncio.sleep(0.2)


async def test_a_retry_after_sigkill_and_restart_gets_the_real_outcome_within_seconds(pipeline, tmp_path):
    reservation = await pipeline.reservation()
    billing, ledger = await start_billing(pipeline, tmp_path, TICKETFLOW_PAYMENT_LATENCY_MS="1500",
                                          TICKETFLOW_PAY_RESOLVE_AFTER_SECONDS="60")
    held = await hold_one(reservation, "patient")
    await wait_until(lambda: order_appears(billing, held["id"]), 10, "the order appearing")
    await pay_until_killed(billing, held["id"], "retry-me", ledger)
    await billing.process.start_ready()
    reply, seconds = await retry_until_answered(billing, held["id"], "retry-me", within=8)
    assert reply.status == 200 and reply.body["status"] == "paid" and len(reply.body["tickets"]) == 1, reply.body
    assert seconds < 8
    assert ledger_ops(ledger) == [("charge", 2500)], "charged once, across the crash and the retry"
    again = await billing.api.post(f"/api/orders/{held['id']}/pay", headers={"Idempotency-Key": "retry-me"})
    assert (again.status, again.body) == (200, reply.body)


async def test_a_retry_after_billing_answered_503_is_answered_promptly(pipeline, tmp_path):
    """MariaDB goes away between charge and record: billing answers 503, and the key must not stay stuck."""
    reservation = await pipeline.reservation()
    upstream = MariaDsn.parse(pipeline.maria_dsn)
    gate = TcpGate(upstream.hosts[0][1], free_port())
    await gate.open()
    dsn = f"mysql://{upstream.user}:{upstream.password}@127.0.0.1:{gate.port}/{upstream.database}"
    try:
        billing, ledger = await start_billing(pipeline, tmp_path, TICKETFLOW_MARIADB_DSN=dsn,
                                              TICKETFLOW_PAYMENT_LATENCY_MS="1500",
                                              TICKETFLOW_PAY_RESOLVE_AFTER_SECONDS="60")
        held = await hold_one(reservation, "unlucky")
        await wait_until(lambda: order_appears(billing, held["id"]), 10, "the order appearing")
        paying = asyncio.create_task(billing.api.post(f"/api/orders/{held['id']}/pay",
                                                      headers={"Idempotency-Key": "k"}))
        await wait_until(lambda: any(r["op"] == "charge" for r in read_ledger(ledger)), 10,
                         "the charge reaching the gateway")
        await gate.shut()  # the database goes away while the card is being charged
        failed = await paying
        assert failed.status == 503, failed.body
        await gate.open()
        reply, seconds = await retry_until_answered(billing, held["id"], "k", within=6)
        assert reply.status == 200 and reply.body["status"] == "paid", reply.body
        assert ledger_ops(ledger) == [("charge", 2500)]
    finally:
        await gate.shut()
