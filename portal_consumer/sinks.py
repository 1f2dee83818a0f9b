"""Where notifications go: a structured log line by default, or an HTTP webhook.

Every notification is recorded first (in the same transaction as the sale's
dedupe record); delivery happens after, retried with backoff until the sink
takes it. A webhook therefore sees each notification at least once, always
with the same ``id`` to deduplicate on.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import aiohttp
import structlog

log = structlog.get_logger("portal.notify")


class Sink(Protocol):
    async def send(self, notification: dict[str, Any]) -> None:
        """Deliver or raise."""


class LogSink:
    async def send(self, notification: dict[str, Any]) -> None:
        # Never the payload: it may carry details a log must not (ticket holders' data).
        log.info("notification", notification_id=str(notification["id"]), kind=notification["kind"],
                 user_id=notification["user_id"], order_id=notification["order_id"])


class WebhookSink:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, notification: dict[str, Any]) -> None:
        body = {k: (str(v) if k == "id" else v) for k, v in notification.items()
                if k not in ("attempts", "correlation_id")}
        # The sale's correlation id travels as a header, as on every TicketFlow HTTP call (README, "Tracing").
        correlation_id = notification.get("correlation_id")
        headers = {"X-Request-Id": correlation_id} if correlation_id else None
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                async with session.post(self.url, json=body, headers=headers) as response:
                    if response.status >= 300:
                        raise ConnectionError(f"webhook answered {response.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ConnectionError(f"webhook unreachable: {exc!r}") from exc
