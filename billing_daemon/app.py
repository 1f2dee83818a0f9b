"""Wiring and lifecycle of the billing daemon."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import structlog
from aiohttp import web

from billing_daemon import api
from billing_daemon.config import Settings
from billing_daemon.gateway import MockGateway
from billing_daemon.store import BillingStore
from billing_daemon.stream import make_receiver, make_relay
from deploy.runtime.backoff import Backoff
from deploy.runtime.http import DependencyUnavailable, make_app
from deploy.runtime.mysql import MariaDB

log = structlog.get_logger("billing")
PRUNE_INTERVAL = 300.0


class BillingDaemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = settings.instance or f"{socket.gethostname()}:{settings.http_port}"
        self.db = MariaDB(settings.mariadb_dsn, max_size=settings.pool_size)
        self.store = BillingStore(self.db)
        self.gateway = MockGateway(settings.payment_success_rate, settings.payment_seed,
                                   settings.payment_latency_ms)
        self.receiver = make_receiver(settings, self.store, self.instance)
        self.relay = make_relay(settings, self.store, self.instance)
        self.migrated = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        database = await self.db.ping()
        checks = {"database": "ok" if database else "unavailable",
                  "schema": "ok" if self.migrated.is_set() else "pending",
                  "relay": "active" if self.relay.active else "standby"}
        return database and self.migrated.is_set(), checks

    @web.middleware
    async def _schema_gate(self, request: web.Request, handler):
        if request.path.startswith("/api/") and not self.migrated.is_set():
            raise DependencyUnavailable("database schema not ready yet")
        return await handler(request)

    async def start(self) -> None:
        await self.db.start()
        app = make_app(api.routes(self.settings, self.store, self.gateway, self.ready, self.instance),
                       self.settings.rate_limit)
        app.middlewares.append(self._schema_gate)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port).start()
        log.info("http_listening", port=self.settings.http_port, instance=self.instance)
        self._tasks.append(asyncio.create_task(self._migrate_then_work()))

    async def _migrate_then_work(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                log.info("schema_ready", applied=await self.store.migrate())
                break
            except Exception as exc:  # the database may not be up yet: keep trying, never exit
                log.warning("migrate_waiting", reason=repr(exc))
                await asyncio.sleep(backoff.next_delay())
        self.migrated.set()
        # The inbox opens only once the schema exists, so a welcome position is always real.
        await self.receiver.start()
        self._tasks += [asyncio.create_task(self.relay.run()), asyncio.create_task(self._prune())]

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL * random.uniform(0.8, 1.2))
            try:
                outbox, keys = await self.store.prune(self.settings.retention_hours, self.settings.idempotency_hours)
                if outbox or keys:
                    log.info("pruned", outbox_rows=outbox, idempotency_keys=keys)
            except Exception as exc:
                log.warning("prune_failed", reason=repr(exc))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.receiver.stop()
        await self.relay.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.db.close()
