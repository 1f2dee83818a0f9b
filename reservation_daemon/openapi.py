"""The OpenAPI 3.1 document of the reservation daemon's HTTP API.

Written by hand as the contract; the test suite checks every response it sees
against it, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Retrying with the same key returns the first response and never creates a second "
                   "event or hold. A retry that arrives while the first request is still running is answered "
                   "409 REQUEST_IN_PROGRESS; retry it shortly.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
COMMON_ERRORS = {
    "400": _error("malformed JSON (MALFORMED_JSON)"),
    "413": _error("body too large (PAYLOAD_TOO_LARGE)"),
    "422": _error("well-formed but invalid (VALIDATION_FAILED and more specific codes)"),
    "503": _error("database unavailable (DEPENDENCY_UNAVAILABLE); retry after Retry-After seconds"),
}
HOLD_RESPONSES = {
    "201": _json(_ref("Reservation"), "the hold"),
    **COMMON_ERRORS,
    "404": _error("SEAT_NOT_FOUND or EVENT_NOT_FOUND"),
    "409": _error("SEAT_UNAVAILABLE: a seat is already held or sold; REQUEST_IN_PROGRESS: a request with this "
                  "Idempotency-Key is still running"),
    "422": _error("VALIDATION_FAILED, SEAT_NOT_IN_EVENT, MIXED_CURRENCIES or IDEMPOTENCY_KEY_REUSED"),
}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "TicketFlow reservation daemon",
        "version": "0.1.0",
        "description": "Events, seat maps and seat holds. Money is in integer minor units with an "
                       "ISO 4217 currency; times are RFC 3339 UTC; ids are UUIDs.",
    },
    "paths": {
        "/health": {"get": {"summary": "The process is alive", "responses": {
            "200": _json({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
                         "alive")}}},
        "/ready": {"get": {"summary": "The daemon can serve requests now (its database answers)", "responses": {
            "200": _json(_ref("Readiness"), "ready"), "503": _json(_ref("Readiness"), "not ready")}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": _json({"type": "object"}, "OpenAPI 3.1 document")}}},
        "/api/instance": {"get": {"summary": "Which replica answered", "responses": {
            "200": _json({"type": "object", "required": ["instance", "pid", "version"], "properties": {
                "instance": {"type": "string"}, "pid": {"type": "integer"}, "version": {"type": "string"}}},
                "this replica")}}},
        "/api/events": {
            "post": {
                "summary": "Create an event with its seat layout",
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewEvent")}}},
                "responses": {"201": _json(_ref("Event"), "the event, with seat counts"), **COMMON_ERRORS,
                              "409": _error("REQUEST_IN_PROGRESS: a request with this Idempotency-Key is running"),
                              "422": _error("VALIDATION_FAILED, LAYOUT_TOO_LARGE or IDEMPOTENCY_KEY_REUSED")},
            },
            "get": {"summary": "List events", "responses": {"200": _json(
                {"type": "object", "required": ["events"],
                 "properties": {"events": {"type": "array", "items": _ref("Event")}}}, "all events"),
                "503": COMMON_ERRORS["503"]}},
        },
        "/api/events/{event_id}": {"get": {
            "summary": "One event with counts of available, held and sold seats",
            "parameters": [_path_id("event_id")],
            "responses": {"200": _json(_ref("Event"), "the event"), "404": _error("EVENT_NOT_FOUND"),
                          "503": COMMON_ERRORS["503"]}}},
        "/api/events/{event_id}/seats": {"get": {
            "summary": "Every seat of an event with its status",
            "parameters": [_path_id("event_id"), {"name": "status", "in": "query", "required": False,
                           "schema": {"enum": ["available", "held", "sold"]}}],
            "responses": {"200": _json({"type": "object", "required": ["event_id", "seats"], "properties": {
                "event_id": UUID, "seats": {"type": "array", "items": _ref("Seat")}}}, "the seats"),
                "404": _error("EVENT_NOT_FOUND"), "422": _error("VALIDATION_FAILED (bad status filter)"),
                "503": COMMON_ERRORS["503"]}}},
        "/api/reserve": {"post": {
            "summary": "Hold one seat (the simple form existing clients use)",
            "parameters": [IDEMPOTENCY_KEY],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["seat_id", "user_id"],
                "properties": {"seat_id": UUID, "user_id": {"type": "string", "minLength": 1, "maxLength": 200}}}}}},
            "responses": HOLD_RESPONSES}},
        "/api/reservations": {"post": {
            "summary": "Hold several seats of one event, all or nothing",
            "parameters": [IDEMPOTENCY_KEY],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["event_id", "seat_ids", "user_id"],
                "properties": {"event_id": UUID, "seat_ids": {"type": "array", "items": UUID, "minItems": 1,
                                                              "uniqueItems": True},
                               "user_id": {"type": "string", "minLength": 1, "maxLength": 200}}}}}},
            "responses": HOLD_RESPONSES}},
        "/api/reservations/{reservation_id}": {
            "get": {"summary": "A reservation", "parameters": [_path_id("reservation_id")],
                    "responses": {"200": _json(_ref("Reservation"), "the reservation"),
                                  "404": _error("RESERVATION_NOT_FOUND"), "503": COMMON_ERRORS["503"]}},
            "delete": {"summary": "Release a hold (releasing twice answers the same)",
                       "parameters": [_path_id("reservation_id")],
                       "responses": {"200": _json(_ref("Reservation"), "the released reservation"),
                                     "404": _error("RESERVATION_NOT_FOUND"),
                                     "409": _error("RESERVATION_NOT_HELD: already confirmed or expired"),
                                     "503": COMMON_ERRORS["503"]}},
        },
        "/api/reservations/{reservation_id}/confirm": {"post": {
            "summary": "Turn a live hold into a sale (used by the portal consumer; confirming twice answers the same)",
            "parameters": [_path_id("reservation_id")],
            "responses": {"200": _json(_ref("Reservation"), "the confirmed reservation"),
                          "404": _error("RESERVATION_NOT_FOUND"),
                          "409": _error("HOLD_LOST: the hold expired or was cancelled"),
                          "503": COMMON_ERRORS["503"]}}},
        "/api/reservations/{reservation_id}/release": {"post": {
            "summary": "Give a sold reservation's seats back after its payment was refunded (used by the "
                       "portal consumer). A reservation that was never sold is returned unchanged.",
            "parameters": [_path_id("reservation_id")],
            "responses": {"200": _json(_ref("Reservation"), "the reservation, now cancelled if it was sold"),
                          "404": _error("RESERVATION_NOT_FOUND"), "503": COMMON_ERRORS["503"]}}},
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}, "message": {"type": "string"},
                "details": {"type": "object"}}}}},
        "Readiness": {"type": "object", "required": ["status", "checks"], "properties": {
            "status": {"enum": ["ready", "unavailable"]}, "checks": {"type": "object"}}},
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
                "sections": {"type": "array", "minItems": 1, "items": _ref("Section")}}}}},
        "SeatCounts": {"type": "object", "required": ["total", "available", "held", "sold"], "properties": {
            k: {"type": "integer", "minimum": 0} for k in ("total", "available", "held", "sold")}},
        "Event": {"type": "object",
                  "required": ["id", "name", "venue", "starts_at", "description", "created_at", "seats"],
                  "properties": {"id": UUID, "name": {"type": "string"}, "venue": {"type": "string"},
                                 "starts_at": TIME, "description": {"type": "string"}, "created_at": TIME,
                                 "seats": _ref("SeatCounts")}},
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
                                       "status": {"enum": ["held", "cancelled", "expired", "confirmed"]},
                                       "seats": {"type": "array", "items": _ref("HeldSeat")},
                                       "amount_minor": {"type": "integer", "minimum": 0},
                                       "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                       "created_at": TIME, "expires_at": TIME}},
    }},
}


def _document_rate_limiting(spec: dict[str, Any]) -> None:
    # Every API operation may be rate limited (TICKETFLOW_RATE_LIMIT_PER_SECOND); probes never are.
    for path, operations in spec["paths"].items():
        if path.startswith("/api/"):
            for operation in operations.values():
                operation["responses"].setdefault(
                    "429", _error("RATE_LIMITED: too many requests from this client; retry after Retry-After"))


_document_rate_limiting(SPEC)
