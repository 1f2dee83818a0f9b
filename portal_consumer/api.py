"""HTTP of the portal consumer: notifications and probes."""

from __future__ import annotations

from aiohttp import web

from deploy.runtime import validation as v
from deploy.runtime.auth import BUYER, DOOR, ORGANIZER, SERVICE, access, principal
from deploy.runtime.http import NotFound, json_response, service_routes
from deploy.runtime.openapi import document, error, json_body, ref
from portal_consumer.store import PortalStore

NOTE = {"type": "object", "required": ["id", "user_id", "kind", "order_id", "payload", "created_at"],
        "properties": {"id": {"type": "string", "format": "uuid"}, "user_id": {"type": "string"},
                       "kind": {"enum": ["purchase_confirmed", "sale_failed_refunded", "refund_issued",
                                         "payment_declined"]},
                       "order_id": {"type": ["string", "null"]}, "payload": {"type": "object"},
                       "created_at": {"type": "string", "format": "date-time"},
                       "delivered_at": {"type": ["string", "null"]}}}
SPEC = document(
    "TicketFlow portal consumer", "Notifications produced when sales are finalized, failed or refunded.",
    {"/api/notifications": {"get": {
        "summary": "Your notifications, newest first (a service may name any user_id)",
        **access(BUYER, ORGANIZER, DOOR, SERVICE, owner=True),
        "parameters": [{"name": "user_id", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "defaults to the caller; another user's id finds nothing"}],
        "responses": {
            "200": json_body({"type": "object", "required": ["notifications"],
                              "properties": {"notifications": {"type": "array", "items": ref("Notification")}}},
                             "newest first"),
            "404": error("USER_NOT_FOUND: user_id names someone else"),
            "422": error("VALIDATION_FAILED: user_id is not text a database can store"),
            "503": error("DEPENDENCY_UNAVAILABLE: the database is unreachable; retry after Retry-After")}}}},
    {"Notification": NOTE})


def routes(store: PortalStore, ready, instance: str) -> list[web.RouteDef]:
    async def notifications(request: web.Request) -> web.Response:
        caller = principal(request)
        user_id = request.query.get("user_id") or caller.subject
        if user_id != caller.subject and not caller.is_service:
            raise NotFound("no such user", code="USER_NOT_FOUND")  # someone else's: as if no such user
        return json_response({"notifications": await store.notifications(v.storable(user_id, "user_id"))})

    return [*service_routes(ready, instance, SPEC), web.get("/api/notifications", notifications)]
