"""Wiring and lifecycle of the portal consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from deploy.runtime import metrics
from deploy.runtime.aio import Background
from deploy.runtime.amqp import Names
from deploy.runtime.auth import TokenVerifier, auth_middleware
from deploy.runtime.config import require
from deploy.runtime.http import make_app, start_http
from deploy.runtime.pg import Database
from deploy.runtime.schema_gate import SchemaGate
from deploy.runtime.service import instance_name
from deploy.runtime.web import PAGE_SETTINGS, PageSettings
from portal_consumer import api
from portal_consumer.config import Settings
from portal_consumer.console import Console
from portal_consumer.deadletters import DeadLetters
from portal_consumer.peers import Peers
from portal_consumer.sales import SaleFinalizer
from portal_consumer.sinks import LogSink, WebhookSink
from portal_consumer.store import PortalStore
from portal_consumer.streams import Consumer, Dispatcher

log = structlog.get_logger("portal")


class PortalConsumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = instance_name(settings.instance, settings.http_port)
        self.db = Database(settings.pg_dsn, max_size=10)
        self.store = PortalStore(self.db)
        require(settings, "token_public_keys", "notifications are shown to their owner only")
        self.verifier = TokenVerifier(Path(settings.token_public_keys))
        self.peers = Peers(settings.reservation_url, settings.billing_url, settings.http_timeout,
                           settings.service_token_file)
        sink = WebhookSink(settings.webhook, settings.http_timeout) if settings.webhook else LogSink()
        self.dispatcher = Dispatcher(self.store, sink)
        self.consumer = Consumer(settings, SaleFinalizer(self.store, self.peers), on_processed=self.dispatcher.kick)
        self.console = Console(settings)
        self.dead_letters = DeadLetters(settings.amqp_nodes, Names(settings.amqp_prefix))
        self.schema = SchemaGate(self.store.migrate)
        self.background = Background()
        self._runner: web.AppRunner | None = None
        metrics.watch_pool("postgresql", self.db)

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        database = await self.db.ping()
        checks = {"database": "ok" if database else "unavailable",
                  "rabbitmq": "consuming" if self.consumer.connected else "unavailable",
                  "processed": self.consumer.processed,
                  # Retrying messages do not make the portal unready; GET /api/stuck lists them.
                  "stuck": self.consumer.stuck.summary()}
        return database and self.consumer.connected and self.schema.ready, checks

    async def start(self) -> None:
        await self.db.start()
        await self.peers.start()
        app = make_app(api.routes(self.ready, self.instance), middlewares=[self.schema.middleware],
                       auth=auth_middleware(api.SPEC, self.verifier))
        app[api.DEPS] = api.Deps(self.store, self.consumer.stuck, self.console, self.dead_letters)
        billing = (self.settings.public_billing_url or self.settings.billing_url).rstrip("/")
        app[PAGE_SETTINGS] = PageSettings({"billing": billing}, connect=(billing,))  # the console logs in there
        self._runner = await start_http(app, self.settings.http_host, self.settings.http_port,
                                        request_timeout=self.settings.http_request_timeout,
                                        keepalive=self.settings.http_keepalive)
        self.background.spawn("startup", self._migrate_then_work)

    async def _migrate_then_work(self) -> None:
        await self.schema.migrate_until_done()
        self.background.spawn("consumer", self.consumer.run)
        self.background.spawn("dispatcher", self.dispatcher.run)

    async def stop(self) -> None:
        await self.consumer.stop()  # unacked messages return to the queue
        await self.console.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.background.cancel()
        await self.peers.close()
        await self.db.close()
