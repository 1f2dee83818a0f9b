"""Calls to the reservation and billing daemons. Every call has a timeout.

:class:`PeerUnavailable` means "try again later" (connection refused, timeout,
503, any 5xx); any other answer is returned for the caller to act on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


class PeerUnavailable(ConnectionError):
    """A daemon the portal depends on did not answer usefully; the work is retried, not failed."""


class Peers:
    def __init__(self, reservation_url: str, billing_url: str, timeout: float) -> None:
        self.reservation_url = reservation_url.rstrip("/")
        self.billing_url = billing_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=self.timeout)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _post(self, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        assert self.session is not None
        try:
            async with self.session.post(url, json=body, headers=headers) as response:
                payload = await response.json(content_type=None)
                if response.status >= 500:
                    raise PeerUnavailable(f"{url} answered {response.status}")
                return response.status, payload
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise PeerUnavailable(f"{url}: {exc!r}") from exc

    async def confirm(self, reservation_id: str) -> tuple[int, Any]:
        return await self._post(f"{self.reservation_url}/api/reservations/{reservation_id}/confirm")

    async def release_sold(self, reservation_id: str) -> tuple[int, Any]:
        return await self._post(f"{self.reservation_url}/api/reservations/{reservation_id}/release")

    async def refund(self, order_id: str, reason: str, key: str) -> tuple[int, Any]:
        return await self._post(f"{self.billing_url}/api/orders/{order_id}/refund", {"reason": reason},
                                {"Idempotency-Key": key})
