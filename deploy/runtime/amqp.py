"""RabbitMQ topology and message format shared by the bridge, the portal and the operator tools.

Topology (declared idempotently by the bridge at start, and by the portal):

- ``<prefix>.events``: durable topic exchange; routing key = event type (``payment.succeeded``).
- ``<prefix>.portal``: the portal's quorum queue, bound to ``payment.*``. Quorum queues
  are replicated in a cluster and count redeliveries (``x-delivery-count``).
- ``<prefix>.dlx`` / ``<prefix>.portal.dlq``: where messages that keep failing end up,
  with the reason in their headers.
- ``<prefix>.bridge.position.<stream>``: a one-message queue holding the last stream
  position the bridge published and had confirmed. The bridge keeps no state of
  its own; the broker keeps this for it.

The prefix is ``ticketflow`` by default (so the exchange is ``ticketflow.events``); tests
use their own prefixes to stay out of each other's way.

Messages are CloudEvents 1.0 in structured mode: ``content_type`` is
``application/cloudevents+json`` and the body is the event as JSON, so any
CloudEvents SDK can read it. ``message_id`` is the event id: consumers dedupe on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aio_pika

from protocol.messages import Event

CLOUDEVENTS_JSON = "application/cloudevents+json"


@dataclass(frozen=True)
class Names:
    prefix: str = "ticketflow"

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def portal_queue(self) -> str:
        return f"{self.prefix}.portal"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.portal.dlq"

    def position_queue(self, stream: str) -> str:
        return f"{self.prefix}.bridge.position.{stream}"


async def declare_topology(channel: aio_pika.abc.AbstractChannel, names: Names,
                           delivery_limit: int = 20) -> aio_pika.abc.AbstractExchange:
    """Declare everything (idempotent); returns the events exchange."""
    exchange = await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    dlq = await channel.declare_queue(names.dead_letter_queue, durable=True)
    await dlq.bind(dlx)
    portal = await channel.declare_queue(names.portal_queue, durable=True, arguments={
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": names.dead_letter_exchange,
        # A backstop: the portal dead-letters a failing message itself (with its reason)
        # well before this; the broker does it if the portal crashes on it every time.
        "x-delivery-limit": delivery_limit,
    })
    await portal.bind(exchange, routing_key="payment.*")
    return exchange


def to_message(event: Event) -> aio_pika.Message:
    body = {"specversion": "1.0", "id": event.id, "source": event.source, "type": event.type,
            "time": event.time, "datacontenttype": "application/json", "data": event.data}
    return aio_pika.Message(
        json.dumps(body, separators=(",", ":")).encode(), content_type=CLOUDEVENTS_JSON, message_id=event.id,
        type=event.type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers={"ticketflow-seq": event.seq},
    )


class MalformedMessage(ValueError):
    """The body is not a CloudEvent this consumer can read; retrying cannot help."""


def from_message(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"body is not JSON: {exc}") from None
    if not isinstance(event, dict) or event.get("specversion") != "1.0":
        raise MalformedMessage("not a CloudEvents 1.0 structured-mode event")
    for attribute in ("id", "type", "source"):
        if not isinstance(event.get(attribute), str):
            raise MalformedMessage(f"missing CloudEvents attribute {attribute!r}")
    if not isinstance(event.get("data"), dict):
        raise MalformedMessage("data must be a JSON object")
    return event
