"""HTTP of the portal consumer: notifications and probes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from deploy.runtime.http import Unprocessable, json_response, service_routes
from portal_consumer.store import PortalStore

NOTE = {"type": "object", "required": ["id", "user_id", "kind", "order_id", "payload", "created_at"],
        "properties": {"id": {"type": "string", "format": "uuid"}, "user_id": {"type": "string"},
                       "kind": {"enum": ["purchase_confirmed", "sale_failed_refunded", "refund_issued",
                                         "payment_declined"]},
                       "order_id": {"type": ["string", "null"]}, "payload": {"type": "object"},
                       "created_at": {"type": "string", "format": "date-time"},
                       "delivered_at": {"type": ["string", "null"]}}}
ERROR = {"type": "object", "required": ["error"]}
SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "TicketFlow portal consumer", "version": "0.1.0",
             "description": "Notifications produced when sales are finalized, failed or refunded."},
    "paths": {
        "/health": {"get": {"responses": {"200": {"description": "alive"}}}},
        "/ready": {"get": {"responses": {"200": {"description": "consuming, database reachable"},
                                         "503": {"description": "not consuming or database unreachable"}}}},
        "/openapi.json": {"get": {"responses": {"200": {"description": "this document"}}}},
        "/api/instance": {"get": {"responses": {"200": {"description": "which replica answered"}}}},
        "/api/notifications": {"get": {
            "parameters": [{"name": "user_id", "in": "query", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "newest first", "content": {"application/json": {"schema": {
                "type": "object", "required": ["notifications"],
                "properties": {"notifications": {"type": "array", "items": NOTE}}}}}},
                "422": {"description": "user_id missing", "content": {"application/json": {"schema": ERROR}}},
                "503": {"description": "database unavailable",
                        "content": {"application/json": {"schema": ERROR}}}}}},
    },
}


def routes(store: PortalStore, ready, instance: str) -> list[web.RouteDef]:
    async def notifications(request: web.Request) -> web.Response:
        user_id = request.query.get("user_id")
        if not user_id:
            raise Unprocessable("user_id is required", details={"field": "user_id"})
        return json_response({"notifications": await store.notifications(user_id)})

    return [*service_routes(ready, instance, SPEC), web.get("/api/notifications", notifications)]
