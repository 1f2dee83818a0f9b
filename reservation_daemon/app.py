"""Wiring and lifecycle of the reservation daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from deploy.runtime import metrics
from deploy.runtime.aio import Background
from deploy.runtime.auth import TokenVerifier, auth_middleware
from deploy.runtime.config import require
from deploy.runtime.http import RouteLimit, make_app, start_http
from deploy.runtime.peer import Peer, ServiceToken
from deploy.runtime.pg import Database
from deploy.runtime.schema_gate import SchemaGate
from deploy.runtime.service import instance_name
from deploy.runtime.web import PAGE_SETTINGS
from reservation_daemon import api, jobs
from reservation_daemon.config import Settings
from reservation_daemon.release import ReleaseCheck
from reservation_daemon.seatstream import SeatFeed
from reservation_daemon.store import ReservationStore
from reservation_daemon.streams import make_relay

log = structlog.get_logger("reservation")


class ReservationDaemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = instance_name(settings.instance, settings.http_port)
        self.db = Database(settings.pg_dsn, max_size=settings.pool_size)
        self.store = ReservationStore(self.db)
        require(settings, "token_public_keys", "holds and reservations are for authenticated callers")
        self.verifier = TokenVerifier(Path(settings.token_public_keys))
        self.billing = Peer(settings.billing_url, ServiceToken(settings.service_token_file), settings.peer_timeout)
        self.release_check = ReleaseCheck(self.billing)
        self.relay, self.wakeups = make_relay(settings, self.store, node=self.instance)
        self.seat_feed = SeatFeed(settings.pg_dsn, self.store, poll=settings.seat_stream_poll,
                                  queue_limit=settings.seat_stream_queue,
                                  max_viewers=settings.seat_stream_max_viewers,
                                  heartbeat=settings.seat_stream_heartbeat,
                                  per_address=settings.seat_stream_per_address)
        self.schema = SchemaGate(self.store.migrate)
        self.background = Background()
        self._runner: web.AppRunner | None = None
        metrics.watch_relay(self.relay)
        metrics.watch_pool("postgresql", self.db)

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        database = await self.db.ping()
        checks = {
            "database": "ok" if database else "unavailable",
            "schema": "ok" if self.schema.ready else "pending",
            "relay": "active" if self.relay.active else "standby",
            # Not a readiness condition: holds are still taken; expired ones wait for billing's word.
            "release_check": self.release_check.status(),
        }
        # A receiver behind what this daemon still retains: the relay cannot do its job until an
        # operator reconciles and moves the receiver (ticketflow link advance).
        problem = self.relay.problem
        if problem is not None:
            checks["link"] = problem
        return database and self.schema.ready and problem is None, checks

    async def start(self) -> None:
        await self.db.start()
        app = make_app(api.routes(self.ready, self.instance),
                       self.settings.rate_limit, [self.schema.middleware], self.route_limits(),
                       auth=auth_middleware(api.SPEC, self.verifier),
                       trusted_proxies=self.settings.trusted_proxies)
        app[PAGE_SETTINGS] = api.page_settings(self.settings)
        app[api.DEPS] = api.Deps(self.settings, self.store, self.billing, self.release_check, self.seat_feed)
        self._runner = await start_http(app, self.settings.http_host, self.settings.http_port,
                                        request_timeout=self.settings.http_request_timeout,
                                        keepalive=self.settings.http_keepalive)
        self.background.spawn("startup", self._migrate_then_work)

    def route_limits(self) -> dict[tuple[str, str], RouteLimit]:
        """Seat holds are limited per token subject and per client address (README, "Rate limits")."""
        if not self.settings.rate_limits_enabled:
            return {}
        holds = RouteLimit("holds", per_subject=self.settings.holds_per_subject,
                           per_address=self.settings.holds_per_address)
        return {("POST", "/api/reserve"): holds, ("POST", "/api/reservations"): holds}

    async def _migrate_then_work(self) -> None:
        await self.schema.migrate_until_done()
        self.background.spawn("sweeper", lambda: jobs.sweep_expired_holds(self.settings, self.store,
                                                                               self.release_check))
        self.background.spawn("pruner", lambda: jobs.prune_old_rows(self.settings, self.store))
        self.background.spawn("seat_counts", lambda: jobs.settle_seat_counts(self.store))
        self.background.spawn("relay", self.relay.run)
        self.background.spawn("seat_feed", self.seat_feed.run)

    async def stop(self) -> None:
        await self.seat_feed.close()  # open seat streams end, so the server's shutdown need not wait for them
        if self._runner is not None:
            await self._runner.cleanup()  # stop accepting, finish in-flight requests
        await self.relay.stop()
        await self.wakeups.close()
        await self.background.cancel()
        await self.billing.close()
        await self.db.close()
