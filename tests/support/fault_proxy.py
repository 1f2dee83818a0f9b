"""An HTTP proxy in front of a real daemon that answers some calls itself, wrongly, while a test says so.

The real daemons do the work; the proxy only injects the answers a caller does
not expect (a 429, a 400, a 500 with an HTML body...). Calls whose path ends
with ``suffix`` get the next answer of ``answers`` (cycling) while ``failing``
is true; everything else, and everything once ``failing`` is false, passes through.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.support.stack import free_port


class FaultProxy:
    def __init__(self, suffix: str, answers: list[tuple[int, str, str]]) -> None:
        self.suffix = suffix
        self.answers = answers  # (status, content type, body)
        self.failing = True
        self.injected = 0
        self.passed = 0
        self.upstream = ""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        if self.failing and request.path.endswith(self.suffix):
            status, content_type, body = self.answers[self.injected % len(self.answers)]
            self.injected += 1
            return web.Response(status=status, text=body, content_type=content_type)
        assert self._session is not None and self.upstream
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=await request.read()) as upstream:
            self.passed += 1
            return web.Response(status=upstream.status, body=await upstream.read(),
                                content_type=upstream.content_type)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
