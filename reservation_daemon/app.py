"""Wiring and lifecycle of the reservation daemon."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import structlog
from aiohttp import web

from deploy.runtime.backoff import Backoff
from deploy.runtime.http import DependencyUnavailable, make_app
from deploy.runtime.pg import Database
from reservation_daemon import api, jobs
from reservation_daemon.config import Settings
from reservation_daemon.store import ReservationStore
from reservation_daemon.stream import make_relay

log = structlog.get_logger("reservation")


class ReservationDaemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = settings.instance or f"{socket.gethostname()}:{settings.http_port}"
        self.db = Database(settings.pg_dsn, max_size=settings.pool_size)
        self.store = ReservationStore(self.db)
        self.relay = make_relay(settings, self.store, node=self.instance)
        self.migrated = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        database = await self.db.ping()
        checks = {
            "database": "ok" if database else "unavailable",
            "schema": "ok" if self.migrated.is_set() else "pending",
            "relay": "active" if self.relay.active else "standby",
        }
        return database and self.migrated.is_set(), checks

    @web.middleware
    async def _schema_gate(self, request: web.Request, handler):
        if request.path.startswith("/api/") and not self.migrated.is_set():
            raise DependencyUnavailable("database schema not ready yet")
        return await handler(request)

    async def start(self) -> None:
        await self.db.start()
        app = make_app(api.routes(self.settings, self.store, self.ready, self.instance), self.settings.rate_limit)
        app.middlewares.append(self._schema_gate)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port).start()
        log.info("http_listening", host=self.settings.http_host, port=self.settings.http_port,
                 instance=self.instance)
        self._tasks.append(asyncio.create_task(self._migrate_then_work()))

    async def _migrate_then_work(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                applied = await self.store.migrate()
                log.info("schema_ready", applied=applied)
                break
            except Exception as exc:  # the database may not be up yet: keep trying, never exit
                log.warning("migrate_waiting", reason=repr(exc))
                await asyncio.sleep(backoff.next_delay())
        self.migrated.set()
        self._tasks += [
            asyncio.create_task(jobs.sweep_expired_holds(self.settings, self.store)),
            asyncio.create_task(jobs.prune_old_rows(self.settings, self.store)),
            asyncio.create_task(self.relay.run()),
        ]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # stop accepting, finish in-flight requests
        await self.relay.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.db.close()
