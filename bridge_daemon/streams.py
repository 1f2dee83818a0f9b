"""The payments stream from billing, published to RabbitMQ.

``apply`` returns — and so the ack goes upstream — only after RabbitMQ has
confirmed every message of the batch. Publishes are pipelined: the whole
batch is in flight at once and the confirms are awaited together, not one
round trip per message.

The bridge keeps no state: the stream position it reports in the welcome
lives in the broker (a one-message queue written after each confirmed batch).
If that is ever lost the bridge reports 0, billing replays its retained
outbox, and consumers drop the duplicates by message id: a loss of
efficiency, never of data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import aio_pika
import structlog

from bridge_daemon.config import Settings
from deploy.runtime.aio import within
from deploy.runtime.amqp import Names, declare_topology, to_message
from protocol.messages import Event

log = structlog.get_logger("bridge")
IN_STREAM = "payments"  # billing's outbound stream, received here


class BrokerUnavailable(ConnectionError):
    """RabbitMQ cannot be reached or did not confirm in time; the batch is not acked."""


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.amqp_prefix)
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def _ensure(self) -> None:
        async with self._lock:
            if self.connected and self.channel is not None and not self.channel.is_closed:
                return
            await self.close()
            try:
                self.connection = await aio_pika.connect(self.settings.amqp_url, timeout=5)
                self.channel = await self.connection.channel(publisher_confirms=True)
                self.exchange = await declare_topology(self.channel, self.names)
            except Exception as exc:
                await self.close()
                raise BrokerUnavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            log.info("broker_connected", exchange=self.names.exchange)

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
        if connection is not None and not connection.is_closed:
            try:
                await within(2, connection.close())
            except Exception:
                pass

    async def publish(self, events: Sequence[Event]) -> None:
        await self._ensure()
        assert self.exchange is not None
        try:
            await within(self.settings.confirm_timeout, asyncio.gather(*(
                self.exchange.publish(to_message(e), routing_key=e.type) for e in events)))
        except Exception as exc:
            await self.close()  # unknown which messages were confirmed: reconnect, billing resends
            raise BrokerUnavailable(f"publish not confirmed: {exc!r}") from exc

    async def position(self, stream: str) -> int:
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

    async def save_position(self, stream: str, seq: int) -> None:
        assert self.channel is not None
        try:
            await self._position_queue(stream)
            await within(self.settings.confirm_timeout, self.channel.default_exchange.publish(
                aio_pika.Message(json.dumps({"stream": stream, "position": seq}).encode(),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self.names.position_queue(stream)))
        except Exception as exc:
            await self.close()
            raise BrokerUnavailable(f"position not confirmed: {exc!r}") from exc

    async def _position_queue(self, stream: str) -> aio_pika.abc.AbstractQueue:
        assert self.channel is not None
        # One message, the newest: each save pushes the previous one out.
        return await self.channel.declare_queue(self.names.position_queue(stream), durable=True,
                                                arguments={"x-max-length": 1, "x-overflow": "drop-head"})


class PaymentsToBroker:
    """The protocol StreamHandler: 'durably applied' means confirmed by RabbitMQ."""

    def __init__(self, publisher: Publisher, stream: str) -> None:
        self.publisher = publisher
        self.stream = stream

    async def position(self) -> int:
        return await self.publisher.position(self.stream)

    async def apply(self, events: Sequence[Event]) -> None:
        await self.publisher.publish(events)
        # Recorded only after every message of the batch is confirmed, so the broker's
        # position never runs ahead of what the broker holds.
        await self.publisher.save_position(self.stream, events[-1].seq)
