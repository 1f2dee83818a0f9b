"""RabbitMQ topology and message format shared by the bridge, the portal and the operator tools.

Topology (declared idempotently by the bridge at start, and by the portal):

- ``<prefix>.events``: durable topic exchange; routing key = event type (``payment.succeeded``).
- ``<prefix>.portal``: the portal's quorum queue, bound to ``payment.*``. Quorum queues
  are replicated in a cluster and count redeliveries (``x-delivery-count``).
- ``<prefix>.dlx`` / ``<prefix>.portal.dlq``: where messages that keep failing end up,
  with the reason in their headers (a quorum queue in a cluster, classic on one node).
- ``<prefix>.bridge.position.<stream>``: a one-message quorum queue holding the last stream
  position the bridge published and had confirmed. The bridge keeps no state of
  its own; the broker keeps this for it. (It was a classic queue before the RabbitMQ
  cluster: :func:`declare_position_queue` turns such a queue into a quorum queue,
  keeping its record.)

Quorum queues need no cluster (a single node hosts them, as in the local topology);
in the HA topology's three-node cluster each has three members and survives a node.
The daemons get the cluster as a list of URLs (``TICKETFLOW_AMQP_URLS``) and use
:class:`Nodes` to connect to the first that answers and to move on when theirs dies.

The prefix is ``ticketflow`` by default (so the exchange is ``ticketflow.events``); tests
use their own prefixes to stay out of each other's way.

Messages are CloudEvents 1.0 in structured mode: ``content_type`` is
``application/cloudevents+json`` and the body is the event as JSON, so any
CloudEvents SDK can read it. ``message_id`` is the event id: consumers dedupe on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
import structlog

from deploy.runtime.config import setting

from protocol.messages import Event

CLOUDEVENTS_JSON = "application/cloudevents+json"
log = structlog.get_logger("amqp")


def amqp_urls_setting() -> Any:
    return setting("TICKETFLOW_AMQP_URLS", "", str,
                   "RabbitMQ cluster: comma-separated URLs, tried in turn (overrides TICKETFLOW_AMQP_URL)")


def url_list(url: str, urls: str) -> list[str]:
    """The nodes to use: ``urls`` (comma-separated) if set, else the single ``url``."""
    listed = [u.strip() for u in urls.split(",") if u.strip()]
    return listed or [url]


def node_label(url: str) -> str:
    """host:port of a URL, for logs (never the credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


class NoNodeAnswers(ConnectionError):
    """No node of the list accepted an AMQP connection."""


class Nodes:
    """Connects to the first node of a list that answers.

    After a connection was lost (``lost()``), the next connect starts with the
    node after the one that was in use: a dead node is tried last, not first.
    """

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no RabbitMQ URL")
        self.urls = list(urls)
        self.current = 0

    @property
    def label(self) -> str:
        return node_label(self.urls[self.current])

    def lost(self) -> None:
        self.current = (self.current + 1) % len(self.urls)

    async def connect(self, timeout: float = 5.0) -> aio_pika.abc.AbstractConnection:
        failures = []
        for k in range(len(self.urls)):
            i = (self.current + k) % len(self.urls)
            try:
                connection = await aio_pika.connect(self.urls[i], timeout=timeout)
            except Exception as exc:
                failures.append(f"{node_label(self.urls[i])}: {exc!r}")
                continue
            self.current = i
            return connection
        raise NoNodeAnswers("; ".join(failures))


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


QUORUM = {"x-queue-type": "quorum"}


async def dead_letter_queue_arguments(connection: aio_pika.abc.AbstractConnection, name: str,
                                      cluster: bool) -> dict[str, Any]:
    """The arguments to declare the dead-letter queue with: a quorum queue's in a cluster, else a classic one's.

    A classic queue lives on one node and is unusable while that node is down (even
    declaring it fails), so with a list of nodes the dead-letter queue is a quorum
    queue. On a single node (the local topology) it stays classic, as before: that is
    what operators' tools declare. Whatever type already exists is kept (a queue's type
    cannot change, and it may hold dead letters). Checked on a channel of its own (a
    refused declaration closes its channel).
    """
    preferred, other = (QUORUM, {}) if cluster else ({}, QUORUM)
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=preferred)
        return preferred
    except aiormq.exceptions.ChannelPreconditionFailed:
        log.warning("dead_letter_queue_type_kept", queue=name, quorum=bool(other))
        return other
    finally:
        if not channel.is_closed:
            await channel.close()


async def declare_topology(channel: aio_pika.abc.AbstractChannel, names: Names, delivery_limit: int = 20,
                           dead_letter_arguments: dict[str, Any] | None = None) -> aio_pika.abc.AbstractExchange:
    """Declare everything (idempotent); returns the events exchange."""
    exchange = await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    dlq = await channel.declare_queue(names.dead_letter_queue, durable=True, arguments=dead_letter_arguments or {})
    await dlq.bind(dlx)
    portal = await channel.declare_queue(names.portal_queue, durable=True, arguments={
        **QUORUM,
        "x-dead-letter-exchange": names.dead_letter_exchange,
        # A backstop: the portal dead-letters a failing message itself (with its reason)
        # well before this; the broker does it if the portal crashes on it every time.
        "x-delivery-limit": delivery_limit,
    })
    await portal.bind(exchange, routing_key="payment.*")
    return exchange


def position_queue_arguments() -> dict[str, Any]:
    # One message, the newest: each save pushes the previous one out.
    return {**QUORUM, "x-max-length": 1, "x-overflow": "drop-head"}


async def declare_position_queue(connection: aio_pika.abc.AbstractConnection, name: str) -> None:
    """Make sure ``name`` is the bridge's quorum position queue, converting a classic one.

    A queue's type cannot change once declared: a classic position queue (from
    before the cluster) is read, deleted, declared again as a quorum queue and its
    record published back with a confirm. If the bridge dies in between the record
    is lost, and the bridge reports position 0: billing replays its retained
    outbox and consumers drop the duplicates by message id (a loss of
    efficiency, never of data). Runs on channels of its own (a failed declaration
    closes its channel).
    """
    channel = await connection.channel(publisher_confirms=True)
    try:
        await channel.declare_queue(name, durable=True, arguments=position_queue_arguments())
        return
    except aiormq.exceptions.ChannelPreconditionFailed:
        pass  # an existing queue of another type (or other arguments)
    finally:
        if not channel.is_closed:
            await channel.close()
    channel = await connection.channel(publisher_confirms=True)
    try:
        old = await channel.declare_queue(name, passive=True)
        message = await old.get(no_ack=True, fail=False)
        await old.delete(if_unused=False, if_empty=False)
        await channel.declare_queue(name, durable=True, arguments=position_queue_arguments())
        if message is not None:
            # A fresh channel: RabbitMQ 3.10 crashes a channel that publishes to a queue it saw
            # deleted and declared again with another type (INTERNAL_ERROR closes the connection).
            await channel.close()
            channel = await connection.channel(publisher_confirms=True)
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=name)
        log.warning("position_queue_converted_to_quorum", queue=name, kept_record=message is not None)
    finally:
        if not channel.is_closed:
            await channel.close()


def to_message(event: Event) -> aio_pika.Message:
    """The event as a CloudEvent; its correlation id (if any) as the extension attribute
    ``correlationid`` and as the message's AMQP ``correlation_id`` property (README, "Tracing")."""
    body = {"specversion": "1.0", "id": event.id, "source": event.source, "type": event.type,
            "time": event.time, "datacontenttype": "application/json", "data": event.data}
    if event.correlation_id is not None:
        body["correlationid"] = event.correlation_id
    return aio_pika.Message(
        json.dumps(body, separators=(",", ":")).encode(), content_type=CLOUDEVENTS_JSON, message_id=event.id,
        type=event.type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers={"ticketflow-seq": event.seq},
        correlation_id=event.correlation_id,
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
