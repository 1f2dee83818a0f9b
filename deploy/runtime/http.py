"""HTTP conventions every daemon shares (ENGINEERING.md, "HTTP conventions").

- errors are ``{"error": {"code": "SCREAMING_SNAKE", "message": "..."}}``;
- an :class:`ApiError` subclass exists per failure a caller can act on;
- a dependency that is down is a 503 with ``Retry-After``, never a 500;
- a 500 is a bug: it is logged with its traceback and answered with the envelope.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("http")

MAX_BODY = 1 << 20

try:
    VERSION = version("ticketflow")
except PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0+unknown"


class ApiError(Exception):
    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}
        self.headers = headers or {}


class MalformedRequest(ApiError):
    status, code = 400, "MALFORMED_REQUEST"


class NotFound(ApiError):
    status, code = 404, "NOT_FOUND"


class Conflict(ApiError):
    status, code = 409, "CONFLICT"


class PayloadTooLarge(ApiError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class Unprocessable(ApiError):
    status, code = 422, "VALIDATION_FAILED"


class RateLimited(ApiError):
    status, code = 429, "RATE_LIMITED"


class DependencyUnavailable(ApiError):
    """A database or peer is unreachable right now; the client should retry later."""

    status, code = 503, "DEPENDENCY_UNAVAILABLE"

    def __init__(self, message: str, retry_after: int = 1, **kwargs: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)}, **kwargs)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400 / 413 with a stable code."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLarge(f"request body over {MAX_BODY} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body over {MAX_BODY} bytes") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}", code="MALFORMED_JSON") from None


MAX_IDEMPOTENCY_KEY = 200


def idempotency(request: web.Request, body: Any, required: bool = False) -> tuple[str, str, str] | None:
    """(scope, key, request hash) from the ``Idempotency-Key`` header, scoped to the caller and the path.

    Scoped to the caller so another caller's key (guessed or leaked) never returns
    someone else's stored response. Anonymous callers (sign-up) have no identity to
    scope by, so their scope is the request itself: only the identical request finds
    the stored answer. A ``password`` never enters the stored hash.
    """
    import hashlib

    from deploy.runtime.auth import principal

    key = request.headers.get("Idempotency-Key")
    if key is None:
        if required:
            raise Unprocessable("this request moves money: send an Idempotency-Key header",
                                code="IDEMPOTENCY_KEY_REQUIRED", details={"field": "Idempotency-Key"})
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise Unprocessable(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                            details={"field": "Idempotency-Key"})
    if isinstance(body, dict) and "password" in body:
        body = {k: v for k, v in body.items() if k != "password"}
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    caller = principal(request)
    scope = f"anonymous:{request_hash[:32]}" if caller.anonymous else caller.scope
    return f"{scope}|{request.path}", key, request_hash


def is_dependency_down(exc: BaseException) -> bool:
    """Connection-level failures of a database or peer (not query errors)."""
    import asyncpg

    if isinstance(exc, (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.CannotConnectNowError,
                        asyncpg.exceptions.InterfaceError, asyncpg.exceptions.AdminShutdownError,
                        asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.TooManyConnectionsError,
                        # asyncpg's protocol state is confused after a session was cut mid-operation
                        asyncpg.exceptions.InternalClientError,
                        ConnectionError, OSError, TimeoutError)):
        return True
    if isinstance(exc, asyncpg.exceptions.PostgresConnectionError):
        return True
    import pymysql

    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    if isinstance(exc, pymysql.err.OperationalError):
        # 2003 can't connect, 2006 gone away, 2013 lost connection, 1053 shutting down,
        # 1927 connection killed, 1047 Galera node not ready (WSREP), 1040 too many connections
        return bool(exc.args) and exc.args[0] in {2003, 2006, 2013, 1053, 1927, 1047, 1040}
    return False


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    started = time.monotonic()
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(error_body(exc.code, exc.message, exc.details), exc.status, exc.headers)
    except web.HTTPRequestEntityTooLarge:
        return json_response(error_body("PAYLOAD_TOO_LARGE", "request body too large"), 413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "HTTP_ERROR")
        return json_response(error_body(code, exc.reason), exc.status)
    except Exception as exc:
        if is_dependency_down(exc):
            log.warning("dependency_unavailable", path=request.path, reason=repr(exc))
            return json_response(
                error_body("DEPENDENCY_UNAVAILABLE", "a dependency is unavailable; retry shortly"), 503,
                {"Retry-After": "1"},
            )
        log.exception("unhandled_error", path=request.path, method=request.method,
                      duration_ms=round((time.monotonic() - started) * 1000, 1))
        return json_response(error_body("INTERNAL", "internal error"), 500)


class RateLimiter:
    """Token bucket per client address: ``rate`` requests/s sustained, bursts of ``2 * rate``.

    Health and readiness probes are never limited: a load balancer must always see the truth.
    """

    EXEMPT = ("/health", "/ready", "/openapi.json")

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = 2 * rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) > 100_000:  # forget idle clients rather than grow without bound
            self._buckets.clear()
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1, now)
        return True

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.path not in self.EXEMPT and not self.allow(request.remote or "unknown"):
            raise RateLimited(f"more than {self.rate} requests per second", headers={"Retry-After": "1"})
        return await handler(request)


def service_routes(ready: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]], instance: str,
                   spec: dict[str, Any]) -> list[web.RouteDef]:
    """What every daemon serves besides its own API.

    ``GET /health`` (the process is alive), ``GET /ready`` (it can do its job now),
    ``GET /api/instance`` (which replica answered: for load-balancer drills) and
    ``GET /openapi.json`` (``spec``).
    """

    async def health(_: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readiness(_: web.Request) -> web.Response:
        ok, checks = await ready()
        if ok:
            return json_response({"status": "ready", "checks": checks})
        return json_response({"status": "unavailable", "checks": checks}, 503, {"Retry-After": "1"})

    async def instance_info(_: web.Request) -> web.Response:
        return json_response({"instance": instance, "pid": os.getpid(), "version": VERSION})

    async def openapi(_: web.Request) -> web.Response:
        return json_response(spec)

    return [web.get("/health", health), web.get("/ready", readiness), web.get("/api/instance", instance_info),
            web.get("/openapi.json", openapi)]


def make_app(routes: list[web.RouteDef], rate_limit: int = 0,
             middlewares: Sequence[Callable[..., Any]] = (), *, auth: Callable[..., Any] | None = None,
             ) -> web.Application:
    """An aiohttp app with the shared error envelope, the access rules (``auth``, from
    :func:`deploy.runtime.auth.auth_middleware`), per-client limiting if ``rate_limit`` > 0,
    then ``middlewares``."""
    chain = [error_middleware]
    if auth is not None:
        chain.append(auth)
    if rate_limit > 0:
        chain.append(RateLimiter(rate_limit).middleware)
    app = web.Application(middlewares=[*chain, *middlewares], client_max_size=MAX_BODY)
    app.add_routes(routes)
    return app


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Listen with ``app``; the runner's cleanup() stops accepting and lets in-flight requests finish."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("http_listening", host=host, port=port)
    return runner
