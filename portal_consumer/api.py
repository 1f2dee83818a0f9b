"""HTTP handlers of the portal consumer: notifications and the stuck-message listing.

Handlers are module-level functions over one :class:`Deps` that the app puts in
``request.app[DEPS]``; the contract is in openapi.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from deploy.runtime import validation as v
from deploy.runtime.auth import principal
from deploy.runtime.http import NotFound, json_response, service_routes
from portal_consumer.openapi import SPEC
from portal_consumer.store import PortalStore
from portal_consumer.stuck import StuckMessages

__all__ = ["DEPS", "Deps", "SPEC", "routes"]


@dataclass(frozen=True)
class Deps:
    """What the handlers work with."""

    store: PortalStore
    stuck: StuckMessages


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


def routes(ready: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]], instance: str) -> list[web.RouteDef]:
    """Every route; the handlers find their :class:`Deps` in ``request.app[DEPS]``."""
    return [*service_routes(ready, instance, SPEC), web.get("/api/notifications", notifications),
            web.get("/api/stuck", stuck_messages)]
