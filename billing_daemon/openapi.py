"""The OpenAPI 3.1 document of the billing daemon; every response in the tests is checked against it."""

from __future__ import annotations

from typing import Any

from deploy.runtime.auth import BUYER, DOOR, ORGANIZER, SERVICE, access
from deploy.runtime.openapi import TIME, UUID, document, error, json_body, path_uuid, ref
from deploy.runtime.web import openapi_paths

# Billing's pages: route -> (file in billing_daemon/web/, what it shows).
PAGES = {"/door": ("door.html", "the door: door staff scan or type ticket codes (POST /api/checkin)")}

NULLABLE_TIME = {"type": ["string", "null"]}
KEY = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
UNAVAILABLE = error("DEPENDENCY_UNAVAILABLE: the database is unreachable; retry after Retry-After")

PATHS: dict[str, Any] = {
    "/api/users": {"post": {
        "summary": "Sign up as a buyer (email unique; the password is stored as an argon2id hash)",
        **access(),
        "parameters": [{**KEY, "required": False,
                        "description": "A retry with the same key returns the first response (never EMAIL_TAKEN "
                                       "for the user it created)."}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["email", "name", "password"],
            "properties": {"email": {"type": "string"}, "name": {"type": "string"},
                           "password": {"type": "string", "minLength": 10, "maxLength": 256}}}}}},
        "responses": {"201": json_body(ref("User"), "the user"), "400": error("MALFORMED_JSON"),
                      "409": error("EMAIL_TAKEN or REQUEST_IN_PROGRESS"),
                      "422": error("VALIDATION_FAILED or IDEMPOTENCY_KEY_REUSED"),
                      "503": UNAVAILABLE}}},
    "/api/sessions": {"post": {
        "summary": "Log in: a short-lived bearer token for the account",
        **access(),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["email", "password"],
            "properties": {"email": {"type": "string"}, "password": {"type": "string"}}}}}},
        "responses": {"201": json_body(ref("Session"), "signed in"), "400": error("MALFORMED_JSON"),
                      "401": error("UNAUTHORIZED: wrong e-mail or password"),
                      "422": error("VALIDATION_FAILED"), "503": UNAVAILABLE}}},
    "/api/sessions/current": {"delete": {
        "summary": "Log out: billing refuses this token from now on; the other daemons when it expires",
        **access(BUYER, ORGANIZER, DOOR, SERVICE),
        "responses": {"200": json_body({"type": "object", "required": ["status"],
                                        "properties": {"status": {"const": "logged_out"}}}, "logged out"),
                      "503": UNAVAILABLE}}},
    "/api/events/{event_id}/orders": {"get": {
        "summary": "Every order of an event (its organizer, services)",
        **access(ORGANIZER, SERVICE),
        "parameters": [path_uuid("event_id")],
        "responses": {"200": json_body({"type": "object", "required": ["event_id", "orders"], "properties": {
            "event_id": UUID, "orders": {"type": "array", "items": ref("Order")}}}, "the event's orders"),
            "404": error("EVENT_NOT_FOUND: no such event, or not yours"), "503": UNAVAILABLE}}},
    "/api/events/{event_id}/sales": {"get": {
        "summary": "An event's sales for its organizer (the organizers' page): orders and money by status and "
                   "currency, revenue (paid orders) by currency and by section, paid orders over time",
        "description": "Aggregated in SQL over the event's orders. An organizer's figures cover its own "
                       "events' orders; `over_time` buckets paid orders by `paid_at` into at most 48 buckets "
                       "of `bucket_seconds` (60 s up to 30 days, the narrowest that fits). Revenue counts "
                       "orders paid and not refunded; refunded ones are in `orders`.",
        **access(ORGANIZER, SERVICE, owner=True),
        "parameters": [path_uuid("event_id")],
        "responses": {"200": json_body(ref("EventSales"), "the event's sales"),
                      "404": error("EVENT_NOT_FOUND: no order of this event reached billing yet, or not your "
                                   "event (the same answer: ids reveal nothing)"),
                      "503": UNAVAILABLE}}},
    "/api/users/{user_id}": {"get": {**access(BUYER, ORGANIZER, SERVICE, owner=True),
                                     "parameters": [path_uuid("user_id")], "responses": {
        "200": json_body(ref("User"), "the user"), "404": error("USER_NOT_FOUND"),
        "503": UNAVAILABLE}}},
    "/api/users/{user_id}/orders": {"get": {**access(BUYER, ORGANIZER, SERVICE, owner=True),
                                            "parameters": [path_uuid("user_id")], "responses": {
        "200": json_body({"type": "object", "required": ["orders"],
                      "properties": {"orders": {"type": "array", "items": ref("Order")}}}, "the user's orders"),
        "404": error("USER_NOT_FOUND"), "503": UNAVAILABLE}}},
    "/api/orders/{order_id}": {"get": {**access(BUYER, ORGANIZER, SERVICE, owner=True),
                                       "description": "HEAD answers 200 or 404 from one lookup, without building"
                                                      " the order's view: for a client waiting for an order to arrive.",
                                       "parameters": [path_uuid("order_id")], "responses": {
        "200": json_body(ref("Order"), "the order with its tickets and payment attempts"),
        "404": error("ORDER_NOT_FOUND"), "503": UNAVAILABLE}}},
    "/api/orders/{order_id}/pay": {"post": {
        "summary": "Pay a pending order. Idempotency-Key required: the same key returns the first answer.",
        **access(BUYER, SERVICE, owner=True),
        "parameters": [path_uuid("order_id"), {**KEY, "required": True}],
        "responses": {
            "200": json_body(ref("Order"), "paid: tickets issued"),
            "402": error("PAYMENT_DECLINED (the gateway said no) or PAYMENT_FAILED (the charge never completed; "
                         "nothing was taken): retry with a new key until the hold expires"),
            "404": error("ORDER_NOT_FOUND"),
            "409": error("ORDER_NOT_PAYABLE (with details.refund_id when the hold was released during the charge "
                         "and the charge was refunded), HOLD_EXPIRED, PAYMENT_IN_PROGRESS or REQUEST_IN_PROGRESS "
                         "(the same key is being charged right now; a request that died is resumed at once)"),
            "400": error("MALFORMED_JSON"),
            "422": error("IDEMPOTENCY_KEY_REQUIRED or IDEMPOTENCY_KEY_REUSED"),
            "503": UNAVAILABLE}}},
    "/api/orders/{order_id}/refund": {"post": {
        "summary": "Refund a paid order at the gateway, record the refund (in the order's refunds) and void its "
                   "tickets (refunding twice answers the same, with one refund)",
        **access(ORGANIZER, SERVICE, owner=True),
        "parameters": [path_uuid("order_id"), KEY],
        "responses": {"200": json_body(ref("Order"), "refunded"), "404": error("ORDER_NOT_FOUND"),
                      "409": error("ORDER_NOT_REFUNDABLE"), "400": error("MALFORMED_JSON"),
                      "422": error("VALIDATION_FAILED"), "503": UNAVAILABLE}}},
    "/api/checkin": {"post": {
        "summary": "Scan a ticket at the door: the first scan wins",
        **access(DOOR),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}}}}},
        "responses": {"200": json_body(ref("CheckIn"), "admitted"),
                      "404": error("TICKET_NOT_FOUND: unknown or voided code"),
                      "409": error("ALREADY_CHECKED_IN, with the first scan's time in details"),
                      "400": error("MALFORMED_JSON"), "422": error("VALIDATION_FAILED"),
                      "503": UNAVAILABLE}}},
    "/api/internal/holds/release-check": {"post": {
        "summary": "Before it releases held reservations, the reservation daemon asks here. Per order, in one "
                   "transaction with the order locked: released (no payment charging or taken: the order is "
                   "cancelled, so no payment can start afterwards; an order not yet received is recorded as "
                   "released and opens cancelled), paid (the money is taken: confirm the hold instead) or "
                   "charging (keep the hold, ask again later)",
        **access(SERVICE),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["order_ids"],
            "properties": {"order_ids": {"type": "array", "items": UUID, "minItems": 1, "maxItems": 1000,
                                         "uniqueItems": True}}}}}},
        "responses": {"200": json_body({"type": "object", "required": ["answers"], "properties": {
            "answers": {"type": "object", "additionalProperties": {"enum": ["released", "paid", "charging"]}}}},
            "one answer per order id"),
            "400": error("MALFORMED_JSON"), "422": error("VALIDATION_FAILED"), "503": UNAVAILABLE}}},
}

SCHEMAS: dict[str, Any] = {
    "Session": {"type": "object", "required": ["token", "token_type", "user_id", "role", "expires_at"],
                "properties": {"token": {"type": "string"}, "token_type": {"const": "Bearer"}, "user_id": UUID,
                               "role": {"enum": ["buyer", "organizer", "door", "operator", "service"]}, "expires_at": TIME}},
    "User": {"type": "object", "required": ["id", "email", "name", "role", "created_at"],
             "properties": {"id": UUID, "email": {"type": "string"}, "name": {"type": "string"},
                            "role": {"enum": ["buyer", "organizer", "door", "operator"]},
                            "created_at": TIME}},
    "Ticket": {"type": "object", "required": ["id", "seat_id", "seat_label", "status", "checked_in_at"],
               "properties": {"id": UUID, "seat_id": UUID, "seat_label": {"type": "string"},
                              "code": {"type": "string", "minLength": 43,
                                       "description": "what the door scans: shown to the buyer, never to an "
                                                      "organizer"},
                              "status": {"enum": ["valid", "void"]}, "checked_in_at": NULLABLE_TIME}},
    "Payment": {"type": "object", "required": ["id", "status", "created_at"],
                "properties": {"id": UUID,
                               "status": {"enum": ["charging", "succeeded", "declined", "failed", "refunded"]},
                               "decline_reason": {"type": ["string", "null"]}, "created_at": TIME}},
    "Order": {"type": "object",
              "required": ["id", "reservation_id", "user_id", "event_id", "status", "amount_minor", "currency",
                           "seats", "expires_at", "tickets", "payments", "refunds"],
              "properties": {"id": UUID, "reservation_id": UUID, "user_id": {"type": "string"}, "event_id": UUID,
                             "status": {"enum": ["pending", "paid", "cancelled", "refunded", "failed"]},
                             "amount_minor": {"type": "integer", "minimum": 0},
                             "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                             "seats": {"type": "array"}, "expires_at": TIME, "paid_at": NULLABLE_TIME,
                             "tickets": {"type": "array", "items": ref("Ticket")},
                             "payments": {"type": "array", "items": ref("Payment")},
                             "refunds": {"type": "array", "items": ref("Refund")}}},
    "Refund": {"type": "object", "required": ["id", "amount_minor", "currency", "reason", "created_at"],
               "description": "Money given back at the gateway; its id names it in payment.refunded and when "
                              "the seats are released",
               "properties": {"id": UUID, "amount_minor": {"type": "integer", "minimum": 0},
                              "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                              "reason": {"type": "string"}, "created_at": TIME}},
    "CheckIn": {"type": "object", "required": ["id", "order_id", "event_id", "seat_id", "seat_label",
                                               "checked_in_at"],
                "properties": {"id": UUID, "order_id": UUID, "event_id": UUID, "seat_id": UUID,
                               "seat_label": {"type": "string"}, "checked_in_at": TIME}},
}

_MONEY = {"type": "integer", "minimum": 0}
_COUNT = {"type": "integer", "minimum": 0}
_CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}
SCHEMAS["EventSales"] = {
    "type": "object", "required": ["event_id", "orders", "revenue", "by_section", "over_time"],
    "properties": {
        "event_id": UUID,
        "orders": {"type": "array", "description": "orders by status and currency", "items": {
            "type": "object", "required": ["status", "currency", "orders", "seats", "amount_minor"],
            "properties": {"status": {"enum": ["pending", "paid", "cancelled", "refunded", "failed"]},
                           "currency": _CURRENCY, "orders": _COUNT, "seats": _COUNT, "amount_minor": _MONEY}}},
        "revenue": {"type": "array", "description": "paid orders by currency", "items": {
            "type": "object", "required": ["currency", "orders", "seats", "amount_minor"],
            "properties": {"currency": _CURRENCY, "orders": _COUNT, "seats": _COUNT, "amount_minor": _MONEY}}},
        "by_section": {"type": "array", "description": "seats of paid orders by section and currency", "items": {
            "type": "object", "required": ["section", "currency", "seats", "amount_minor"],
            "properties": {"section": {"type": "string"}, "currency": _CURRENCY, "seats": _COUNT,
                           "amount_minor": _MONEY}}},
        "over_time": {"type": "object", "required": ["bucket_seconds", "points"], "properties": {
            "bucket_seconds": {"type": "integer", "minimum": 60},
            "points": {"type": "array", "items": {
                "type": "object", "required": ["at", "currency", "orders", "seats", "amount_minor"],
                "properties": {"at": TIME, "currency": _CURRENCY, "orders": _COUNT, "seats": _COUNT,
                               "amount_minor": _MONEY}}}}}}}

PATHS.update(openapi_paths({path: title for path, (_, title) in PAGES.items()}))

SPEC = document(
    "TicketFlow billing daemon",
    "Users, orders, payments (mock gateway), tickets, refunds and check-in. "
    "Orders are opened by the reservation stream; an order's id is its reservation's id.",
    PATHS, SCHEMAS, rate_limited=True)
