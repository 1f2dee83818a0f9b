"""Dead letters for the operators' console: list, inspect one, requeue it to the portal's queue, discard it.

RabbitMQ has no "browse" of a queue, so each operation opens its own channel on a short-lived
connection and takes up to :data:`LIMIT` messages from the dead-letter queue with ``basic.get``
without acking them; the one asked for is acted on, and closing the channel hands every other one
back to the queue unchanged (RabbitMQ requeues unacked messages). One operation at a time (a lock):
a message one browse holds is invisible to another. A message is named by its AMQP ``message_id``
(the bridge sets the event id; one without gets ``sha256:`` of its body).

- **Requeue**: a confirmed publish of the same body, message id, type and headers (minus the
  dead-lettering ones, plus who requeued it) to the portal's queue through the default exchange,
  then the ack of the dead letter: at least once; a duplicate would be dropped by the portal's
  dedupe on the event id.
- **Discard**: the ack alone.
- Both are logged (``dead_letter_requeued`` / ``dead_letter_discarded``: message id, who, role).

What is shown never carries secrets: header and body fields whose names look like credentials
(password, token, secret, authorization, cookie, code) are replaced by ``[redacted]``, and
anything shaped like a JWT in a body that is not JSON too. (The portal's events carry ticket ids,
never codes; this is the belt to those braces.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from typing import Any

import aio_pika
import structlog

from deploy.runtime.amqp import Names, Nodes

log = structlog.get_logger("portal.dead_letters")

LIMIT = 200  # dead letters looked at per operation (the listing says when there are more)
BODY_LIMIT = 16_000
SECRET_NAME = re.compile(r"pass(word)?|token|secret|authori[sz]ation|cookie|api[-_]?key|^code$|_code$|ticket_code",
                         re.IGNORECASE)
JWT = re.compile(r"eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]{5,}")
REDACTED = "[redacted]"
DEAD_LETTER_HEADERS = ("x-ticketflow-reason", "x-original-routing-key", "x-death", "x-first-death-exchange",
                       "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                       "x-last-death-queue", "x-last-death-reason", "x-delivery-count")


class NoSuchDeadLetter(LookupError):
    pass


def message_key(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    return message.message_id or "sha256:" + hashlib.sha256(message.body).hexdigest()[:32]


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_NAME.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return JWT.sub(REDACTED, value)
    return value


def _plain(value: Any) -> Any:
    """Header values as JSON (AMQP tables may hold bytes, datetimes)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def summary(message: aio_pika.abc.AbstractIncomingMessage) -> dict[str, Any]:
    headers = message.headers or {}
    reason = headers.get("x-ticketflow-reason")
    return {"id": message_key(message), "type": message.type,
            "routing_key": _plain(headers.get("x-original-routing-key")) or message.routing_key or None,
            "reason": JWT.sub(REDACTED, _plain(reason)) if reason is not None else None,
            "size": len(message.body),
            "timestamp": message.timestamp.isoformat() if message.timestamp else None}


def detail(message: aio_pika.abc.AbstractIncomingMessage) -> dict[str, Any]:
    raw = message.body
    try:
        body: Any = redact(json.loads(raw))
        encoding = "json"
    except ValueError:
        try:
            body, encoding = JWT.sub(REDACTED, raw.decode("utf-8"))[:BODY_LIMIT], "text"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(raw[:BODY_LIMIT]).decode(), "base64"
    return {**summary(message), "content_type": message.content_type,
            "headers": redact(_plain(dict(message.headers or {}))), "body": body, "body_encoding": encoding}


class DeadLetters:
    def __init__(self, urls: list[str], names: Names) -> None:
        self.urls = urls
        self.names = names
        self._lock = asyncio.Lock()

    async def _browse(self, wanted: str | None, act) -> Any:
        """Take up to LIMIT dead letters unacked; ``act(channel, messages)`` decides; the rest go back."""
        async with self._lock:
            connection = await Nodes(self.urls).connect(timeout=5)
            try:
                channel = await connection.channel(publisher_confirms=True)
                queue = await channel.declare_queue(self.names.dead_letter_queue, passive=True)
                total = queue.declaration_result.message_count
                messages: list[aio_pika.abc.AbstractIncomingMessage] = []
                while len(messages) < LIMIT:
                    message = await queue.get(no_ack=False, fail=False, timeout=5)
                    if message is None:
                        break
                    messages.append(message)
                    if wanted is not None and message_key(message) == wanted:
                        break
                answer = await act(channel, messages, total)
                await channel.close()  # every message not acked goes back to the queue
                return answer
            finally:
                await connection.close()

    async def listing(self) -> dict[str, Any]:
        async def act(channel, messages, total):
            return {"count": total, "shown": len(messages), "dead_letters": [summary(m) for m in messages]}

        return await self._browse(None, act)

    async def inspect(self, key: str) -> dict[str, Any]:
        async def act(channel, messages, total):
            return detail(self._find(messages, key))

        return await self._browse(key, act)

    async def requeue(self, key: str, actor: str, role: str) -> dict[str, Any]:
        async def act(channel, messages, total):
            message = self._find(messages, key)
            headers = {k: v for k, v in (message.headers or {}).items() if k not in DEAD_LETTER_HEADERS}
            headers["x-ticketflow-requeued-by"] = actor
            await channel.default_exchange.publish(aio_pika.Message(
                message.body, headers=headers, content_type=message.content_type, message_id=message.message_id,
                type=message.type, timestamp=message.timestamp, correlation_id=message.correlation_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=self.names.portal_queue)
            await message.ack()  # after the confirmed publish: at least once, never lost
            log.info("dead_letter_requeued", message_id=key, actor=actor, actor_role=role,
                     queue=self.names.portal_queue)
            return {"id": key, "outcome": "requeued", "queue": self.names.portal_queue}

        return await self._browse(key, act)

    async def discard(self, key: str, actor: str, role: str) -> dict[str, Any]:
        async def act(channel, messages, total):
            message = self._find(messages, key)
            await message.ack()
            log.info("dead_letter_discarded", message_id=key, actor=actor, actor_role=role, type=message.type)
            return {"id": key, "outcome": "discarded"}

        return await self._browse(key, act)

    @staticmethod
    def _find(messages, key: str):
        for message in messages:
            if message_key(message) == key:
                return message
        raise NoSuchDeadLetter(key)
