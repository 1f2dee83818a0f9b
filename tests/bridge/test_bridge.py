"""The bridge against the real RabbitMQ: message format, confirms before acks, a broker that goes away.

The test plays billing: a protocol Sender streams payment events to a real
bridge process, and reads what reaches the portal's queue.
"""

import asyncio
import json
import uuid
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import pytest

from deploy.runtime.amqp import CLOUDEVENTS_JSON, Names
from deploy.runtime.config import DEV_LINK_SECRET
from protocol.link import LinkSettings
from protocol.messages import Event
from protocol.sender import Sender
from tests.helpers import ListSource, TcpGate, wait_until
from tests.support.daemons import DaemonProcess
from tests.support.stack import free_port, stack_env

pytestmark = pytest.mark.stack


def payments(start: int, n: int) -> list[Event]:
    return [Event(seq, f"pay-{seq}-{uuid.uuid4().hex[:6]}", "payment.succeeded", "billing-test",
                  "2026-11-24T00:00:00Z", {"order_id": str(uuid.UUID(int=seq)), "amount_minor": seq})
            for seq in range(start, start + n)]


@pytest.fixture
async def bridge(tmp_path):
    """A bridge process whose RabbitMQ connection runs through a gate the test can shut."""
    amqp = urlsplit(stack_env()["TICKETFLOW_AMQP_URL"])
    gate = TcpGate(amqp.port, free_port())
    await gate.open()
    names = Names(f"tf-bridge-{uuid.uuid4().hex[:8]}")
    http_port, link_port = free_port(), free_port()
    process = DaemonProcess("bridge_daemon", {
        "TICKETFLOW_AMQP_URL": f"amqp://{amqp.username}:{amqp.password}@127.0.0.1:{gate.port}/",
        "TICKETFLOW_AMQP_PREFIX": names.prefix, "TICKETFLOW_BRIDGE_PORT": str(http_port),
        "TICKETFLOW_BRIDGE_LINK_PORT": str(link_port), "TICKETFLOW_BRIDGE_CONFIRM_TIMEOUT_SECONDS": "2",
    }, tmp_path / "bridge.log", ready_url=f"http://127.0.0.1:{http_port}/ready")
    await process.start_ready()
    broker = await aio_pika.connect(stack_env()["TICKETFLOW_AMQP_URL"])
    try:
        yield process, gate, names, link_port, broker
    finally:
        process.kill()
        await gate.shut()
        channel = await broker.channel()
        for queue in (names.portal_queue, names.dead_letter_queue, names.position_queue("payments")):
            await channel.queue_delete(queue)
        for exchange in (names.exchange, names.dead_letter_exchange):
            await channel.exchange_delete(exchange)
        await broker.close()


async def drain(broker, queue_name: str, expect: int, timeout: float = 20) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Messages in the queue until ``expect`` distinct ids have arrived (duplicates kept)."""
    channel = await broker.channel()
    queue = await channel.get_queue(queue_name)
    got, ids = [], set()

    async def more() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
            ids.add(message.message_id)
        return len(ids) >= expect

    await wait_until(more, timeout, f"{expect} distinct messages in {queue_name}")
    await channel.close()
    return got


def sender_for(link_port: int, source: ListSource) -> tuple[Sender, asyncio.Task]:
    sender = Sender("127.0.0.1", link_port, "payments", source.read,
                    LinkSettings(secret=DEV_LINK_SECRET, node="billing-test", window=64), head=source.head,
                    poll_interval=0.1)
    return sender, asyncio.create_task(sender.run())


async def test_payments_become_persistent_cloudevents_routed_by_type(bridge):
    process, gate, names, link_port, broker = bridge
    source = ListSource(payments(1, 500))
    sender, task = sender_for(link_port, source)
    try:
        await wait_until(lambda: sender.acked == 500, 20, "all 500 payments confirmed and acked")
        messages = await drain(broker, names.portal_queue, 500)
    finally:
        await sender.stop()
        task.cancel()
    assert [m.message_id for m in messages] == [e.id for e in source.events], "in order, each once"
    first, event = messages[0], source.events[0]
    assert first.content_type == CLOUDEVENTS_JSON == "application/cloudevents+json"
    assert first.routing_key == "payment.succeeded" and first.type == "payment.succeeded"
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    body = json.loads(first.body)
    assert body == {"specversion": "1.0", "id": event.id, "source": "billing-test", "type": "payment.succeeded",
                    "time": "2026-11-24T00:00:00Z", "datacontenttype": "application/json", "data": event.data}


async def test_the_broker_going_away_stops_acks_and_nothing_is_lost_when_it_returns(bridge):
    process, gate, names, link_port, broker = bridge
    source = ListSource(payments(1, 300))
    sender, task = sender_for(link_port, source)
    ready_url = process.ready_url
    try:
        await wait_until(lambda: sender.acked == 300, 20, "the first 300 acked")
        await gate.shut()  # RabbitMQ unreachable from the bridge

        async def bridge_not_ready() -> bool:
            async with aiohttp.ClientSession() as session, session.get(ready_url) as reply:
                return reply.status == 503

        await wait_until(bridge_not_ready, 10, "the bridge reporting RabbitMQ unavailable")
        source.events += payments(301, 300)
        sender.notify()
        await wait_until(lambda: sender.connects >= 2 or not sender.connected, 10, "the link noticing")
        assert sender.acked == 300, "an event was acked that RabbitMQ never confirmed"
        await gate.open()
        await wait_until(lambda: sender.acked == 600, 30, "the backlog confirmed once RabbitMQ is back")
        messages = await drain(broker, names.portal_queue, 600)
    finally:
        await sender.stop()
        task.cancel()
    # At least once into RabbitMQ (a batch whose confirms were lost is published again; the
    # portal dedupes by message_id); never a gap, never out of order at first appearance.
    first_seen = list(dict.fromkeys(m.message_id for m in messages))
    assert first_seen == [e.id for e in source.events]


async def read_position(broker, names) -> int | None:
    channel = await broker.channel()
    try:
        queue = await channel.get_queue(names.position_queue("payments"))
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return None
        await message.nack(requeue=True)
        return json.loads(message.body)["position"]
    finally:
        await channel.close()


async def test_the_last_batchs_position_is_recorded_without_a_next_batch_to_carry_its_confirm(bridge):
    """A batch's position record is confirmed with the next batch's messages (one round trip per
    ack); the last batch has no next one, and its record must still reach the broker."""
    _, _, names, link_port, broker = bridge
    source = ListSource(payments(1, 400))
    sender, task = sender_for(link_port, source)

    async def recorded() -> bool:
        return sender.acked == 400 and await read_position(broker, names) == 400

    try:
        await wait_until(recorded, 20, "all 400 acked and the bridge's position record at 400")
    finally:
        await sender.stop()
        task.cancel()
    messages = await drain(broker, names.portal_queue, 400)
    assert [m.message_id for m in messages] == [e.id for e in source.events], "in order, each once"
