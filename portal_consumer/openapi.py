"""The portal consumer's HTTP contract (``GET /openapi.json``): every operation, who may call it, its answers."""

from __future__ import annotations

from deploy.runtime.auth import BUYER, ORGANIZER, SERVICE, access
from deploy.runtime.openapi import document, error, json_body, ref

NOTE = {"type": "object", "required": ["id", "user_id", "kind", "order_id", "payload", "created_at"],
        "properties": {"id": {"type": "string", "format": "uuid"}, "user_id": {"type": "string"},
                       "kind": {"enum": ["purchase_confirmed", "sale_failed_refunded", "refund_issued",
                                         "payment_declined"]},
                       "order_id": {"type": ["string", "null"]}, "payload": {"type": "object"},
                       "created_at": {"type": "string", "format": "date-time"},
                       "delivered_at": {"type": ["string", "null"]}}}
STUCK = {"type": "object", "required": ["message_id", "order_id", "type", "attempts", "age_seconds", "last_answer",
                                       "stuck_since"],
         "properties": {"message_id": {"type": "string"}, "order_id": {"type": ["string", "null"]},
                        "type": {"type": ["string", "null"]}, "attempts": {"type": "integer", "minimum": 1},
                        "age_seconds": {"type": "number", "minimum": 0}, "last_answer": {"type": "string"},
                        "stuck_since": {"type": "string", "format": "date-time"}}}
SPEC = document(
    "TicketFlow portal consumer", "Notifications produced when sales are finalized, failed or refunded.",
    {"/api/notifications": {"get": {
        "summary": "Your notifications, newest first (a service may name any user_id)",
        **access(BUYER, ORGANIZER, SERVICE, owner=True),
        "parameters": [{"name": "user_id", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "defaults to the caller; another user's id finds nothing"}],
        "responses": {
            "200": json_body({"type": "object", "required": ["notifications"],
                              "properties": {"notifications": {"type": "array", "items": ref("Notification")}}},
                             "newest first"),
            "404": error("USER_NOT_FOUND: user_id names someone else"),
            "422": error("VALIDATION_FAILED: user_id is not text a database can store"),
            "503": error("DEPENDENCY_UNAVAILABLE: the database is unreachable; retry after Retry-After")}}},
     "/api/stuck": {"get": {
         "summary": "Messages being retried because a peer is down or answers unexpectedly (they stay in the "
                    "queue, unacked; none is dead-lettered for it), oldest first",
         **access(SERVICE),
         "responses": {"200": json_body({"type": "object", "required": ["stuck"], "properties": {
             "stuck": {"type": "array", "items": ref("StuckMessage")}}}, "the stuck messages")}}}},
    {"Notification": NOTE, "StuckMessage": STUCK})
