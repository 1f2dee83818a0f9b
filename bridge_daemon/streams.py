"""The payments stream from billing, published to RabbitMQ.

``apply`` returns — and so the ack goes upstream — only after RabbitMQ has
confirmed every message of the batch. Publishes are pipelined: the whole
batch is in flight at once and the confirms are awaited together, not one
round trip per message. The position record of a batch is published once the
batch is confirmed and its own confirm is awaited with the next batch's, so an
ack costs one confirm round trip, not two (nor a queue declaration: that is
done once per channel).

The bridge keeps no state: the stream position it reports in the welcome
lives in the broker (a one-message queue written after each confirmed batch).
If that is ever lost the bridge reports 0, billing replays its retained
outbox, and consumers drop the duplicates by message id: a loss of
efficiency, never of data.

RabbitMQ may be a cluster (``TICKETFLOW_AMQP_URLS``): the bridge connects to the
first node that answers. A batch whose publishes are nacked (a quorum queue lost
its leader) or left unconfirmed (the bridge's node died) is published again,
whole, on a fresh channel (the next node if the old one is gone) until the
confirm timeout runs out: the messages confirmed the first time become
duplicates the portal drops by message id; none is ever skipped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

import aio_pika
import structlog

from bridge_daemon.config import Settings
from deploy.runtime import metrics
from deploy.runtime.aio import within
from deploy.runtime.amqp import (Names, Nodes, dead_letter_queue_arguments, declare_position_queue, declare_topology,
                                 position_queue_arguments, to_message)
from deploy.runtime.backoff import Backoff
from protocol.messages import Event

log = structlog.get_logger("bridge")
IN_STREAM = "payments"  # billing's outbound stream, received here


class BrokerUnavailable(ConnectionError):
    """RabbitMQ cannot be reached or did not confirm in time; the batch is not acked."""


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.amqp_prefix)
        self.nodes = Nodes(settings.amqp_nodes)
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        self._lock = asyncio.Lock()
        self._position_queues: dict[str, aio_pika.abc.AbstractQueue] = {}  # declared on this channel
        self._saving: asyncio.Task | None = None  # the last batch's position, still being confirmed

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def _ensure(self) -> None:
        async with self._lock:
            if self.connected and self.channel is not None and not self.channel.is_closed:
                return
            await self.close()
            try:
                self.connection = await self.nodes.connect(timeout=5)
                dead_letters = await dead_letter_queue_arguments(self.connection, self.names.dead_letter_queue,
                                                                 cluster=len(self.nodes.urls) > 1)
                self.channel = await self.connection.channel(publisher_confirms=True)
                self.exchange = await declare_topology(self.channel, self.names, dead_letter_arguments=dead_letters)
            except Exception as exc:
                if self.connection is not None:  # a node that connects but cannot serve: try it last
                    self.nodes.lost()
                await self.close()
                raise BrokerUnavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            log.info("broker_connected", exchange=self.names.exchange, node=self.nodes.label)

    async def start(self) -> None:
        """Declare the topology at start if the broker is there; later calls retry if not."""
        try:
            await self._ensure()
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", reason=str(exc))

    async def reachable(self) -> bool:
        """Connected now, or connects now (so /ready recovers without waiting for traffic)."""
        try:
            await self._ensure()
        except BrokerUnavailable:
            return False
        return True

    async def close(self) -> None:
        connection, self.connection, self.channel, self.exchange = self.connection, None, None, None
        self._position_queues = {}
        if connection is not None and not connection.is_closed:
            try:
                await within(2, connection.close())
            except Exception:
                pass

    async def publish(self, events: Sequence[Event]) -> None:
        """Every message of the batch in flight at once; returns when RabbitMQ confirmed them all.

        The previous batch's position record is confirmed alongside (see ``save_position``).
        A nack, a lost connection or a missing confirm publishes the whole batch again on a
        fresh connection (a node that died is tried last) until ``confirm_timeout`` is spent;
        then the batch fails and billing resends it.
        """
        saving, self._saving = self._saving, None
        deadline = time.monotonic() + self.settings.confirm_timeout
        backoff = Backoff(base=0.05, cap=1.0)
        attempt = 0
        while True:
            attempt += 1
            published = False
            try:
                await self._ensure()
                assert self.exchange is not None
                exchange = self.exchange
                metrics.AMQP_PUBLISHED.labels("events").inc(len(events))
                published = True
                await within(max(0.01, deadline - time.monotonic()), asyncio.gather(
                    *(exchange.publish(to_message(e), routing_key=e.type) for e in events),
                    *([saving] if saving is not None else [])))
                metrics.AMQP_CONFIRMED.labels("events").inc(len(events))
                if attempt > 1:
                    log.info("batch_republished", attempt=attempt, messages=len(events), node=self.nodes.label,
                             seq=events[-1].seq)
                return
            except Exception as exc:
                # Unknown which messages were confirmed: publish them all again (duplicates are dropped
                # by message id downstream; a skipped message would be lost).
                saving = None  # a failed position record leaves the older one; the next batch records anew
                if published:  # not a failed connect: RabbitMQ nacked the batch or left it unconfirmed
                    metrics.AMQP_NACKED.labels("events").inc(len(events))
                if not self.connected:  # the node went away with the batch: try it last
                    self.nodes.lost()
                await self.close()
                delay = backoff.next_delay()
                if time.monotonic() + delay >= deadline:
                    raise BrokerUnavailable(f"publish not confirmed after {attempt} attempts: {exc!r}") from exc
                if attempt == 1:
                    log.warning("batch_not_confirmed", reason=repr(exc), messages=len(events), seq=events[-1].seq)
                await asyncio.sleep(delay)

    async def position(self, stream: str) -> int:
        await self.settle()
        await self._ensure()
        assert self.channel is not None
        try:
            queue = await self._position_queue(stream)
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                return 0
            position = int(json.loads(message.body)["position"])
            await message.nack(requeue=True)  # only looked at: it stays the record
            return position
        except Exception as exc:
            await self.close()
            raise BrokerUnavailable(f"could not read the stream position: {exc!r}") from exc

    def save_position(self, stream: str, seq: int) -> None:
        """Record ``seq`` (every message up to it confirmed) as the stream's position, without waiting.

        Its confirm is awaited with the next batch's (or by ``settle``), so the ack upstream does
        not wait for a second round trip. It is published only after its batch was confirmed, so
        the record never runs ahead of what the broker holds; if it is lost (the bridge dies
        first), the record is one batch older and billing resends that batch: duplicates the
        consumers drop by message id, never a gap.
        """
        assert self._saving is None, "one position record in flight at a time"
        self._saving = asyncio.ensure_future(self._save_position(stream, seq))
        self._saving.add_done_callback(_retrieved)

    async def settle(self) -> None:
        """Wait for the position record in flight, if any (a failed one just leaves the older record)."""
        saving, self._saving = self._saving, None
        if saving is not None:
            try:
                await saving
            except BrokerUnavailable:
                pass

    async def _save_position(self, stream: str, seq: int) -> None:
        try:
            await self._ensure()
            assert self.channel is not None
            channel = self.channel
            await self._position_queue(stream)
            await within(self.settings.confirm_timeout, channel.default_exchange.publish(
                aio_pika.Message(json.dumps({"stream": stream, "position": seq}).encode(),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self.names.position_queue(stream)))
        except Exception as exc:
            await self.close()
            raise BrokerUnavailable(f"position not confirmed: {exc!r}") from exc

    async def _position_queue(self, stream: str) -> aio_pika.abc.AbstractQueue:
        assert self.channel is not None
        if stream not in self._position_queues:
            # A quorum queue holding one message, the newest. Declared once per channel.
            assert self.connection is not None
            name = self.names.position_queue(stream)
            await declare_position_queue(self.connection, name)  # converts a classic one, once
            self._position_queues[stream] = await self.channel.declare_queue(
                name, durable=True, arguments=position_queue_arguments())
        return self._position_queues[stream]


def _trace(event: Event) -> list[object]:
    data = event.data if isinstance(event.data, dict) else {}
    return [event.seq, event.correlation_id, data.get("order_id"), event.type]


def _retrieved(task: asyncio.Task) -> None:
    """A position record that failed after the bridge stopped waiting for it is not an error to report."""
    if not task.cancelled():
        task.exception()


class PaymentsToBroker:
    """The protocol StreamHandler: 'durably applied' means confirmed by RabbitMQ."""

    def __init__(self, publisher: Publisher, stream: str) -> None:
        self.publisher = publisher
        self.stream = stream

    async def position(self) -> int:
        return await self.publisher.position(self.stream)

    async def apply(self, events: Sequence[Event]) -> None:
        # Trace lines (README, "Tracing"): one per batch, each event as [seq, correlation id, order id, type].
        trace = [_trace(e) for e in events]
        log.info("events_published", stream=self.stream, first_seq=events[0].seq, last_seq=events[-1].seq,
                 count=len(events), trace=trace)
        await self.publisher.publish(events)
        log.info("events_confirmed", stream=self.stream, first_seq=events[0].seq, last_seq=events[-1].seq,
                 count=len(events), trace=trace)
        # Recorded only after every message of the batch is confirmed, so the broker's
        # position never runs ahead of what the broker holds; confirmed with the next batch.
        self.publisher.save_position(self.stream, events[-1].seq)
