"""The OpenAPI 3.1 document of the billing daemon; every response in the tests is checked against it."""

from __future__ import annotations

from typing import Any

UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


KEY = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
UNAVAILABLE = _error("DEPENDENCY_UNAVAILABLE: the database is unreachable; retry after Retry-After")
LIMITED = _error("RATE_LIMITED")

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "TicketFlow billing daemon", "version": "0.1.0",
             "description": "Users, orders, payments (mock gateway), tickets, refunds and check-in. "
                            "Orders are opened by the reservation stream; an order's id is its reservation's id."},
    "paths": {
        "/health": {"get": {"responses": {"200": _json({"type": "object", "required": ["status"]}, "alive")}}},
        "/ready": {"get": {"responses": {"200": _json(_ref("Readiness"), "ready"),
                                         "503": _json(_ref("Readiness"), "not ready")}}},
        "/openapi.json": {"get": {"responses": {"200": _json({"type": "object"}, "this document")}}},
        "/api/instance": {"get": {"responses": {"200": _json({"type": "object", "required": ["instance", "pid"]},
                                                             "which replica answered")}}},
        "/api/users": {"post": {
            "summary": "Create a user (email unique)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["email", "name"],
                "properties": {"email": {"type": "string"}, "name": {"type": "string"}}}}}},
            "responses": {"201": _json(_ref("User"), "the user"), "400": _error("MALFORMED_JSON"),
                          "409": _error("EMAIL_TAKEN"), "422": _error("VALIDATION_FAILED"),
                          "429": LIMITED, "503": UNAVAILABLE}}},
        "/api/users/{user_id}": {"get": {"parameters": [_id("user_id")], "responses": {
            "200": _json(_ref("User"), "the user"), "404": _error("USER_NOT_FOUND"), "429": LIMITED,
            "503": UNAVAILABLE}}},
        "/api/users/{user_id}/orders": {"get": {"parameters": [_id("user_id")], "responses": {
            "200": _json({"type": "object", "required": ["orders"],
                          "properties": {"orders": {"type": "array", "items": _ref("Order")}}}, "the user's orders"),
            "404": _error("USER_NOT_FOUND"), "429": LIMITED, "503": UNAVAILABLE}}},
        "/api/orders/{order_id}": {"get": {"parameters": [_id("order_id")], "responses": {
            "200": _json(_ref("Order"), "the order with its tickets and payment attempts"),
            "404": _error("ORDER_NOT_FOUND"), "429": LIMITED, "503": UNAVAILABLE}}},
        "/api/orders/{order_id}/pay": {"post": {
            "summary": "Pay a pending order. Idempotency-Key required: the same key returns the first answer.",
            "parameters": [_id("order_id"), {**KEY, "required": True}],
            "responses": {
                "200": _json(_ref("Order"), "paid: tickets issued"),
                "402": _error("PAYMENT_DECLINED: retry with a new key until the hold expires"),
                "404": _error("ORDER_NOT_FOUND"),
                "409": _error("ORDER_NOT_PAYABLE, HOLD_EXPIRED, PAYMENT_IN_PROGRESS or REQUEST_IN_PROGRESS"),
                "400": _error("MALFORMED_JSON"),
                "422": _error("IDEMPOTENCY_KEY_REQUIRED or IDEMPOTENCY_KEY_REUSED"),
                "429": LIMITED, "503": UNAVAILABLE}}},
        "/api/orders/{order_id}/refund": {"post": {
            "summary": "Refund a paid order and void its tickets (refunding twice answers the same)",
            "parameters": [_id("order_id"), KEY],
            "responses": {"200": _json(_ref("Order"), "refunded"), "404": _error("ORDER_NOT_FOUND"),
                          "409": _error("ORDER_NOT_REFUNDABLE"), "400": _error("MALFORMED_JSON"),
                          "422": _error("VALIDATION_FAILED"), "429": LIMITED, "503": UNAVAILABLE}}},
        "/api/checkin": {"post": {
            "summary": "Scan a ticket at the door: the first scan wins",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}}}}},
            "responses": {"200": _json(_ref("CheckIn"), "admitted"),
                          "404": _error("TICKET_NOT_FOUND: unknown or voided code"),
                          "409": _error("ALREADY_CHECKED_IN, with the first scan's time in details"),
                          "400": _error("MALFORMED_JSON"), "422": _error("VALIDATION_FAILED"),
                          "429": LIMITED, "503": UNAVAILABLE}}},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}, "message": {"type": "string"},
                           "details": {"type": "object"}}}}},
        "Readiness": {"type": "object", "required": ["status", "checks"]},
        "User": {"type": "object", "required": ["id", "email", "name", "created_at"],
                 "properties": {"id": UUID, "email": {"type": "string"}, "name": {"type": "string"},
                                "created_at": TIME}},
        "Ticket": {"type": "object", "required": ["id", "seat_id", "seat_label", "code", "status", "checked_in_at"],
                   "properties": {"id": UUID, "seat_id": UUID, "seat_label": {"type": "string"},
                                  "code": {"type": "string", "minLength": 43},
                                  "status": {"enum": ["valid", "void"]}, "checked_in_at": NULLABLE_TIME}},
        "Payment": {"type": "object", "required": ["id", "status", "created_at"],
                    "properties": {"id": UUID, "status": {"enum": ["charging", "succeeded", "declined", "refunded"]},
                                   "decline_reason": {"type": ["string", "null"]}, "created_at": TIME}},
        "Order": {"type": "object",
                  "required": ["id", "reservation_id", "user_id", "event_id", "status", "amount_minor", "currency",
                               "seats", "expires_at", "tickets", "payments"],
                  "properties": {"id": UUID, "reservation_id": UUID, "user_id": {"type": "string"}, "event_id": UUID,
                                 "status": {"enum": ["pending", "paid", "cancelled", "refunded", "failed"]},
                                 "amount_minor": {"type": "integer", "minimum": 0},
                                 "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                 "seats": {"type": "array"}, "expires_at": TIME, "paid_at": NULLABLE_TIME,
                                 "tickets": {"type": "array", "items": _ref("Ticket")},
                                 "payments": {"type": "array", "items": _ref("Payment")}}},
        "CheckIn": {"type": "object", "required": ["id", "order_id", "event_id", "seat_id", "seat_label",
                                                   "checked_in_at"],
                    "properties": {"id": UUID, "order_id": UUID, "event_id": UUID, "seat_id": UUID,
                                   "seat_label": {"type": "string"}, "checked_in_at": TIME}},
    }},
}
