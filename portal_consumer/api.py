"""HTTP handlers of the portal consumer: notifications, the stuck-message listing, the operators' console.

Handlers are module-level functions over one :class:`Deps` that the app puts in
``request.app[DEPS]``; the contract is in openapi.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from deploy.runtime import validation as v
from deploy.runtime.auth import principal
from deploy.runtime.http import Conflict, DependencyUnavailable, NotFound, json_response, service_routes
from deploy.runtime.web import Pages
from portal_consumer.console import DRILLS, Console, DrillBusy, StatusUnavailable
from portal_consumer.deadletters import DeadLetters, NoSuchDeadLetter
from portal_consumer.openapi import PAGES, SPEC
from portal_consumer.store import PortalStore
from portal_consumer.stuck import StuckMessages

__all__ = ["DEPS", "Deps", "SPEC", "routes"]


@dataclass(frozen=True)
class Deps:
    """What the handlers work with."""

    store: PortalStore
    stuck: StuckMessages
    console: Console
    dead_letters: DeadLetters


DEPS = web.AppKey("portal_deps", Deps)


async def notifications(request: web.Request) -> web.Response:
    caller = principal(request)
    user_id = request.query.get("user_id") or caller.subject
    if user_id != caller.subject and not caller.is_service:
        raise NotFound("no such user", code="USER_NOT_FOUND")  # someone else's: as if no such user
    store = request.app[DEPS].store
    return json_response({"notifications": await store.notifications(v.storable(user_id, "user_id"))})


async def stuck_messages(request: web.Request) -> web.Response:
    return json_response({"stuck": request.app[DEPS].stuck.listing()})


# --- the operators' console (operator role; README "The operators' console") ---------------------


async def ops_status(request: web.Request) -> web.Response:
    try:
        return json_response(await request.app[DEPS].console.status())
    except StatusUnavailable as exc:
        raise DependencyUnavailable(str(exc), retry_after=5) from None


async def ops_lag(request: web.Request) -> web.Response:
    return json_response(request.app[DEPS].console.lag())


async def _dead_letters(call: Awaitable[Any]) -> web.Response:
    try:
        return json_response(await call)
    except NoSuchDeadLetter:
        raise NotFound("no dead letter with this id (already requeued or discarded?)",
                       code="DEAD_LETTER_NOT_FOUND") from None
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise DependencyUnavailable(f"RabbitMQ: {type(exc).__name__}") from None
    except Exception as exc:  # aio_pika's channel errors (the queue gone, the node restarting)
        if type(exc).__module__.startswith(("aio_pika", "aiormq", "pamqp")):
            raise DependencyUnavailable(f"RabbitMQ: {type(exc).__name__}") from None
        raise


def _message_id(request: web.Request) -> str:
    key = request.match_info["message_id"]
    if not key or len(key) > 255:
        raise NotFound("no dead letter with this id", code="DEAD_LETTER_NOT_FOUND")
    return key


async def dead_letter_list(request: web.Request) -> web.Response:
    request.app[DEPS].console.used()
    return await _dead_letters(request.app[DEPS].dead_letters.listing())


async def dead_letter_show(request: web.Request) -> web.Response:
    return await _dead_letters(request.app[DEPS].dead_letters.inspect(_message_id(request)))


async def dead_letter_requeue(request: web.Request) -> web.Response:
    caller = principal(request)
    return await _dead_letters(request.app[DEPS].dead_letters.requeue(_message_id(request), caller.subject,
                                                                      caller.role or ""))


async def dead_letter_discard(request: web.Request) -> web.Response:
    caller = principal(request)
    return await _dead_letters(request.app[DEPS].dead_letters.discard(_message_id(request), caller.subject,
                                                                      caller.role or ""))


async def drills(request: web.Request) -> web.Response:
    console = request.app[DEPS].console
    running = console.drill.id if console.drill is not None and console.drill.exit_code is None else None
    return json_response({"drills": list(DRILLS), "topology": console.topology, "running": running,
                          "recent": console.recent_drills()})


async def drill_show(request: web.Request) -> web.Response:
    found = request.app[DEPS].console.drill_detail(request.match_info["run_id"])
    if found is None:
        raise NotFound("no drill run with this id", code="DRILL_NOT_FOUND")
    return json_response(found)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def drill_run(request: web.Request) -> web.StreamResponse:
    """Start a drill and stream its output as server-sent events (``line`` each, ``done`` at the end).

    The drill goes on if the page closes the stream; the recent drills list it and its output.
    """
    name = request.match_info["name"]
    if name not in DRILLS:
        raise NotFound(f"no such drill; the console runs {', '.join(DRILLS)}", code="DRILL_NOT_FOUND")
    caller = principal(request)
    try:
        run = request.app[DEPS].console.start_drill(name, caller.subject)
    except DrillBusy as exc:
        raise Conflict(f"{exc}; one drill at a time", code="DRILL_RUNNING") from None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(_sse("started", {"id": run.id, "name": run.name, "started_at": run.started_at}))
    sent = 0
    while True:
        changed = run.changed
        while sent < len(run.lines):
            await response.write(_sse("line", {"text": run.lines[sent]}))
            sent += 1
        if run.exit_code is not None:
            await response.write(_sse("done", request.app[DEPS].console.drill_summary(run.id)))
            return response
        await changed.wait()


def routes(ready: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]], instance: str) -> list[web.RouteDef]:
    """Every route; the handlers find their :class:`Deps` in ``request.app[DEPS]``."""
    return [*service_routes(ready, instance, SPEC), web.get("/api/notifications", notifications),
            web.get("/api/stuck", stuck_messages),
            web.get("/api/ops/status", ops_status), web.get("/api/ops/lag", ops_lag),
            web.get("/api/ops/dead-letters", dead_letter_list),
            web.get("/api/ops/dead-letters/{message_id}", dead_letter_show),
            web.post("/api/ops/dead-letters/{message_id}/requeue", dead_letter_requeue),
            web.post("/api/ops/dead-letters/{message_id}/discard", dead_letter_discard),
            web.get("/api/ops/drills", drills), web.get("/api/ops/drills/{run_id}", drill_show),
            web.post("/api/ops/drills/{name}/run", drill_run),
            *CONSOLE_PAGES.routes()]


CONSOLE_PAGES = Pages(Path(__file__).parent / "web", {path: file for path, (file, _) in PAGES.items()})
