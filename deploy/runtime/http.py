"""HTTP conventions every daemon shares (ENGINEERING.md, "HTTP conventions").

- errors are ``{"error": {"code": "SCREAMING_SNAKE", "message": "..."}}``;
- an :class:`ApiError` subclass exists per failure a caller can act on;
- a dependency that is down is a 503 with ``Retry-After``, never a 500;
- a 500 is a bug: it is logged with its traceback and answered with the envelope.

Hostile input is bounded here, once for every daemon (README, "Hostile input"):
request heads and bodies must arrive within ``TICKETFLOW_HTTP_REQUEST_TIMEOUT_SECONDS``,
idle keep-alive connections close after ``TICKETFLOW_HTTP_KEEPALIVE_SECONDS``, JSON
nests at most :data:`MAX_JSON_DEPTH` levels, header values must be UTF-8, and
malformed HTTP is answered 400 in the envelope. Rate limits: :class:`RateLimiter`
(every route, per address) and :class:`RouteLimiter` (routes marked in ``make_app``).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from deploy.runtime import correlation, metrics

log = structlog.get_logger("http")

MAX_BODY = 1 << 20
MAX_JSON_DEPTH = 32  # nesting levels of a request body; deeper is 400 MALFORMED_JSON
DEFAULT_REQUEST_TIMEOUT = 15.0
REQUEST_TIMEOUT = web.AppKey("ticketflow_request_timeout", float)
ROUTE_LIMITER = web.AppKey("ticketflow_route_limiter", object)

try:
    VERSION = version("ticketflow")
except PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0+unknown"


class ApiError(Exception):
    status = 400
    code = "BAD_REQUEST"
    close_connection = False  # answer, then close: what is left of the request cannot be trusted

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


class RequestTimeout(ApiError):
    status, code = 408, "REQUEST_TIMEOUT"
    close_connection = True


class RateLimited(ApiError):
    status, code = 429, "RATE_LIMITED"

    def __init__(self, message: str, retry_after: float = 1, **kwargs: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, math.ceil(retry_after)))}, **kwargs)


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
    """The request body as JSON, or a 400 / 408 / 413 with a stable code.

    The body must arrive within the request timeout (a client trickling bytes
    holds a connection and a handler otherwise) and nest at most
    :data:`MAX_JSON_DEPTH` levels (deeper input would exhaust the parser's stack).
    """
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLarge(f"request body over {MAX_BODY} bytes")
    timeout = request.config_dict.get(REQUEST_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    try:
        if request.content.is_eof():  # the whole body came with the head: nothing to wait for
            raw = await request.read()
        else:
            async with asyncio.timeout(timeout):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body over {MAX_BODY} bytes") from None
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, or 400 MALFORMED_JSON (including nesting deeper than :data:`MAX_JSON_DEPTH`)."""
    too_deep = MalformedRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels", code="MALFORMED_JSON")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}", code="MALFORMED_JSON") from None
    except RecursionError:
        raise too_deep from None
    # Counting brackets is C speed and settles every ordinary body; only bodies with
    # many of them (or brackets inside strings) are walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(value) > MAX_JSON_DEPTH:
        raise too_deep
    return value


def json_depth(value: Any) -> int:
    """Nesting levels of parsed JSON (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest = 0
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return deepest


def _check_header_encoding(request: web.Request) -> None:
    """Header values are UTF-8 (ENGINEERING.md); anything else is 400 MALFORMED_HEADER.

    aiohttp passes undecodable bytes on as lone surrogates, which fail later
    (in a database driver, in a hash) as a 500.
    """
    for name, value in request.raw_headers:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRequest(f"header {name.decode('latin-1')} is not valid UTF-8",
                                   code="MALFORMED_HEADER", details={"header": name.decode("latin-1")}) from None


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
        _check_header_encoding(request)
        return await handler(request)
    except ApiError as exc:
        response = json_response(error_body(exc.code, exc.message, exc.details), exc.status, exc.headers)
        if exc.close_connection:
            response.force_close()
        return response
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


class Buckets:
    """Token buckets, one per key: ``per_second`` sustained, bursts of ``burst``.

    Memory is bounded: at most ``max_keys`` buckets, the least recently used
    forgotten first. A forgotten bucket had usually refilled (equivalent to no
    bucket); otherwise its key gets a fresh burst, which bounds what an attacker
    gains by cycling through keys at one burst per key.
    """

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 50_000) -> None:
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable) -> float:
        """Take a token for ``key``: 0.0 if it may go now, else the seconds until it may."""
        now = self.clock()
        entry = self._buckets.pop(key, None)  # re-inserted below: most recently used last
        tokens = self.burst if entry is None else min(self.burst, entry[0] + (now - entry[1]) * self.per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.per_second
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)


def client_address(request: web.Request) -> str:
    """The address a request is counted against (rate limits, open streams): its peer's, or, when the peer is a
    trusted load balancer (``TICKETFLOW_TRUSTED_PROXIES``), the last X-Forwarded-For entry -- the one the balancer
    appended; entries a client sent itself come before it and are never believed."""
    peer = request.remote or "unknown"
    trusted = request.app.get(TRUSTED_PROXIES, ())
    if not trusted:
        return peer
    try:
        if not any(ipaddress.ip_address(peer) in network for network in trusted):
            return peer
    except ValueError:
        return peer
    forwarded = request.headers.getall("X-Forwarded-For", [])
    last = forwarded[-1].split(",")[-1].strip() if forwarded else ""
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


class RateLimiter:
    """``TICKETFLOW_RATE_LIMIT_PER_SECOND``: every route, per client address, ``rate``/s with bursts of ``2 * rate``.

    Health and readiness probes are never limited: a load balancer must always see the truth.
    """

    EXEMPT = ("/health", "/ready", "/openapi.json")

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.buckets = Buckets(rate, 2 * rate, clock)

    def allow(self, client: str) -> bool:
        return self.buckets.take(client) == 0.0

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.path not in self.EXEMPT:
            wait = self.buckets.take(client_address(request))
            if wait:
                raise RateLimited(f"more than {self.rate} requests per second", wait)
        return await handler(request)


OFF = (0.0, 0)


@dataclass(frozen=True)
class RouteLimit:
    """Limits on one kind of operation (``holds``, ``logins``), each ``(per second, burst)``; ``OFF`` is none.

    ``per_subject``: per token subject (authenticated callers); ``per_address``:
    per client address, whoever calls; ``per_key``: per key the handler names
    with :func:`limit_key` (the e-mail of a login). Callers with the
    ``service`` role are never limited.
    """

    name: str
    per_subject: tuple[float, int] = OFF
    per_address: tuple[float, int] = OFF
    per_key: tuple[float, int] = OFF


class RouteLimiter:
    """The buckets behind every :class:`RouteLimit` of an app (built by :func:`make_app`)."""

    def __init__(self, limits: Iterable[RouteLimit], clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 50_000) -> None:
        self.limits = {limit.name: limit for limit in limits}
        self._tables = {
            (limit.name, scope): Buckets(per_second, burst, clock, max_keys)
            for limit in self.limits.values()
            for scope, (per_second, burst) in (("subject", limit.per_subject), ("address", limit.per_address),
                                               ("key", limit.per_key))
            if per_second > 0
        }

    def take(self, name: str, scope: str, key: str) -> None:
        """Count one ``name`` operation against ``key``; 429 with ``Retry-After`` when over the limit."""
        table = self._tables.get((name, scope))
        if table is not None and (wait := table.take(key)):
            raise RateLimited(f"too many {name} for this {scope}; retry after a moment", wait,
                              details={"limit": name, "per": scope})

    def check(self, request: web.Request, name: str) -> None:
        from deploy.runtime.auth import principal  # here: auth may come to import this module

        caller = principal(request)
        if caller.is_service:
            return
        if not caller.anonymous:
            self.take(name, "subject", caller.subject)
        self.take(name, "address", client_address(request))


def limit_key(request: web.Request, name: str, key: str) -> None:
    """Count a ``name`` operation against a key only the handler knows (e.g. a login's e-mail).

    A no-op where the app has no such limit (or limits are switched off) and for service callers.
    """
    from deploy.runtime.auth import principal

    limiter = request.config_dict.get(ROUTE_LIMITER)
    if isinstance(limiter, RouteLimiter) and not principal(request).is_service:
        limiter.take(name, "key", key)


def service_routes(ready: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]], instance: str,
                   spec: dict[str, Any]) -> list[web.RouteDef]:
    """What every daemon serves besides its own API.

    ``GET /health`` (the process is alive), ``GET /ready`` (it can do its job now),
    ``GET /api/instance`` (which replica answered: for load-balancer drills),
    ``GET /openapi.json`` (``spec``) and ``GET /metrics`` (deploy/runtime/metrics.py).
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
            web.get("/openapi.json", openapi), web.get("/metrics", metrics.handler)]


def make_app(routes: list[web.RouteDef], rate_limit: int = 0,
             middlewares: Sequence[Callable[..., Any]] = (),
             limited: Mapping[tuple[str, str], RouteLimit] | None = None, *,
             auth: Callable[..., Any] | None = None, outer: Sequence[Callable[..., Any]] = (),
             trusted_proxies: tuple = ()) -> web.Application:
    """An aiohttp app with request metrics, the shared error envelope, the access rules (``auth``, from
    :func:`deploy.runtime.auth.auth_middleware`), per-client limiting if ``rate_limit`` > 0,
    then ``middlewares``. ``outer`` middlewares wrap all of these (CORS: its headers go on
    errors too, and a preflight is answered before authentication).

    ``limited`` marks routes with a :class:`RouteLimit`, by ``(method, path)`` as
    declared in ``routes``, e.g. ``{("POST", "/api/sessions"): logins}``; the check
    runs just before the handler, so after every middleware (authentication
    included). A key that names no route is a start-up error.
    """
    # The correlation id first: the error envelope's log lines carry it too (README, "Tracing"); then metrics,
    # counted outside everything else: the status the client gets.
    chain = [correlation.middleware, metrics.middleware, *outer, error_middleware]
    if rate_limit > 0:  # before authentication: a flood of bad tokens is limited too
        chain.append(RateLimiter(rate_limit).middleware)
    if auth is not None:
        chain.append(auth)
    limited = dict(limited or {})
    unknown = set(limited) - {(r.method, r.path) for r in routes}
    if unknown:
        raise ValueError(f"rate limits for routes that do not exist: {sorted(unknown)}")
    limiter = RouteLimiter(set(limited.values()))
    routes = [web.RouteDef(r.method, r.path, _limited(r.handler, limiter, limited[(r.method, r.path)].name),
                           r.kwargs) if (r.method, r.path) in limited else r for r in routes]
    app = web.Application(middlewares=[*chain, *middlewares], client_max_size=MAX_BODY)
    app[ROUTE_LIMITER] = limiter
    app[TRUSTED_PROXIES] = tuple(trusted_proxies)
    correlation.install(app)
    app.add_routes(routes)
    return app


def _limited(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], limiter: RouteLimiter, name: str):
    @functools.wraps(handler)
    async def limited(request: web.Request) -> web.StreamResponse:
        limiter.check(request, name)
        return await handler(request)

    return limited


class _Connection(RequestHandler):
    """aiohttp's connection protocol, plus a deadline on the request head and enveloped parse errors.

    aiohttp closes a connection that is idle (or has sent only part of a head) after
    ``keepalive_timeout``; a head that has started arriving must be complete within
    ``head_timeout``, so a client trickling header bytes holds a connection for
    that long at most. (Uses aiohttp's ``_messages``/``_request_in_progress``; the
    tests in tests/deploy/test_http_hostile.py fail if they change meaning.)
    """

    __slots__ = ("_head_timeout", "_head_timer")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages or self._request_in_progress:  # a whole head arrived (or a body is being read)
            self._stop_head_timer()
        elif self._head_timer is None and self.transport is not None:
            self._head_timer = asyncio.get_running_loop().call_later(self._head_timeout, self._head_overdue)

    def _head_overdue(self) -> None:
        self._head_timer = None
        if not self._messages and not self._request_in_progress:
            log.debug("http_request_head_timeout", peer=str(self.peername))
            self.force_close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Malformed HTTP (bad request line, header name, ...) in the error envelope, not aiohttp's text."""
        if status >= 500:
            log.error("http_protocol_error", exc_info=exc)
        else:  # the internet sends garbage all day: not worth a traceback
            log.debug("http_malformed_request", reason=type(exc).__name__, peer=request.remote)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        code = {400: "MALFORMED_REQUEST", 413: "PAYLOAD_TOO_LARGE", 431: "HEADERS_TOO_LARGE"}.get(status, "INTERNAL")
        text = "internal error" if status >= 500 else "the request line or headers are not valid HTTP/1.1"
        response = web.Response(status=status, text=_dumps(error_body(code, text)), content_type="application/json")
        response.force_close()
        return response


class _Site(web.TCPSite):
    """A TCP site whose connections are :class:`_Connection` s."""

    __slots__ = ("_protocol",)

    def __init__(self, runner: web.AppRunner, host: str, port: int, protocol: Callable[[], RequestHandler]) -> None:
        super().__init__(runner, host, port)
        self._protocol = protocol

    async def start(self) -> None:
        await web.BaseSite.start(self)  # register with the runner, which stops the site on cleanup()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address)


async def start_http(app: web.Application, host: str, port: int, *,
                     request_timeout: float = DEFAULT_REQUEST_TIMEOUT, keepalive: float = 30.0) -> web.AppRunner:
    """Listen with ``app``; the runner's cleanup() stops accepting and lets in-flight requests finish.

    ``request_timeout`` (TICKETFLOW_HTTP_REQUEST_TIMEOUT_SECONDS) bounds the arrival of
    a request head and, in :func:`read_json`, of its body (408); ``keepalive``
    (TICKETFLOW_HTTP_KEEPALIVE_SECONDS) closes idle connections.
    """
    app[REQUEST_TIMEOUT] = request_timeout
    connection = {
        "keepalive_timeout": keepalive,
        # After an early answer (413, 408) aiohttp drains the unread body this long before closing.
        "lingering_time": min(2.0, request_timeout),
        "access_log": None,
    }
    runner = web.AppRunner(app, shutdown_timeout=10, **connection)
    await runner.setup()
    server = runner.server
    loop = asyncio.get_running_loop()
    await _Site(runner, host, port,
                lambda: _Connection(server, loop=loop, head_timeout=request_timeout, **connection)).start()
    log.info("http_listening", host=host, port=port)
    return runner
