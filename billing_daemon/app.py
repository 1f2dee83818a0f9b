"""Wiring and lifecycle of the billing daemon."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from pathlib import Path

from billing_daemon import api
from billing_daemon.accounts import AccountStore
from billing_daemon.config import Settings
from billing_daemon.gateway import MockGateway
from billing_daemon.payments import Payments
from billing_daemon.store import BillingStore
from billing_daemon.streams import make_receiver, make_relay
from deploy.runtime import metrics
from deploy.runtime.aio import Background, every, keep_running, prune_step
from deploy.runtime.auth import TokenIssuer, TokenVerifier, auth_middleware
from deploy.runtime.config import require
from deploy.runtime.http import make_app, start_http
from deploy.runtime.web import cors_middleware
from deploy.runtime.mysql import MariaDB
from deploy.runtime.schema_gate import SchemaGate
from deploy.runtime.service import instance_name

log = structlog.get_logger("billing")
PRUNE_INTERVAL = 300.0


class BillingDaemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = instance_name(settings.instance, settings.http_port)
        self.db = MariaDB(settings.mariadb_dsn, max_size=settings.pool_size)
        self.store = BillingStore(self.db, respond=api.response)
        self.accounts = AccountStore(self.db)
        require(settings, "token_signing_key", "billing signs login tokens with it")
        require(settings, "token_public_keys", "every daemon verifies tokens with them")
        self.issuer = TokenIssuer(Path(settings.token_signing_key), settings.token_ttl)
        self.verifier = TokenVerifier(Path(settings.token_public_keys))
        self.gateway = MockGateway(settings.payment_success_rate, settings.payment_seed,
                                   settings.payment_latency_ms, settings.mock_gateway_ledger or None)
        self.payments = Payments(settings, self.store.payments, self.gateway)
        self.receiver = make_receiver(settings, self.store.inbox, self.instance)
        self.relay = make_relay(settings, self.store.outbox, self.instance)
        self.schema = SchemaGate(self.store.migrate)
        self.background = Background()
        self._runner: web.AppRunner | None = None
        metrics.watch_relay(self.relay)
        metrics.watch_receiver(self.receiver)
        metrics.watch_pool("mariadb", self.db)

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        database = await self.db.ping()
        checks = {"database": "ok" if database else "unavailable",
                  "schema": "ok" if self.schema.ready else "pending",
                  "relay": "active" if self.relay.active else "standby"}
        # A receiver behind what this daemon still retains: the relay cannot do its job until an
        # operator reconciles and moves the receiver (ticketflow link advance).
        problem = self.relay.problem
        if problem is not None:
            checks["link"] = problem
        return database and self.schema.ready and problem is None, checks

    async def start(self) -> None:
        await self.db.start()
        app = make_app(api.routes(self.ready, self.instance),
                       self.settings.rate_limit, [self.schema.middleware, api.refusals], api.route_limits(self.settings),
                       auth=auth_middleware(api.SPEC, self.verifier, self.accounts.is_revoked),
                       outer=[cors_middleware(self.settings.page_origins)],  # the buyer's pages call billing
                       trusted_proxies=self.settings.trusted_proxies)
        app[api.DEPS] = api.Deps(self.settings, self.store, self.payments, self.accounts, self.issuer)
        self._runner = await start_http(app, self.settings.http_host, self.settings.http_port,
                                        request_timeout=self.settings.http_request_timeout,
                                        keepalive=self.settings.http_keepalive)
        self.background.spawn("startup", self._migrate_then_work)

    async def _migrate_then_work(self) -> None:
        await self.schema.migrate_until_done()
        self.background.spawn("relay", self.relay.run)
        self.background.spawn("pruner", self._prune)
        # Liveness first: until this process holds its lock it starts no payment, and the
        # resolver only records what the gateway says, so it can run on every replica.
        self.background.spawn("process_lock", self.payments.lock.keep)
        self.background.spawn("payment_resolver", self.payments.run_resolver)
        # The inbox opens only once the schema exists, so a welcome position is always real.
        # Replicas on one host share its port (SO_REUSEPORT): a sender lands on whichever is alive.
        await keep_running("link_receiver", self.receiver.start)

    async def _prune(self) -> None:
        async def step() -> None:
            await prune_step(self.store, self.settings.retention_hours, self.settings.idempotency_hours)
            await self.accounts.prune_revoked()

        await every(PRUNE_INTERVAL, "prune", step, first_wait=True)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.receiver.stop()
        await self.relay.stop()
        await self.background.cancel()
        self.payments.lock.close()
        await self.db.close()
