"""HTTP of the portal consumer: notifications and probes."""

from __future__ import annotations

from aiohttp import web

from deploy.runtime import validation as v
from deploy.runtime.http import Unprocessable, json_response, service_routes
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
        "summary": "A user's notifications, newest first",
        "parameters": [{"name": "user_id", "in": "query", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": json_body({"type": "object", "required": ["notifications"],
                              "properties": {"notifications": {"type": "array", "items": ref("Notification")}}},
                             "newest first"),
            "422": error("VALIDATION_FAILED: user_id missing, or not text a database can store"),
            "503": error("DEPENDENCY_UNAVAILABLE: the database is unreachable; retry after Retry-After")}}}},
    {"Notification": NOTE})


def routes(store: PortalStore, ready, instance: str) -> list[web.RouteDef]:
    async def notifications(request: web.Request) -> web.Response:
        user_id = request.query.get("user_id")
        if not user_id:
            raise Unprocessable("user_id is required", details={"field": "user_id"})
        return json_response({"notifications": await store.notifications(v.storable(user_id, "user_id"))})

    return [*service_routes(ready, instance, SPEC), web.get("/api/notifications", notifications)]
