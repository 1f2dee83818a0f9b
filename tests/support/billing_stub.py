"""A stand-in for billing's release-check, for tests of the reservation daemon alone.

The reservation daemon asks billing before it releases a hold. Alone, it gets
this stub's answers: ``released`` unless a test sets another per reservation id,
or takes the whole stub "down" (503s). Every call is recorded. Tests of the real
exchange run billing itself (tests/billing, tests/e2e).
"""

from __future__ import annotations

from aiohttp import web

from tests.support.stack import free_port


class BillingStub:
    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.down = False
        self.calls: list[list[str]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def _release_check(self, request: web.Request) -> web.Response:
        ids = (await request.json())["order_ids"]
        self.calls.append(ids)
        if self.down:
            return web.json_response({"error": {"code": "DEPENDENCY_UNAVAILABLE", "message": "stub down"}}, status=503)
        return web.json_response({"answers": {i: self.answers.get(i, "released") for i in ids}})

    def asked_about(self, reservation_id: str) -> int:
        return sum(reservation_id in ids for ids in self.calls)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/internal/holds/release-check", self._release_check)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
