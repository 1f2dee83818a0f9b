"""The portal's RabbitMQ consumer: manual acks, bounded prefetch, dead-lettering with reasons.

Per message, one of:

- processed (or a duplicate): ack;
- a dependency is unavailable (reservation, billing or PostgreSQL down) or a peer
  answers something other than its documented answers (a 429, a 400, a 5xx, a
  timeout): retry the same message here, unacked, with capped and jittered
  backoff until it works. This never uses up the delivery limit and never
  dead-letters a good message; the message is listed as stuck meanwhile
  (portal_consumer.stuck: log lines, /ready, GET /api/stuck, ``ticketflow status``);
- unreadable (not a CloudEvent, missing fields): dead-letter at once;
- anything else failing (a bug): requeue, and after ``max_attempts`` deliveries dead-letter.

Messages are processed concurrently, up to the prefetch, but one at a time per
order: a ``payment.refunded`` must never overtake its own ``payment.succeeded``.

Dead-lettering is a confirmed publish to the dead-letter exchange carrying
the reason in ``x-ticketflow-reason``, then an ack of the original. The
queue's own ``x-delivery-limit`` backstops a message that crashes the process.
"""

from __future__ import annotations

import asyncio
import json

import aio_pika
import structlog

from deploy.runtime import correlation, metrics
from deploy.runtime.aio import wait_event
from deploy.runtime.amqp import (MalformedMessage, Names, Nodes, dead_letter_queue_arguments, declare_topology,
                                 from_message)
from deploy.runtime.backoff import Backoff
from deploy.runtime.http import DependencyUnavailable
from portal_consumer.config import Settings
from portal_consumer.peers import PeerUnavailable
from portal_consumer.sales import SaleFinalizer, UnexpectedAnswer, Unprocessable
from portal_consumer.stuck import StuckMessages

log = structlog.get_logger("portal.consumer")
# Retried in place, never dead-lettered: the message is fine, the world around it is not (yet).
RETRIED = (PeerUnavailable, UnexpectedAnswer, DependencyUnavailable, ConnectionError, OSError, asyncio.TimeoutError)


class Consumer:
    def __init__(self, settings: Settings, finalizer: SaleFinalizer, on_processed=None) -> None:
        self.settings = settings
        self.finalizer = finalizer
        self.names = Names(settings.amqp_prefix)
        self.nodes = Nodes(settings.amqp_nodes)  # a cluster: the first node that answers, the next when it dies
        self.on_processed = on_processed or (lambda: None)
        self.connected = False
        self.processed = 0
        self._stopping = asyncio.Event()
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._order_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.stuck = StuckMessages(log_every=settings.stuck_log_interval)

    async def stop(self) -> None:
        self._stopping.set()
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()

    async def run(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while not self._stopping.is_set():
            try:
                self._connection = await self.nodes.connect(timeout=5)
                dead_letters = await dead_letter_queue_arguments(self._connection, self.names.dead_letter_queue,
                                                                 cluster=len(self.nodes.urls) > 1)
                channel = await self._connection.channel(publisher_confirms=True)
                await channel.set_qos(prefetch_count=self.settings.prefetch)
                await declare_topology(channel, self.names, dead_letter_arguments=dead_letters)
                dlx = await channel.get_exchange(self.names.dead_letter_exchange)
                queue = await channel.get_queue(self.names.portal_queue)
                self.connected = True
                backoff.reset()
                log.info("consuming", queue=self.names.portal_queue, node=self.nodes.label)
                in_flight: set[asyncio.Task] = set()
                try:
                    async with queue.iterator() as messages:
                        async for message in messages:
                            task = asyncio.create_task(self._in_order(message, dlx))
                            in_flight.add(task)
                            task.add_done_callback(in_flight.discard)
                            if self._stopping.is_set():
                                break
                finally:
                    # Unfinished messages are simply not acked: the broker redelivers them.
                    for task in in_flight:
                        task.cancel()
                    await asyncio.gather(*in_flight, return_exceptions=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping.is_set():
                    log.warning("broker_connection_lost", reason=repr(exc), node=self.nodes.label)
                    self.nodes.lost()  # reconnect to the next node first
            finally:
                self.connected = False
                if self._connection is not None and not self._connection.is_closed:
                    try:
                        await self._connection.close()
                    except Exception:
                        pass
            await wait_event(self._stopping, backoff.next_delay())

    async def _in_order(self, message: aio_pika.abc.AbstractIncomingMessage, dlx) -> None:
        """Run :meth:`_handle`, serialised with other messages about the same order."""
        body = None
        try:
            body = json.loads(message.body)
            key = str(body["data"]["order_id"])
        except Exception:
            key = ""  # unreadable: _handle dead-letters it; no order to keep in sequence
        lock, users = self._order_locks.get(key, (asyncio.Lock(), 0))
        self._order_locks[key] = (lock, users + 1)
        try:
            # Every line about the message carries the id of the request behind it (README, "Tracing").
            with correlation.bound(_correlation_id(message, body)):
                async with lock:
                    await self._handle(message, dlx)
        finally:
            lock, users = self._order_locks[key]
            if users == 1:
                del self._order_locks[key]
            else:
                self._order_locks[key] = (lock, users - 1)

    async def _handle(self, message: aio_pika.abc.AbstractIncomingMessage, dlx) -> None:
        backoff = Backoff(base=0.2, cap=self.settings.retry_cap)
        message_id = message.message_id or ""
        event = None
        attempt = 1
        try:
            while True:
                try:
                    event = from_message(message.body)
                    if attempt == 1:  # a trace step (README, "Tracing"); not again per retry
                        log.info("message_consumed", message_id=message_id, type=event["type"],
                                 order_id=_text(event["data"].get("order_id")))
                    attempt += 1
                    outcome = await self.finalizer.handle(event)
                    await message.ack()
                    metrics.SALES.labels(metrics.bounded(outcome)).inc()
                    metrics.AMQP_CONSUMED.labels("acked").inc()
                    self.processed += 1
                    self.on_processed()
                    self.stuck.done(message_id, "processed")
                    return
                except (MalformedMessage, Unprocessable, KeyError, TypeError) as exc:
                    await self._dead_letter(message, dlx, f"{type(exc).__name__}: {exc}")
                    self.stuck.done(message_id, "dead_lettered")
                    return
                except RETRIED as exc:
                    if self._stopping.is_set():
                        await message.nack(requeue=True)
                        metrics.AMQP_CONSUMED.labels("requeued").inc()
                        return
                    data = event["data"] if event is not None else {}
                    self.stuck.failed(message_id, _text(data.get("order_id")), message.type, _reason(exc))
                    await asyncio.sleep(backoff.next_delay())  # the same message, again, after a pause
                except Exception as exc:
                    attempts = int((message.headers or {}).get("x-delivery-count", 0)) + 1
                    if attempts >= self.settings.max_attempts:
                        await self._dead_letter(message, dlx, f"failed {attempts} times, last: {exc!r}")
                    else:
                        log.warning("message_failed", message_id=message_id, attempt=attempts, reason=repr(exc))
                        await message.nack(requeue=True)
                        metrics.AMQP_CONSUMED.labels("requeued").inc()
                    return
        finally:
            self.stuck.done(message_id, "returned_to_queue")  # a no-op unless it left unprocessed

    async def _dead_letter(self, message, dlx, reason: str) -> None:
        headers = dict(message.headers or {})
        headers.update({"x-ticketflow-reason": reason[:500], "x-original-routing-key": message.routing_key or ""})
        metrics.AMQP_PUBLISHED.labels("dead_letters").inc()
        await dlx.publish(aio_pika.Message(
            message.body, headers=headers, content_type=message.content_type, message_id=message.message_id,
            type=message.type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=message.routing_key or "")
        metrics.AMQP_CONFIRMED.labels("dead_letters").inc()
        await message.ack()
        metrics.AMQP_CONSUMED.labels("dead_lettered").inc()
        metrics.DEAD_LETTERS.inc()
        log.warning("dead_lettered", message_id=message.message_id, reason=reason[:200])


def _correlation_id(message: aio_pika.abc.AbstractIncomingMessage, body: object) -> str | None:
    """The message's correlation id: its AMQP property, else the CloudEvent's ``correlationid``;
    only a well-formed one (deploy.runtime.correlation.accept), else None."""
    from_body = body.get("correlationid") if isinstance(body, dict) else None
    return correlation.accept(getattr(message, "correlation_id", None)) or correlation.accept(from_body)


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


class Dispatcher:
    """Delivers recorded notifications to the sink, retrying with backoff until it takes them."""

    def __init__(self, store, sink) -> None:
        self.store = store
        self.sink = sink
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    async def _deliver(self, note: dict) -> None:
        try:
            await self.sink.send(note)
            await self.store.delivered(note["id"])
            log.info("notification_delivered", notification_id=str(note["id"]), kind=note["kind"],
                     order_id=note["order_id"])  # the last trace step (README, "Tracing")
        except Exception as exc:
            # Exponential with full jitter, so a recovering webhook is not hit in lock-step.
            retry_in = Backoff(base=1.0, cap=300.0, attempt=note["attempts"]).next_delay()
            log.warning("notification_delivery_failed", notification_id=str(note["id"]),
                        retry_in=retry_in, reason=repr(exc))
            await self.store.delivery_failed(note["id"], retry_in)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                for note in await self.store.due_deliveries():
                    with correlation.bound(note.get("correlation_id")):  # its lines carry the sale's id
                        await self._deliver(note)
            except Exception as exc:
                log.warning("dispatcher_waiting", reason=repr(exc))
            await wait_event(self._wake, 1.0)
