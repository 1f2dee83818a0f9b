"""HTTP handlers of the reservation daemon: validate, call the store, shape the response."""

from __future__ import annotations

from aiohttp import web

from deploy.runtime import validation as v
from deploy.runtime.http import NotFound, Unprocessable, idempotency, json_response, read_json, service_routes
from deploy.runtime.ids import uuid7
from reservation_daemon.config import Settings
from reservation_daemon.openapi import SPEC
from reservation_daemon.store import Page, ReservationStore, Section, UnknownCursor

SEAT_STATUSES = ("available", "held", "sold")
SEATS_PAGE, SEATS_PAGE_MAX = 1000, 5000  # seats per page of GET /api/events/{id}/seats: default, largest
EVENTS_PAGE, EVENTS_PAGE_MAX = 100, 1000  # events per page of GET /api/events


def _page_response(opening: str, page: Page) -> web.Response:
    """``{<opening> [items], "next": cursor-or-null}``, items already JSON text from the store."""
    following = "null" if page.next is None else f'"{page.next}"'
    return web.Response(text=f'{opening}{page.items_json},"next":{following}}}', content_type="application/json")


def routes(settings: Settings, store: ReservationStore, ready, instance: str) -> list[web.RouteDef]:
    async def create_event(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        layout = v.obj(body.get("layout"), "layout")
        raw_sections = layout.get("sections")
        if not isinstance(raw_sections, list) or not 1 <= len(raw_sections) <= 100:
            raise Unprocessable("layout.sections: must be a list of 1 to 100 sections",
                                details={"field": "layout.sections"})
        sections = []
        for raw in raw_sections:
            section = v.obj(raw, "layout.sections[]")
            sections.append(Section(
                name=v.text(section, "name", max_len=40),
                rows=v.integer(section, "rows", minimum=1, maximum=10_000),
                seats_per_row=v.integer(section, "seats_per_row", minimum=1, maximum=10_000),
                price_minor=v.integer(section, "price_minor", minimum=0, maximum=10**12),
                currency=v.currency(section, "currency"),
            ))
        if len({s.name for s in sections}) != len(sections):
            raise Unprocessable("layout.sections: section names must be unique", details={"field": "layout.sections"})
        total = sum(s.rows * s.seats_per_row for s in sections)
        if total > settings.max_layout_seats:
            raise Unprocessable(f"layout has {total} seats; the limit is {settings.max_layout_seats}",
                                code="LAYOUT_TOO_LARGE", details={"seats": total})
        status, event = await store.create_event(
            uuid7(), v.text(body, "name"), v.text(body, "venue"), v.timestamp(body, "starts_at"),
            v.text(body, "description", min_len=0, max_len=5000, required=False), sections,
            idempotency(request, body),
        )
        return json_response(event, status)

    async def list_events(request: web.Request) -> web.Response:
        limit = v.query_int(request.query, "limit", default=EVENTS_PAGE, minimum=1, maximum=EVENTS_PAGE_MAX)
        try:
            page = await store.list_events(limit, v.query_uuid(request.query, "after"))
        except UnknownCursor:
            raise v.invalid("after", "names no event; pass the next value of the previous page") from None
        return _page_response('{"events":', page)

    async def get_event(request: web.Request) -> web.Response:
        event_id = v.path_uuid(request.match_info["event_id"], "EVENT_NOT_FOUND", "event")
        event = await store.get_event(event_id)
        if event is None:
            raise NotFound("no such event", code="EVENT_NOT_FOUND")
        return json_response(event)

    async def list_seats(request: web.Request) -> web.Response:
        event_id = v.path_uuid(request.match_info["event_id"], "EVENT_NOT_FOUND", "event")
        status = request.query.get("status")
        if status is not None and status not in SEAT_STATUSES:
            raise Unprocessable(f"status must be one of {', '.join(SEAT_STATUSES)}", details={"field": "status"})
        limit = v.query_int(request.query, "limit", default=SEATS_PAGE, minimum=1, maximum=SEATS_PAGE_MAX)
        try:
            page = await store.seats_page(event_id, status, limit, v.query_uuid(request.query, "after"))
        except UnknownCursor:
            raise v.invalid("after", "names no seat of this event; pass the next value of the previous page") from None
        if page is None:
            raise NotFound("no such event", code="EVENT_NOT_FOUND")
        return _page_response(f'{{"event_id":"{event_id}","seats":', page)

    async def hold(request: web.Request, event_id, seat_ids, user_id, body) -> web.Response:
        status, result = await store.reserve(uuid7(), event_id, seat_ids, user_id, settings.hold_ttl,
                                             idempotency(request, body))
        return json_response(result, status)

    async def reserve_one(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        seat_id = v.uuid_field(body, "seat_id")
        return await hold(request, None, [seat_id], v.text(body, "user_id"), body)

    async def reserve_many(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        event_id = v.uuid_field(body, "event_id")
        seat_ids = v.uuid_list(body, "seat_ids", max_items=settings.max_seats)
        return await hold(request, event_id, seat_ids, v.text(body, "user_id"), body)

    async def get_reservation(request: web.Request) -> web.Response:
        reservation_id = v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")
        reservation = await store.get_reservation(reservation_id)
        if reservation is None:
            raise NotFound("no such reservation", code="RESERVATION_NOT_FOUND")
        return json_response(reservation)

    async def cancel(request: web.Request) -> web.Response:
        reservation_id = v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")
        status, result = await store.cancel(reservation_id)
        return json_response(result, status)

    async def confirm(request: web.Request) -> web.Response:
        reservation_id = v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")
        status, result = await store.confirm(reservation_id)
        return json_response(result, status)

    async def release(request: web.Request) -> web.Response:
        reservation_id = v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")
        status, result = await store.release_sold(reservation_id)
        return json_response(result, status)

    return [
        *service_routes(ready, instance, SPEC),
        web.post("/api/events", create_event),
        web.get("/api/events", list_events),
        web.get("/api/events/{event_id}", get_event),
        web.get("/api/events/{event_id}/seats", list_seats),
        web.post("/api/reserve", reserve_one),
        web.post("/api/reservations", reserve_many),
        web.get("/api/reservations/{reservation_id}", get_reservation),
        web.delete("/api/reservations/{reservation_id}", cancel),
        web.post("/api/reservations/{reservation_id}/confirm", confirm),
        web.post("/api/reservations/{reservation_id}/release", release),
    ]
