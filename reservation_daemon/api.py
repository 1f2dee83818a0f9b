"""HTTP handlers of the reservation daemon: validate, check who is asking, call the store, shape the response.

Who may call each operation is declared in openapi.py and enforced by deploy.runtime.auth;
the per-resource rule (a reservation is its buyer's, and its event organizer's) is checked here.
"""

from __future__ import annotations

from aiohttp import web

from deploy.runtime import validation as v
from deploy.runtime.auth import ORGANIZER, Forbidden, principal, require_visible
from deploy.runtime.http import (Conflict, DependencyUnavailable, NotFound, Unprocessable, idempotency,
                                 json_response, read_json, service_routes)
from deploy.runtime.peer import Peer
from deploy.runtime.ids import uuid7
from reservation_daemon.config import Settings
from reservation_daemon.openapi import SPEC
from reservation_daemon.release import ReleaseCheck
from reservation_daemon.store import Page, ReservationStore, Section, UnknownCursor

SEAT_STATUSES = ("available", "held", "sold")
RESERVATION_NOT_FOUND = NotFound("no such reservation", code="RESERVATION_NOT_FOUND")
SEATS_PAGE, SEATS_PAGE_MAX = 1000, 5000  # seats per page of GET /api/events/{id}/seats: default, largest
EVENTS_PAGE, EVENTS_PAGE_MAX = 100, 1000  # events per page of GET /api/events


def _page_response(opening: str, page: Page) -> web.Response:
    """``{<opening> [items], "next": cursor-or-null}``, items already JSON text from the store."""
    following = "null" if page.next is None else f'"{page.next}"'
    return web.Response(text=f'{opening}{page.items_json},"next":{following}}}', content_type="application/json")


def routes(settings: Settings, store: ReservationStore, ready, instance: str, billing: Peer,
           release_check: ReleaseCheck) -> list[web.RouteDef]:
    def holder(request: web.Request, body: dict) -> str:
        """Whom a hold is for: the caller; a service names the buyer it acts for."""
        caller = principal(request)
        if caller.is_service:
            return v.text(body, "user_id")
        named = v.text(body, "user_id", required=False, default=None)
        if named is not None and named != caller.subject:
            raise Forbidden("user_id must be your own (or omitted)", code="USER_ID_MISMATCH")
        return caller.subject

    async def audited(request: web.Request, action: str, reservation_id, status: int, reason: str | None = None):
        """Seat ownership changed hands (or was asked to): record who, when and why."""
        if status == 200:
            caller = principal(request)
            await store.audit(caller.subject, caller.role or "anonymous", action, reservation_id, reason)

    async def visible_reservation(request: web.Request, reservation_id) -> dict:
        parties = await store.reservation_parties(reservation_id)
        if parties is None:
            raise RESERVATION_NOT_FOUND
        require_visible(principal(request), owner=parties["user_id"], organizer=parties["organizer_id"],
                        not_found=RESERVATION_NOT_FOUND)
        return dict(parties)

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
        caller = principal(request)
        organizer = caller.subject if caller.role == ORGANIZER else v.text(
            body, "organizer_id", required=False, default=None)  # a service may name the organizer
        status, event = await store.create_event(
            uuid7(), v.text(body, "name"), v.text(body, "venue"), v.timestamp(body, "starts_at"),
            v.text(body, "description", min_len=0, max_len=5000, required=False), sections,
            idempotency(request, body), organizer_id=organizer,
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

    async def change_event(request: web.Request) -> web.Response:
        """Name, venue, description or start of an event: its organizer (or a service). The layout is fixed."""
        event_id = v.path_uuid(request.match_info["event_id"], "EVENT_NOT_FOUND", "event")
        caller = principal(request)
        known, organizer = await store.event_organizer(event_id)
        if not known or not (caller.is_service or caller.subject == organizer):
            raise NotFound("no such event", code="EVENT_NOT_FOUND")  # someone else's event: as if none
        body = v.obj(await read_json(request))
        changes = {field: v.text(body, field, max_len=200) for field in ("name", "venue") if field in body}
        if "description" in body:
            changes["description"] = v.text(body, "description", min_len=0, max_len=5000)
        if "starts_at" in body:
            changes["starts_at"] = v.timestamp(body, "starts_at")
        if not changes:
            raise Unprocessable("name, venue, description or starts_at: at least one to change",
                                details={"field": "name"})
        event = await store.change_event(event_id, changes)
        caller_role = caller.role or "anonymous"
        await store.audit(caller.subject, caller_role, "change_event", event_id, ", ".join(sorted(changes)))
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
        return await hold(request, None, [seat_id], holder(request, body), body)

    async def reserve_many(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        event_id = v.uuid_field(body, "event_id")
        seat_ids = v.uuid_list(body, "seat_ids", max_items=settings.max_seats)
        return await hold(request, event_id, seat_ids, holder(request, body), body)

    async def get_reservation(request: web.Request) -> web.Response:
        reservation_id = v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")
        await visible_reservation(request, reservation_id)
        reservation = await store.get_reservation(reservation_id)
        if reservation is None:
            raise RESERVATION_NOT_FOUND
        return json_response(reservation)

    async def cancel(request: web.Request) -> web.Response:
        reservation_id = v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")
        parties = await visible_reservation(request, reservation_id)
        if parties["status"] == "held":
            await billing_releases(reservation_id)
        status, result = await store.cancel(reservation_id)
        await audited(request, "cancel", reservation_id, status)
        return json_response(result, status)

    async def billing_releases(reservation_id) -> None:
        """A hold is released only with billing's word that no payment holds it (reservation_daemon.release)."""
        answers = await release_check.ask([reservation_id])
        if answers is None or str(reservation_id) not in answers:
            raise DependencyUnavailable("billing cannot be asked whether this hold has a payment; retry shortly",
                                        retry_after=2)
        answer = answers[str(reservation_id)]
        if answer == "paid":
            raise Conflict("this hold is paid: the seats are yours and the sale is being completed; "
                           "a refund is asked of the event's organizer", code="RESERVATION_PAID")
        if answer == "charging":
            raise Conflict("a payment of this hold is being charged; it cannot be released now",
                           code="PAYMENT_IN_PROGRESS")

    async def confirm(request: web.Request) -> web.Response:
        reservation_id = v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")
        status, result = await store.confirm(reservation_id)
        await audited(request, "confirm", reservation_id, status)
        return json_response(result, status)

    async def release(request: web.Request) -> web.Response:
        reservation_id = v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")
        body = v.obj(await read_json(request)) if request.can_read_body else {}
        refund_id = v.text(body, "refund_id", required=False, default=None)
        parties = await store.reservation_parties(reservation_id)
        if parties is not None and parties["status"] == "confirmed":
            # A sold seat goes back on sale only as part of a refund billing really made.
            await require_refund(str(reservation_id), refund_id)
        status, result = await store.release_sold(reservation_id)
        await audited(request, "release", reservation_id, status, refund_id and f"refund {refund_id}")
        return json_response(result, status)

    async def require_refund(order_id: str, refund_id: str | None) -> None:
        if refund_id is None:
            raise Conflict("a sold reservation is released only as part of a refund: name its refund_id",
                           code="REFUND_REQUIRED")
        status, order = await billing.call("GET", f"/api/orders/{order_id}")
        refunds = order.get("refunds", []) if status == 200 and isinstance(order, dict) else []
        if not any(isinstance(r, dict) and r.get("id") == refund_id for r in refunds):
            raise Conflict("billing knows no such refund of this order; the seats stay sold",
                           code="REFUND_NOT_FOUND", details={"refund_id": refund_id})

    return [
        *service_routes(ready, instance, SPEC),
        web.post("/api/events", create_event),
        web.get("/api/events", list_events),
        web.get("/api/events/{event_id}", get_event),
        web.patch("/api/events/{event_id}", change_event),
        web.get("/api/events/{event_id}/seats", list_seats),
        web.post("/api/reserve", reserve_one),
        web.post("/api/reservations", reserve_many),
        web.get("/api/reservations/{reservation_id}", get_reservation),
        web.delete("/api/reservations/{reservation_id}", cancel),
        web.post("/api/reservations/{reservation_id}/confirm", confirm),
        web.post("/api/reservations/{reservation_id}/release", release),
    ]
