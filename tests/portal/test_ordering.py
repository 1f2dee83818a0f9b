"""The portal processes messages concurrently but never two of one order at once.

Pure scheduling logic, so a recording finalizer and stand-in messages suffice;
the real broker and stores are exercised by tests/e2e.
"""

import asyncio
import json

from portal_consumer.config import Settings
from portal_consumer.streams import Consumer


class Message:
    """The part of an aio-pika incoming message the consumer uses."""

    def __init__(self, event_id: str, kind: str, order_id: str) -> None:
        self.message_id = event_id
        self.body = json.dumps({"specversion": "1.0", "id": event_id, "type": kind, "source": "test",
                                "data": {"order_id": order_id}}).encode()
        self.headers: dict = {}
        self.acked = asyncio.Event()

    async def ack(self) -> None:
        self.acked.set()


class RecordingFinalizer:
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.release_sale = asyncio.Event()

    async def handle(self, event: dict) -> None:
        self.log.append(("start", event["id"]))
        if event["type"] == "payment.succeeded" and event["data"]["order_id"] == "A":
            await self.release_sale.wait()  # the sale of order A is slow
        self.log.append(("end", event["id"]))


async def test_a_refund_waits_for_its_own_sale_while_other_orders_go_ahead():
    finalizer = RecordingFinalizer()
    consumer = Consumer(Settings(), finalizer)
    sale_a = Message("sale-a", "payment.succeeded", "A")
    refund_a = Message("refund-a", "payment.refunded", "A")
    sale_b = Message("sale-b", "payment.succeeded", "B")
    tasks = [asyncio.create_task(consumer._in_order(m, dlx=None)) for m in (sale_a, refund_a, sale_b)]

    await asyncio.wait_for(sale_b.acked.wait(), 5)  # B is not held up by A's slow sale
    assert ("start", "refund-a") not in finalizer.log, "the refund overtook its own sale"
    finalizer.release_sale.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)

    log = finalizer.log
    assert log.index(("end", "sale-a")) < log.index(("start", "refund-a"))
    assert refund_a.acked.is_set() and sale_a.acked.is_set()
    assert consumer._order_locks == {}, "a finished order's lock was kept"
