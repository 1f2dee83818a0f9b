"""Start serving before the database is there: migrate in the background, gate the API.

A daemon listens (so /health and /ready can tell the truth) as soon as it
starts, even while its database is still coming up. :class:`SchemaGate` applies
the store's migrations, retrying with backoff until they succeed, and until then
answers every ``/api/`` request 503 with ``Retry-After`` instead of letting it
hit a schema that does not exist yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from deploy.runtime.backoff import Backoff
from deploy.runtime.http import DependencyUnavailable

log = structlog.get_logger("schema")


class SchemaGate:
    def __init__(self, migrate: Callable[[], Awaitable[list[str]]]) -> None:
        self._migrate = migrate
        self.done = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.done.is_set()

    async def migrate_until_done(self) -> None:
        """Apply the migrations; a database that is not up yet is waited for, never a reason to exit."""
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                applied = await self._migrate()
                break
            except Exception as exc:  # noqa: BLE001 - every failure here means "not yet"
                log.warning("migrate_waiting", reason=repr(exc))
                await asyncio.sleep(backoff.next_delay())
        log.info("schema_ready", applied=applied)
        self.done.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.path.startswith("/api/") and not self.done.is_set():
            raise DependencyUnavailable("database schema not ready yet")
        return await handler(request)
