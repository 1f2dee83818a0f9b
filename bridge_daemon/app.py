"""Wiring and lifecycle of the bridge daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from bridge_daemon.config import Settings
from bridge_daemon.openapi import SPEC
from bridge_daemon.streams import IN_STREAM, PaymentsToBroker, Publisher
from deploy.runtime import metrics
from deploy.runtime.auth import TokenVerifier, auth_middleware
from deploy.runtime.config import receiver_link
from deploy.runtime.http import make_app, service_routes, start_http
from deploy.runtime.service import instance_name
from protocol.receiver import Receiver

log = structlog.get_logger("bridge")


class BridgeDaemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = instance_name(settings.instance, settings.http_port)
        self.publisher = Publisher(settings)
        self.receiver = Receiver({IN_STREAM: PaymentsToBroker(self.publisher, IN_STREAM)},
                                 receiver_link(settings, self.instance),
                                 host=settings.link_host, port=settings.link_port)
        self.verifier = TokenVerifier(Path(settings.token_public_keys)) if settings.token_public_keys else None
        self._runner: web.AppRunner | None = None
        metrics.watch_receiver(self.receiver)

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        ok = await self.publisher.reachable()
        return ok, {"rabbitmq": "ok" if ok else "unavailable", "links": self.receiver.accepted}

    async def start(self) -> None:
        app = make_app(service_routes(self.ready, self.instance, SPEC), auth=auth_middleware(SPEC, self.verifier))
        self._runner = await start_http(app, self.settings.http_host, self.settings.http_port,
                                        request_timeout=self.settings.http_request_timeout,
                                        keepalive=self.settings.http_keepalive)
        await self.publisher.start()
        await self.receiver.start()
        log.info("bridge_ready", link_port=self.receiver.port, http_port=self.settings.http_port)

    async def stop(self) -> None:
        await self.receiver.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.publisher.settle()  # the last batch's position record
        await self.publisher.close()
