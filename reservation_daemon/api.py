"""HTTP handlers of the reservation daemon: validate, check who is asking, call the store, shape the response.

Handlers are module-level functions over one :class:`Deps` (settings, store, billing,
release check) that the app puts in ``request.app[DEPS]``.

Who may call each operation is declared in openapi.py and enforced by deploy.runtime.auth;
the per-resource rule (a reservation is its buyer's, and its event organizer's) is checked here.

HTTP statuses are decided here and only here: the store's state changes answer with a
domain :class:`Outcome` (``held``, ``seat_unavailable``, ``hold_lost`` ...), and
:data:`ANSWERS` is the one table that turns an outcome into a status and, for a
refusal, the error envelope. An Idempotency-Key stores the outcome, so a replay goes
through the same table as the first answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from deploy.runtime import metrics
from deploy.runtime import validation as v
from deploy.runtime.auth import ORGANIZER, Forbidden, principal, require_visible
from deploy.runtime.http import (Conflict, DependencyUnavailable, NotFound, Unprocessable, error_body,
                                 idempotency, json_response, read_json, service_routes)
from deploy.runtime.ids import uuid7
from deploy.runtime.peer import Peer
from deploy.runtime.web import Pages, PageSettings
from reservation_daemon.config import Settings
from reservation_daemon.openapi import PAGES, SPEC
from reservation_daemon.release import ReleaseCheck
from reservation_daemon.seatstream import SeatFeed
from reservation_daemon.store import Outcome, Page, ReservationStore, Section, UnknownCursor


@dataclass(frozen=True)
class Deps:
    """What the handlers work with."""

    settings: Settings
    store: ReservationStore
    billing: Peer
    release_check: ReleaseCheck
    seat_feed: SeatFeed


DEPS = web.AppKey("reservation_deps", Deps)


@dataclass(frozen=True)
class Answer:
    """How an outcome is told to a client: the status, and for a refusal its code and message.

    ``message`` may name fields of the outcome's details (``{status}``).
    """

    status: int
    code: str | None = None
    message: str = ""


ANSWERS: dict[str, Answer] = {
    # success: the body is the resource
    "event_created": Answer(201),
    "held": Answer(201),
    "cancelled": Answer(200),
    "confirmed": Answer(200),
    "released": Answer(200),
    "not_sold": Answer(200),  # nothing to give back: releasing twice is harmless
    # Idempotency-Key
    "in_progress": Answer(409, "REQUEST_IN_PROGRESS",
                          "a request with this Idempotency-Key is still being processed; retry shortly"),
    "key_reused": Answer(422, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different request"),
    # refusals: the body is the details
    "seat_not_found": Answer(404, "SEAT_NOT_FOUND", "one or more seats do not exist"),
    "event_not_found": Answer(404, "EVENT_NOT_FOUND", "no such event"),
    "seat_not_in_event": Answer(422, "SEAT_NOT_IN_EVENT", "every seat of a hold must belong to the requested event"),
    "seat_unavailable": Answer(409, "SEAT_UNAVAILABLE", "one or more seats are already held or sold"),
    "mixed_currencies": Answer(422, "MIXED_CURRENCIES", "seats priced in different currencies cannot share a hold"),
    "reservation_not_found": Answer(404, "RESERVATION_NOT_FOUND", "no such reservation"),
    "not_held": Answer(409, "RESERVATION_NOT_HELD", "only a held reservation can be released; this one is {status}"),
    "hold_lost": Answer(409, "HOLD_LOST", "the hold is {status}; its seats may be sold to someone else"),
}


def answer(outcome: Outcome) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of a store outcome (:data:`ANSWERS`). An unknown outcome is a bug."""
    how = ANSWERS[outcome.name]
    if how.code is None:
        return how.status, outcome.body
    details = outcome.body or None
    return how.status, error_body(how.code, how.message.format(**(details or {})), details)


def respond(outcome: Outcome) -> web.Response:
    status, body = answer(outcome)
    return json_response(body, status)


SEAT_STATUSES = ("available", "held", "sold")
RESERVATION_NOT_FOUND = NotFound("no such reservation", code="RESERVATION_NOT_FOUND")
SEATS_PAGE, SEATS_PAGE_MAX = 1000, 5000  # seats per page of GET /api/events/{id}/seats: default, largest
EVENTS_PAGE, EVENTS_PAGE_MAX = 100, 1000  # events per page of GET /api/events


def _page_response(opening: str, page: Page) -> web.Response:
    """``{<opening> [items], "next": cursor-or-null}``, items already JSON text from the store."""
    following = "null" if page.next is None else f'"{page.next}"'
    return web.Response(text=f'{opening}{page.items_json},"next":{following}}}', content_type="application/json")


def _deps(request: web.Request) -> Deps:
    return request.app[DEPS]


def _reservation_id(request: web.Request):
    return v.path_uuid(request.match_info["reservation_id"], "RESERVATION_NOT_FOUND", "reservation")


def _event_id(request: web.Request):
    return v.path_uuid(request.match_info["event_id"], "EVENT_NOT_FOUND", "event")


# --- events and seats ----------------------------------------------------------------

async def create_event(request: web.Request) -> web.Response:
    deps = _deps(request)
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
    if total > deps.settings.max_layout_seats:
        raise Unprocessable(f"layout has {total} seats; the limit is {deps.settings.max_layout_seats}",
                            code="LAYOUT_TOO_LARGE", details={"seats": total})
    caller = principal(request)
    organizer = caller.subject if caller.role == ORGANIZER else v.text(
        body, "organizer_id", required=False, default=None)  # a service may name the organizer
    return respond(await deps.store.create_event(
        uuid7(), v.text(body, "name"), v.text(body, "venue"), v.timestamp(body, "starts_at"),
        v.text(body, "description", min_len=0, max_len=5000, required=False), sections,
        idempotency(request, body), organizer_id=organizer,
    ))


async def list_events(request: web.Request) -> web.Response:
    limit = v.query_int(request.query, "limit", default=EVENTS_PAGE, minimum=1, maximum=EVENTS_PAGE_MAX)
    try:
        page = await _deps(request).store.list_events(limit, v.query_uuid(request.query, "after"))
    except UnknownCursor:
        raise v.invalid("after", "names no event; pass the next value of the previous page") from None
    return _page_response('{"events":', page)


async def get_event(request: web.Request) -> web.Response:
    event = await _deps(request).store.get_event(_event_id(request))
    if event is None:
        raise NotFound("no such event", code="EVENT_NOT_FOUND")
    return json_response(event)


async def change_event(request: web.Request) -> web.Response:
    """Name, venue, description or start of an event: its organizer (or a service). The layout is fixed."""
    store = _deps(request).store
    event_id = _event_id(request)
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
    await store.audit(caller.subject, caller.role or "anonymous", "change_event", event_id,
                      ", ".join(sorted(changes)))
    return json_response(event)


async def list_seats(request: web.Request) -> web.Response:
    event_id = _event_id(request)
    status = request.query.get("status")
    if status is not None and status not in SEAT_STATUSES:
        raise Unprocessable(f"status must be one of {', '.join(SEAT_STATUSES)}", details={"field": "status"})
    limit = v.query_int(request.query, "limit", default=SEATS_PAGE, minimum=1, maximum=SEATS_PAGE_MAX)
    try:
        page = await _deps(request).store.seats_page(event_id, status, limit, v.query_uuid(request.query, "after"))
    except UnknownCursor:
        raise v.invalid("after", "names no seat of this event; pass the next value of the previous page") from None
    if page is None:
        raise NotFound("no such event", code="EVENT_NOT_FOUND")
    return _page_response(f'{{"event_id":"{event_id}","seats":', page)


async def event_stats(request: web.Request) -> web.Response:
    """The organizers' page's seat figures: its organizer (or a service) only; anyone else's event is a 404."""
    store = _deps(request).store
    event_id = _event_id(request)
    caller = principal(request)
    known, organizer = await store.event_organizer(event_id)
    if not known or not (caller.is_service or caller.subject == organizer):
        raise NotFound("no such event", code="EVENT_NOT_FOUND")
    stats = await store.event_stats(event_id)
    if stats is None:
        raise NotFound("no such event", code="EVENT_NOT_FOUND")
    return json_response({"event_id": str(event_id), **stats})


async def seat_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events of the event's seat changes (reservation_daemon.seatstream); public like the seat map."""
    deps = _deps(request)
    event_id = _event_id(request)
    known, _ = await deps.store.event_organizer(event_id)
    if not known:
        raise NotFound("no such event", code="EVENT_NOT_FOUND")
    return await deps.seat_feed.serve(request, str(event_id))


# --- pages -------------------------------------------------------------------------

WEB = Path(__file__).parent / "web"


BUYER_PAGES = Pages(WEB, {path: file for path, (file, _) in PAGES.items()})


def page_settings(settings: Settings) -> PageSettings:
    """What the buyer's pages are told (README, "The buyer's pages"): billing's public URL (they sign up,
    log in and pay there) and the per-hold limit; their data comes from the JSON API above and billing's."""
    billing = (settings.public_billing_url or settings.billing_url).rstrip("/")
    return PageSettings({"billing": billing, "max_seats": str(settings.max_seats)}, connect=(billing,))


# --- holds -------------------------------------------------------------------------

def _holder(request: web.Request, body: dict) -> str:
    """Whom a hold is for: the caller; a service names the buyer it acts for."""
    caller = principal(request)
    if caller.is_service:
        return v.text(body, "user_id")
    named = v.text(body, "user_id", required=False, default=None)
    if named is not None and named != caller.subject:
        raise Forbidden("user_id must be your own (or omitted)", code="USER_ID_MISMATCH")
    return caller.subject


async def _hold(request: web.Request, event_id, seat_ids, body: dict) -> web.Response:
    deps = _deps(request)
    outcome = await deps.store.reserve(uuid7(), event_id, seat_ids, _holder(request, body),
                                       deps.settings.hold_ttl, idempotency(request, body))
    metrics.HOLDS.labels(outcome.name).inc()
    return respond(outcome)


async def reserve_one(request: web.Request) -> web.Response:
    body = v.obj(await read_json(request))
    return await _hold(request, None, [v.uuid_field(body, "seat_id")], body)


async def reserve_many(request: web.Request) -> web.Response:
    body = v.obj(await read_json(request))
    event_id = v.uuid_field(body, "event_id")
    seat_ids = v.uuid_list(body, "seat_ids", max_items=_deps(request).settings.max_seats)
    return await _hold(request, event_id, seat_ids, body)


async def _visible_reservation(request: web.Request, reservation_id) -> dict:
    parties = await _deps(request).store.reservation_parties(reservation_id)
    if parties is None:
        raise RESERVATION_NOT_FOUND
    require_visible(principal(request), owner=parties["user_id"], organizer=parties["organizer_id"],
                    not_found=RESERVATION_NOT_FOUND)
    return dict(parties)


async def _audited(request: web.Request, action: str, reservation_id, outcome: Outcome,
                   reason: str | None = None) -> web.Response:
    """Answer ``outcome``; seat ownership changed hands (or was asked to): record who, when and why."""
    status, body = answer(outcome)
    if status == 200:
        caller = principal(request)
        await _deps(request).store.audit(caller.subject, caller.role or "anonymous", action, reservation_id, reason)
    return json_response(body, status)


async def get_reservation(request: web.Request) -> web.Response:
    reservation_id = _reservation_id(request)
    await _visible_reservation(request, reservation_id)
    reservation = await _deps(request).store.get_reservation(reservation_id)
    if reservation is None:
        raise RESERVATION_NOT_FOUND
    return json_response(reservation)


async def cancel(request: web.Request) -> web.Response:
    reservation_id = _reservation_id(request)
    parties = await _visible_reservation(request, reservation_id)
    if parties["status"] == "held":
        await _billing_releases(_deps(request).release_check, reservation_id)
    return await _audited(request, "cancel", reservation_id, await _deps(request).store.cancel(reservation_id))


async def _billing_releases(release_check: ReleaseCheck, reservation_id) -> None:
    """A hold is released only with billing's word that no payment holds it (reservation_daemon.release)."""
    answers = await release_check.ask([reservation_id])
    if answers is None or str(reservation_id) not in answers:
        raise DependencyUnavailable("billing cannot be asked whether this hold has a payment; retry shortly",
                                    retry_after=2)
    word = answers[str(reservation_id)]
    if word == "paid":
        raise Conflict("this hold is paid: the seats are yours and the sale is being completed; "
                       "a refund is asked of the event's organizer", code="RESERVATION_PAID")
    if word == "charging":
        raise Conflict("a payment of this hold is being charged; it cannot be released now",
                       code="PAYMENT_IN_PROGRESS")


async def confirm(request: web.Request) -> web.Response:
    reservation_id = _reservation_id(request)
    return await _audited(request, "confirm", reservation_id, await _deps(request).store.confirm(reservation_id))


async def release(request: web.Request) -> web.Response:
    deps = _deps(request)
    reservation_id = _reservation_id(request)
    body = v.obj(await read_json(request)) if request.can_read_body else {}
    refund_id = v.text(body, "refund_id", required=False, default=None)
    parties = await deps.store.reservation_parties(reservation_id)
    if parties is None:
        raise RESERVATION_NOT_FOUND
    if parties["status"] != "confirmed":
        # Never sold: nothing to give back, and no release call at all, so a sale confirmed
        # between this read and a release could never be undone without the refund check below.
        return json_response(await deps.store.get_reservation(reservation_id))
    # A sold seat goes back on sale only as part of a refund billing really made.
    await _require_refund(deps.billing, str(reservation_id), refund_id)
    return await _audited(request, "release", reservation_id, await deps.store.release_sold(reservation_id),
                          refund_id and f"refund {refund_id}")


async def _require_refund(billing: Peer, order_id: str, refund_id: str | None) -> None:
    if refund_id is None:
        raise Conflict("a sold reservation is released only as part of a refund: name its refund_id",
                       code="REFUND_REQUIRED")
    status, order = await billing.call("GET", f"/api/orders/{order_id}")
    refunds = order.get("refunds", []) if status == 200 and isinstance(order, dict) else []
    if not any(isinstance(r, dict) and r.get("id") == refund_id for r in refunds):
        raise Conflict("billing knows no such refund of this order; the seats stay sold",
                       code="REFUND_NOT_FOUND", details={"refund_id": refund_id})


def routes(ready: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]], instance: str) -> list[web.RouteDef]:
    """Every route; the handlers find their :class:`Deps` in ``request.app[DEPS]``."""
    return [
        *service_routes(ready, instance, SPEC),
        web.post("/api/events", create_event),
        web.get("/api/events", list_events),
        web.get("/api/events/{event_id}", get_event),
        web.patch("/api/events/{event_id}", change_event),
        web.get("/api/events/{event_id}/seats", list_seats),
        web.get("/api/events/{event_id}/stats", event_stats),
        web.get("/api/events/{event_id}/seat-stream", seat_stream),
        web.post("/api/reserve", reserve_one),
        web.post("/api/reservations", reserve_many),
        web.get("/api/reservations/{reservation_id}", get_reservation),
        web.delete("/api/reservations/{reservation_id}", cancel),
        web.post("/api/reservations/{reservation_id}/confirm", confirm),
        web.post("/api/reservations/{reservation_id}/release", release),
        *BUYER_PAGES.routes(),
    ]
