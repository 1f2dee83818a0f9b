"""Correlation ids: one id per HTTP request, carried with everything the request caused.

The id is taken from an incoming ``X-Request-Id`` when it is well formed (:func:`accept`),
otherwise made here (a time-ordered UUID), echoed in the response's ``X-Request-Id`` and
bound into every log line of the request (structlog contextvars: ``correlation_id``).
Producers store :func:`current` with the outbox rows the request writes; the links carry
it per event (PROTOCOL.md section 5, ``correlationid``), the bridge puts it into the AMQP
message's ``correlation_id`` property, and the portal binds it while it finalizes and
notifies. README, "Tracing".

Everything here is cheap (a regular-expression match or a UUID, a contextvar set): it runs
on every request, holds included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar

import structlog
from aiohttp import web

from deploy.runtime.ids import uuid7
from protocol.messages import correlation_id as wire_correlation_id

HEADER = "X-Request-Id"
KEY = "correlation_id"  # the log key
_current: ContextVar[str | None] = ContextVar("ticketflow_correlation_id", default=None)
# Where the middleware keeps the id on the request.
REQUEST_KEY = web.RequestKey("ticketflow_correlation_id", str) if hasattr(web, "RequestKey") \
    else "ticketflow_correlation_id"


def accept(value: object) -> str | None:
    """``value`` if it is a usable correlation id, else None: a str of 1..128 of letters, digits and
    ``. _ : -`` starting with a letter or digit (UUIDs, ULIDs, W3C trace ids, most proxies' request
    ids). No spaces, quotes, slashes or control characters: the id lands in logs, headers and SQL.
    The same rule as the link's ``event.correlationid`` (PROTOCOL.md section 5)."""
    return wire_correlation_id(value)


def new() -> str:
    return str(uuid7())


def current() -> str | None:
    """The correlation id of what this task is doing now (a request, an event), if any."""
    return _current.get()


@contextlib.contextmanager
def bound(correlation_id: str | None) -> Iterator[None]:
    """Within the block, :func:`current` is ``correlation_id`` and log lines carry it (None: neither)."""
    if correlation_id is None:
        yield
        return
    token = _current.set(correlation_id)
    try:
        with structlog.contextvars.bound_contextvars(**{KEY: correlation_id}):
            yield
    finally:
        _current.reset(token)


@web.middleware
async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Outermost: every log line of the request, error envelopes included, carries the id.

    Reset after the request: aiohttp serves a keep-alive connection's requests in one task,
    so a binding left behind would leak into the next request's lines.
    """
    correlation_id = accept(request.headers.get(HEADER)) or new()
    request[REQUEST_KEY] = correlation_id
    with bound(correlation_id):
        return await handler(request)


async def echo(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the id in the response's headers, streamed responses included."""
    correlation_id = request.get(REQUEST_KEY)
    if correlation_id is not None:
        response.headers[HEADER] = correlation_id


def install(app: web.Application) -> None:
    app.on_response_prepare.append(echo)
