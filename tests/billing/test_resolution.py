"""Payments left charging and holds lost mid-charge, against real MariaDB with the payment code in-process.

Two ``Payments`` objects on one database are two billing replicas (each its own
owner id and process lock); the mock gateway's ledger is what the money did.
"""

import asyncio
import dataclasses
import json
import uuid

import pytest

from billing_daemon.api import response
from billing_daemon.config import Settings
from billing_daemon.gateway import MockGateway, read_ledger
from billing_daemon.payments import Payments
from billing_daemon.store import BillingStore
from deploy.runtime.mysql import MariaDB
from protocol.messages import Event
from tests.helpers import wait_until
from tests.support.stack import fresh_mariadb_database

pytestmark = pytest.mark.stack


class Billing:
    def __init__(self, dsn: str, ledger, **settings) -> None:
        self.settings = dataclasses.replace(Settings(), mariadb_dsn=dsn, pay_margin=1.0, **settings)
        self.store = BillingStore(MariaDB(dsn, max_size=5), respond=response)
        self.gateway = MockGateway(latency_ms=self.settings.payment_latency_ms, ledger=ledger)
        self.payments = Payments(self.settings, self.store.payments, self.gateway)
        self.seq = 0

    async def pay(self, order_id: str, key: str) -> tuple[int, dict]:
        """A pay request as the API answers it: (status, body)."""
        return response(await self.payments.pay(order_id, (f"/api/orders/{order_id}/pay", key, "h")))

    async def refund(self, order_id: str, reason: str, actor: str) -> tuple[int, dict]:
        return response(await self.payments.refund(order_id, reason, actor))

    async def open_order(self, amount_minor: int = 2500) -> str:
        order_id = str(uuid.uuid4())
        await self.event("reservation.created", {
            "id": order_id, "user_id": "buyer", "event_id": str(uuid.uuid4()), "amount_minor": amount_minor,
            "currency": "EUR", "seats": [{"id": str(uuid.uuid4()), "label": "A-1"}], "status": "held",
            "created_at": "2027-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"})
        return order_id

    async def event(self, kind: str, data: dict) -> None:
        position = await self.store.stream_position("reservations")
        await self.store.apply_reservation_events("reservations", [
            Event(position + 1, str(uuid.uuid4()), kind, "tests", "2026-11-24T00:00:00Z", data)])

    async def close(self) -> None:
        self.payments.lock.close()
        await self.store.db.close()


@pytest.fixture
async def dsn():
    async with fresh_mariadb_database("tf_bres") as dsn:
        store = BillingStore(MariaDB(dsn, max_size=2))
        await store.migrate()
        await store.db.close()
        yield dsn


@pytest.fixture
async def replicas(dsn, tmp_path):
    made: list[Billing] = []

    def make(**settings) -> Billing:
        made.append(Billing(dsn, tmp_path / "gateway.jsonl", **settings))
        return made[-1]

    yield make
    for billing in made:
        await billing.close()


def ledger(billing: Billing, op: str) -> list[dict]:
    return [r for r in read_ledger(billing.gateway.ledger) if r["op"] == op]


async def maria(billing: Billing, sql: str, args=()) -> list[dict]:
    from deploy.runtime.mysql import fetchall
    return await billing.store.db.run(lambda c: fetchall(c, sql, args), idempotent=True)


async def charged(billing: Billing) -> bool:
    return bool(ledger(billing, "charge"))


async def test_a_hold_released_during_the_charge_is_refunded_at_the_gateway_once(replicas):
    a = replicas(payment_latency_ms=1500)
    b = replicas(resolve_after=0.2)  # a second replica whose resolver finds the attempt overdue
    order_id = await a.open_order(amount_minor=4200)
    paying = asyncio.create_task(a.pay(order_id, "k"))
    await wait_until(lambda: charged(a), 10, "the charge reaching the gateway")
    await a.event("reservation.cancelled", {"reservation_id": order_id, "event_id": str(uuid.uuid4()),
                                            "user_id": "buyer", "seat_ids": [],
                                            "cancelled_at": "2027-01-01T00:00:00Z"})  # the hold is released meanwhile
    # The same path twice at once: replica b resolves the overdue attempt while a's request finishes it.
    await wait_until(lambda: b.payments.resolve_once(), 10, "replica b resolving the overdue attempt")
    status, body = await paying
    assert status == 409 and body["error"]["code"] == "ORDER_NOT_PAYABLE", body
    refunds = ledger(a, "refund")
    assert [(r["amount_minor"], r["currency"]) for r in refunds] == [(4200, "EUR")], refunds
    order = await a.store.orders.get_order(order_id)
    assert order["status"] == "cancelled" and order["tickets"] == []
    assert [p["status"] for p in order["payments"]] == ["refunded"]
    assert [(r["amount_minor"], r["reason"]) for r in order["refunds"]] == [(4200, "hold_released_during_payment")]
    assert body["error"]["details"]["refund_id"] == order["refunds"][0]["id"]
    # And once more, after the fact: a retry of the same key, and the recording path run again.
    assert await a.pay(order_id, "k") == (status, body)
    attempt = (await maria(a, "SELECT id, order_id, amount_minor, currency FROM payment_attempts"))[0]
    again = await a.payments.settle(attempt, await a.gateway.charge(attempt["id"], 4200, "EUR"), None)
    assert not again.refund_due
    assert len(ledger(a, "refund")) == 1 and len(ledger(a, "charge")) == 1
    events = await maria(a, "SELECT type, data FROM outbox ORDER BY seq")
    refunded = [json.loads(e["data"]) for e in events if e["type"] == "payment.refunded"]
    assert len(refunded) == 1 and refunded[0]["refund_id"] == order["refunds"][0]["id"]
    assert refunded[0]["amount_minor"] == 4200


async def test_the_resolver_waits_for_a_live_owner_until_the_bound_then_records_the_charge(replicas):
    a = replicas(payment_latency_ms=60_000)  # a request stuck at the gateway in a live replica
    b = replicas(resolve_after=1.0)
    order_id = await a.open_order()
    paying = asyncio.create_task(a.pay(order_id, "k"))
    try:
        await wait_until(lambda: charged(a), 10, "the charge reaching the gateway")
        assert await b.payments.resolve_once() == 0, "a young attempt of a live replica is left alone"
        assert await a.payments.resolve_once() == 0, "the owner never resolves what it is charging itself"
        await wait_until(lambda: b.payments.resolve_once(), 10, "replica b resolving the attempt past the bound")
    finally:
        paying.cancel()
    order = await b.store.orders.get_order(order_id)
    assert order["status"] == "paid" and len(order["tickets"]) == 1
    key = await maria(b, "SELECT status FROM idempotency_keys")
    assert key == [{"status": 200}], "the waiting key gets the recorded answer"


async def test_an_attempt_the_gateway_never_saw_fails_and_the_order_is_payable_again(replicas):
    a = replicas()
    order_id = await a.open_order()
    # A process that claimed the attempt and died before charging (its owner lock is not held).
    attempt = await a.store.payments.begin(order_id, (f"/api/orders/{order_id}/pay", "k1", "h"), 1.0,
                                           owner="dead-process")
    assert isinstance(attempt, dict) and attempt["status"] == "charging"
    assert await a.payments.resolve_once() == 1
    order = await a.store.orders.get_order(order_id)
    assert order["status"] == "failed" and [p["status"] for p in order["payments"]] == ["failed"]
    assert ledger(a, "charge") == []
    failed = await maria(a, "SELECT data FROM outbox WHERE type = 'payment.failed'")
    assert json.loads(failed[0]["data"])["reason"] == "charge_not_completed"
    assert (await a.pay(order_id, "k1"))[0] == 402
    status, body = await a.pay(order_id, "k2")
    assert status == 200 and body["status"] == "paid"


async def test_a_charge_that_lands_after_its_attempt_was_given_up_is_refunded(replicas):
    a = replicas()
    order_id = await a.open_order()
    attempt = await a.store.payments.begin(order_id, (f"/api/orders/{order_id}/pay", "k", "h"), 1.0,
                                           owner="dead-process")
    await a.payments.resolve_once()  # the gateway had not seen it yet: failed
    late = await a.gateway.charge(attempt["id"], attempt["amount_minor"], attempt["currency"])  # ...then it landed
    settled = await a.payments.settle(attempt, late, None)
    assert response(settled.result)[0] == 402
    assert [(r["attempt_id"], r["amount_minor"]) for r in ledger(a, "refund")] == [(attempt["id"], 2500)]
    order = await a.store.orders.get_order(order_id)
    assert [r["reason"] for r in order["refunds"]] == ["charge_completed_after_failure"]
    assert order["status"] == "failed", "the order is still payable"


async def test_a_refund_records_who_asked_and_why_with_the_gateway_reference(replicas):
    a = replicas()
    order_id = await a.open_order()
    assert (await a.pay(order_id, "k"))[0] == 200
    status, body = await a.refund(order_id, "event cancelled", "organizer:org-1")
    assert status == 200 and [r["reason"] for r in body["refunds"]] == ["event cancelled"]
    rows = await maria(a, "SELECT id, actor, gateway_ref, amount_minor FROM refunds")
    [refund] = ledger(a, "refund")
    assert rows == [{"id": body["refunds"][0]["id"], "actor": "organizer:org-1", "gateway_ref": refund["reference"],
                     "amount_minor": 2500}]
