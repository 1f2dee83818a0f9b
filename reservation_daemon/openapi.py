"""The OpenAPI 3.1 document of the reservation daemon's HTTP API.

Written by hand as the contract; the test suite checks every response it sees
against it, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from deploy.runtime.auth import BUYER, ORGANIZER, SERVICE, access
from deploy.runtime.openapi import TIME, UUID, document, error, json_body, path_uuid, ref
from deploy.runtime.web import openapi_paths

# The buyer's pages: route -> (file in reservation_daemon/web/, what it shows).
PAGES = {
    "/": ("index.html", "the events on sale"),
    "/events/{event_id}": ("event.html", "an event's live seat map: choose, hold, pay, tickets"),
    "/orders": ("orders.html", "my orders and tickets"),
    "/organizer": ("organizer.html", "the organizers' page: events, and one event's seats, revenue and sales"),
    "/organizer/events/{event_id}": ("organizer.html", "the organizers' page of one event: seats sold / held / "
                                                       "available, revenue by section and currency, sales over time"),
}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Retrying with the same key returns the first response and never creates a second "
                   "event or hold. A retry that arrives while the first request is still running is answered "
                   "409 REQUEST_IN_PROGRESS; retry it shortly.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
COMMON_ERRORS = {
    "400": error("malformed JSON (MALFORMED_JSON)"),
    "413": error("body too large (PAYLOAD_TOO_LARGE)"),
    "422": error("well-formed but invalid (VALIDATION_FAILED and more specific codes)"),
    "503": error("database unavailable (DEPENDENCY_UNAVAILABLE); retry after Retry-After seconds"),
}
HOLD_RESPONSES = {
    "201": json_body(ref("Reservation"), "the hold"),
    **COMMON_ERRORS,
    "404": error("SEAT_NOT_FOUND or EVENT_NOT_FOUND"),
    "403": error("USER_ID_MISMATCH: user_id names someone else; FORBIDDEN: the role may not hold seats"),
    "409": error("SEAT_UNAVAILABLE: a seat is already held or sold; REQUEST_IN_PROGRESS: a request with this "
                 "Idempotency-Key is still running"),
    "422": error("VALIDATION_FAILED, SEAT_NOT_IN_EVENT, MIXED_CURRENCIES or IDEMPOTENCY_KEY_REUSED"),
}

NEXT = {"type": ["string", "null"], "format": "uuid",
        "description": "the cursor of the next page (pass it as `after`); null on the last page"}


def page_limit(what: str, default: int, maximum: int) -> dict[str, Any]:
    return {"name": "limit", "in": "query", "required": False, "description": f"{what} per page",
            "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}}


def page_after(what: str) -> dict[str, Any]:
    return {"name": "after", "in": "query", "required": False,
            "description": f"start after this {what}: the `next` of the previous page", "schema": UUID}


PATHS: dict[str, Any] = {
    "/api/events": {
        "post": {
            "summary": "Create an event with its seat layout (an organizer owns the events it creates; a service "
                       "may name the organizer_id)",
            **access(ORGANIZER, SERVICE),
            "parameters": [IDEMPOTENCY_KEY],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("NewEvent")}}},
            "responses": {"201": json_body(ref("Event"), "the event, with seat counts"), **COMMON_ERRORS,
                          "409": error("REQUEST_IN_PROGRESS: a request with this Idempotency-Key is running"),
                          "422": error("VALIDATION_FAILED, LAYOUT_TOO_LARGE or IDEMPOTENCY_KEY_REUSED")},
        },
        "get": {"summary": "List events by start time, a page at a time, with their seat counts",
                **access(),
                "description": "Follow `next` (pass it as `after`) until it is null.",
                "parameters": [page_limit("events", 100, 1000), page_after("event")],
                "responses": {"200": json_body(
                    {"type": "object", "required": ["events", "next"],
                     "properties": {"events": {"type": "array", "items": ref("Event")}, "next": NEXT}},
                    "one page of events"),
                    "422": error("VALIDATION_FAILED: a bad limit, or an after that names no event"),
                    "503": COMMON_ERRORS["503"]}},
    },
    "/api/events/{event_id}": {"get": {
        "summary": "One event with counts of available, held and sold seats",
        **access(),
        "parameters": [path_uuid("event_id")],
        "responses": {"200": json_body(ref("Event"), "the event"), "404": error("EVENT_NOT_FOUND"),
                      "503": COMMON_ERRORS["503"]}},
        "patch": {
            "summary": "Change an event's name, venue, description or start (its organizer, services); the "
                       "layout is fixed once seats exist",
            **access(ORGANIZER, SERVICE, owner=True),
            "parameters": [path_uuid("event_id")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "minProperties": 1, "properties": {
                    "name": {"type": "string"}, "venue": {"type": "string"}, "description": {"type": "string"},
                    "starts_at": TIME}}}}},
            "responses": {"200": json_body(ref("Event"), "the changed event"),
                          "404": error("EVENT_NOT_FOUND: no such event, or not yours"), **COMMON_ERRORS}}},
    "/api/events/{event_id}/seats": {"get": {
        "summary": "The seats of an event with their status, in order (section, row, number), a page at a time",
        "description": "Pages hold `limit` seats (default 1000, at most 5000); follow `next` (pass it as "
                       "`after`, with the same `status`) until it is null.",
        **access(),
        "parameters": [path_uuid("event_id"), {"name": "status", "in": "query", "required": False,
                       "schema": {"enum": ["available", "held", "sold"]}},
                       page_limit("seats", 1000, 5000), page_after("seat")],
        "responses": {"200": json_body({"type": "object", "required": ["event_id", "seats", "next"], "properties": {
            "event_id": UUID, "seats": {"type": "array", "items": ref("Seat")}, "next": NEXT}},
            "one page of seats"),
            "404": error("EVENT_NOT_FOUND"),
            "422": error("VALIDATION_FAILED: a bad status filter or limit, or an after that names no seat of "
                         "this event"),
            "503": COMMON_ERRORS["503"]}}},
    "/api/events/{event_id}/stats": {"get": {
        "summary": "An event's seat figures for its organizer (the organizers' page): the counts, and sold / held "
                   "/ available seats per section with its price",
        "description": "One GROUP BY over the event's seats in SQL. The money is billing's: "
                       "GET /api/events/{event_id}/sales there.",
        **access(ORGANIZER, SERVICE, owner=True),
        "parameters": [path_uuid("event_id")],
        "responses": {"200": json_body(ref("EventStats"), "the event's seat figures"),
                      "404": error("EVENT_NOT_FOUND: no such event, or not yours"),
                      "503": COMMON_ERRORS["503"]}}},
    "/api/events/{event_id}/seat-stream": {"get": {
        "summary": "Server-sent events of the event's seat status changes, live (public, like the seat map)",
        "description": "text/event-stream. `ready` {position} first; then `seats` {event_id, seats: [{id, status}]} "
                       "per change, its `id` the reservation stream's seq; a reconnect with `Last-Event-ID` "
                       "replays the missed changes, or sends `reset` {position} (reload the seat map) when they "
                       "are too old; `dropped` {reason: slow_consumer} before closing a viewer that fell behind; a "
                       "`: heartbeat` comment on a quiet stream.",
        **access(),
        "parameters": [path_uuid("event_id"), {"name": "Last-Event-ID", "in": "header", "required": False,
                                               "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the stream", "content": {"text/event-stream": {
            "schema": {"type": "string"}}}},
            "404": error("EVENT_NOT_FOUND"),
            "429": error("TOO_MANY_STREAMS: this client address already has its share of open streams "
                         "(TICKETFLOW_SEAT_STREAM_PER_ADDRESS); retry after Retry-After"),
            "503": error("DEPENDENCY_UNAVAILABLE: the database is unavailable or the stream is starting; "
                         "STREAM_CAPACITY: this server streams to its maximum of viewers; retry after "
                         "Retry-After")}}},
    "/api/reserve": {"post": {
        "summary": "Hold one seat (the simple form existing clients use). user_id may be omitted and, if "
                   "present, must be the caller's; a service names the buyer it acts for",
        **access(BUYER, SERVICE),
        "parameters": [IDEMPOTENCY_KEY],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["seat_id"],
            "properties": {"seat_id": UUID, "user_id": {"type": "string", "minLength": 1, "maxLength": 200}}}}}},
        "responses": HOLD_RESPONSES}},
    "/api/reservations": {"post": {
        "summary": "Hold several seats of one event, all or nothing (user_id as for /api/reserve)",
        **access(BUYER, SERVICE),
        "parameters": [IDEMPOTENCY_KEY],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["event_id", "seat_ids"],
            "properties": {"event_id": UUID, "seat_ids": {"type": "array", "items": UUID, "minItems": 1,
                                                          "uniqueItems": True},
                           "user_id": {"type": "string", "minLength": 1, "maxLength": 200}}}}}},
        "responses": HOLD_RESPONSES}},
    "/api/reservations/{reservation_id}": {
        "get": {"summary": "A reservation (its buyer, its event's organizer, services)",
                **access(BUYER, ORGANIZER, SERVICE, owner=True), "parameters": [path_uuid("reservation_id")],
                "responses": {"200": json_body(ref("Reservation"), "the reservation"),
                              "404": error("RESERVATION_NOT_FOUND"), "503": COMMON_ERRORS["503"]}},
        "delete": {"summary": "Release a hold (releasing twice answers the same). Billing is asked first: a "
                              "hold whose payment is being charged or was taken is not released",
                   **access(BUYER, SERVICE, owner=True),
                   "parameters": [path_uuid("reservation_id")],
                   "responses": {"200": json_body(ref("Reservation"), "the released reservation"),
                                 "404": error("RESERVATION_NOT_FOUND"),
                                 "409": error("RESERVATION_NOT_HELD: already confirmed or expired; "
                                              "RESERVATION_PAID: billing took its payment (the sale is being "
                                              "completed); PAYMENT_IN_PROGRESS: its payment is being charged"),
                                 "503": error("DEPENDENCY_UNAVAILABLE: the database, or billing (which must "
                                              "say the hold has no payment), is unreachable; retry after "
                                              "Retry-After")}},
    },
    "/api/reservations/{reservation_id}/confirm": {"post": {
        "summary": "Turn a live hold into a sale (used by the portal consumer; confirming twice answers the same)",
        **access(SERVICE),
        "parameters": [path_uuid("reservation_id")],
        "responses": {"200": json_body(ref("Reservation"), "the confirmed reservation"),
                      "404": error("RESERVATION_NOT_FOUND"),
                      "409": error("HOLD_LOST: the hold was released (expired or cancelled, with billing's "
                                   "word that it had no payment)"),
                      "503": COMMON_ERRORS["503"]}}},
    "/api/reservations/{reservation_id}/release": {"post": {
        "summary": "Give a sold reservation's seats back after its payment was refunded (used by the "
                   "portal consumer). A reservation that was never sold is returned unchanged. A sold one is "
                   "released only if billing confirms the named refund of its order.",
        **access(SERVICE),
        "parameters": [path_uuid("reservation_id")],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"refund_id": {"type": ["string", "null"]}}}}}},
        "responses": {"200": json_body(ref("Reservation"), "the reservation, now cancelled if it was sold"),
                      "404": error("RESERVATION_NOT_FOUND"),
                      "409": error("REFUND_REQUIRED: no refund_id named; REFUND_NOT_FOUND: billing knows no such "
                                   "refund of this order"),
                      **COMMON_ERRORS, "503": error("billing or the database is unavailable; retry after "
                                                    "Retry-After (DEPENDENCY_UNAVAILABLE)")}}},
}

SCHEMAS: dict[str, Any] = {
    "Section": {"type": "object", "required": ["name", "rows", "seats_per_row", "price_minor", "currency"],
                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 40},
                               "rows": {"type": "integer", "minimum": 1},
                               "seats_per_row": {"type": "integer", "minimum": 1},
                               "price_minor": {"type": "integer", "minimum": 0},
                               "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}},
    "NewEvent": {"type": "object", "required": ["name", "venue", "starts_at", "layout"], "properties": {
        "name": {"type": "string"}, "venue": {"type": "string"}, "starts_at": TIME,
        "description": {"type": "string"},
        "layout": {"type": "object", "required": ["sections"], "properties": {
            "sections": {"type": "array", "minItems": 1, "items": ref("Section")}}}}},
    "SeatCounts": {"type": "object", "required": ["total", "available", "held", "sold"], "properties": {
        k: {"type": "integer", "minimum": 0} for k in ("total", "available", "held", "sold")}},
    "Event": {"type": "object",
              "required": ["id", "name", "venue", "starts_at", "description", "created_at", "seats"],
              "properties": {"id": UUID, "name": {"type": "string"}, "venue": {"type": "string"},
                             "starts_at": TIME, "description": {"type": "string"}, "created_at": TIME,
                             "seats": ref("SeatCounts")}},
    "EventStats": {"type": "object", "required": ["event_id", "event", "sections"], "properties": {
        "event_id": UUID, "event": ref("Event"),
        "sections": {"type": "array", "items": {
            "type": "object",
            "required": ["section", "currency", "price_minor", "total", "available", "held", "sold"],
            "properties": {"section": {"type": "string"}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                           "price_minor": {"type": "integer", "minimum": 0},
                           **{k: {"type": "integer", "minimum": 0} for k in ("total", "available", "held", "sold")}},
        }}}},
    "Seat": {"type": "object",
             "required": ["id", "label", "section", "row", "number", "price_minor", "currency", "status"],
             "properties": {"id": UUID, "label": {"type": "string"}, "section": {"type": "string"},
                            "row": {"type": "integer"}, "number": {"type": "integer"},
                            "price_minor": {"type": "integer"}, "currency": {"type": "string"},
                            "status": {"enum": ["available", "held", "sold"]}}},
    "HeldSeat": {"type": "object",
                 "required": ["id", "label", "section", "row", "number", "price_minor", "currency"],
                 "properties": {"id": UUID, "label": {"type": "string"}, "section": {"type": "string"},
                                "row": {"type": "integer"}, "number": {"type": "integer"},
                                "price_minor": {"type": "integer"}, "currency": {"type": "string"}}},
    "Reservation": {"type": "object",
                    "required": ["id", "event_id", "user_id", "status", "seats", "amount_minor", "currency",
                                 "created_at", "expires_at"],
                    "properties": {"id": UUID, "event_id": UUID, "user_id": {"type": "string"},
                                   "organizer_id": {"type": ["string", "null"]},
                                   "status": {"enum": ["held", "cancelled", "expired", "confirmed"]},
                                   "seats": {"type": "array", "items": ref("HeldSeat")},
                                   "amount_minor": {"type": "integer", "minimum": 0},
                                   "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                   "created_at": TIME, "expires_at": TIME}},
}

PATHS.update(openapi_paths({path: title for path, (_, title) in PAGES.items()}))

SPEC = document(
    "TicketFlow reservation daemon",
    "Events, seat maps and seat holds. Money is in integer minor units with an ISO 4217 currency; "
    "times are RFC 3339 UTC; ids are UUIDs.",
    PATHS, SCHEMAS, rate_limited=True)
