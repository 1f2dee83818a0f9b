"""Calls from one daemon to another's HTTP API, as a service, with a timeout on every call.

The caller presents the service token the stack provisioned for it
(``TICKETFLOW_SERVICE_TOKEN_FILE``): nothing trusts a caller because it is on
loopback. The file is re-read when it changes, so re-provisioning needs no
restart.

:class:`PeerUnavailable` means "try again later" (connection refused, timeout,
any 5xx, a 429); any other answer is returned for the caller to act on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from deploy.runtime import correlation
from deploy.runtime.auth import read_token_file


class PeerUnavailable(ConnectionError):
    """A daemon did not answer usefully right now; the work is retried, not failed."""


class ServiceToken:
    """This daemon's service credential, read from its file (re-read when the file changes)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._cached: tuple[float, str] | None = None

    def header(self) -> dict[str, str]:
        if self.path is None:
            return {}
        mtime = self.path.stat().st_mtime
        if self._cached is None or self._cached[0] != mtime:
            self._cached = (mtime, read_token_file(self.path))
        return {"Authorization": f"Bearer {self._cached[1]}"}


class Peer:
    """One other daemon's API."""

    def __init__(self, base_url: str, token: ServiceToken, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=self.timeout)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        if self.session is None:
            await self.start()
        assert self.session is not None
        url = self.base_url + path
        try:
            # The correlation id of what this task is doing goes along (README, "Tracing").
            correlation_id = correlation.current()
            traced = {correlation.HEADER: correlation_id} if correlation_id is not None else {}
            async with self.session.request(method, url, json=body,
                                            headers={**self.token.header(), **traced, **(headers or {})}) as response:
                payload = await response.json(content_type=None)
                if response.status >= 500 or response.status == 429:
                    raise PeerUnavailable(f"{method} {url} answered {response.status}")
                return response.status, payload
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise PeerUnavailable(f"{method} {url}: {exc!r}") from exc
