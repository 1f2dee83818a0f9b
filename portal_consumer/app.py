"""Wiring and lifecycle of the portal consumer."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import structlog
from aiohttp import web

from deploy.runtime.backoff import Backoff
from deploy.runtime.http import make_app
from deploy.runtime.pg import Database
from portal_consumer import api
from portal_consumer.config import Settings
from portal_consumer.peers import Peers
from portal_consumer.sales import SaleFinalizer
from portal_consumer.sinks import LogSink, WebhookSink
from portal_consumer.store import PortalStore
from portal_consumer.stream import Consumer, Dispatcher

log = structlog.get_logger("portal")


class PortalConsumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = settings.instance or f"{socket.gethostname()}:{settings.http_port}"
        self.db = Database(settings.pg_dsn, max_size=10)
        self.store = PortalStore(self.db)
        self.peers = Peers(settings.reservation_url, settings.billing_url, settings.http_timeout)
        sink = WebhookSink(settings.webhook, settings.http_timeout) if settings.webhook else LogSink()
        self.dispatcher = Dispatcher(self.store, sink)
        self.consumer = Consumer(settings, SaleFinalizer(self.store, self.peers), on_processed=self.dispatcher.kick)
        self.migrated = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        database = await self.db.ping()
        checks = {"database": "ok" if database else "unavailable",
                  "rabbitmq": "consuming" if self.consumer.connected else "unavailable",
                  "processed": self.consumer.processed}
        return database and self.consumer.connected and self.migrated.is_set(), checks

    async def start(self) -> None:
        await self.db.start()
        await self.peers.start()
        self._runner = web.AppRunner(make_app(api.routes(self.store, self.ready, self.instance)), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port).start()
        self._tasks.append(asyncio.create_task(self._migrate_then_work()))

    async def _migrate_then_work(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                log.info("schema_ready", applied=await self.store.migrate())
                break
            except Exception as exc:  # never exit because the database is away
                log.warning("migrate_waiting", reason=repr(exc))
                await asyncio.sleep(backoff.next_delay())
        self.migrated.set()
        self._tasks += [asyncio.create_task(self.consumer.run()), asyncio.create_task(self.dispatcher.run())]

    async def stop(self) -> None:
        await self.consumer.stop()  # unacked messages return to the queue
        if self._runner is not None:
            await self._runner.cleanup()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.peers.close()
        await self.db.close()
