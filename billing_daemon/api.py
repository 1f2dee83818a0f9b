"""HTTP handlers of the billing daemon: validate, check who is asking, call the stores (and payments),
shape the response. Who may call each operation is declared in openapi.py and enforced by
deploy.runtime.auth; the per-resource rule (owner, organizer of the event) is checked here.

HTTP statuses are decided here and only here: :data:`STATUS` maps each code of a
:class:`~billing_daemon.rules.Refused` to its status, and :func:`response` turns any
answer into the (status, body) that is sent and recorded under an Idempotency-Key
(the stores record it through the ``respond`` they are given). Handlers are plain
functions over the :class:`Deps` of the app (``request.app[DEPS]``).
"""

from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from billing_daemon import accounts
from billing_daemon.accounts import AccountStore
from billing_daemon.config import Settings
from billing_daemon.openapi import PAGES, SPEC
from billing_daemon.payments import Payments
from billing_daemon.rules import Answer, Refused, email_taken
from billing_daemon.store import BillingStore, Replayed, Result
from deploy.runtime import metrics
from deploy.runtime import validation as v
from deploy.runtime.auth import ORGANIZER, Principal, TokenIssuer, Unauthorized, principal, require_visible
from deploy.runtime.http import (ApiError, NotFound, RouteLimit, error_body, idempotency, json_response, limit_key,
                                 read_json, service_routes)
from deploy.runtime.times import rfc3339
from deploy.runtime.web import Pages

# The one home of billing's HTTP statuses: every code billing's rules refuse with.
STATUS: dict[str, int] = {
    "ORDER_NOT_FOUND": 404,
    "TICKET_NOT_FOUND": 404,
    "PAYMENT_DECLINED": 402,
    "PAYMENT_FAILED": 402,
    "ORDER_NOT_PAYABLE": 409,
    "HOLD_EXPIRED": 409,
    "PAYMENT_IN_PROGRESS": 409,
    "REQUEST_IN_PROGRESS": 409,
    "ORDER_NOT_REFUNDABLE": 409,
    "ALREADY_CHECKED_IN": 409,
    "EMAIL_TAKEN": 409,
    "IDEMPOTENCY_KEY_REUSED": 422,
}


def response(answer: Answer | Result) -> tuple[int, dict[str, Any]]:
    """The HTTP (status, body) of an answer: what is sent, and what an Idempotency-Key records."""
    if isinstance(answer, Replayed):
        return answer.status, answer.body
    if isinstance(answer, Refused):
        return STATUS[answer.code], error_body(answer.code, answer.message, answer.details)
    return (201 if answer.created else 200), answer.body


def respond(answer: Answer | Result) -> web.Response:
    status, body = response(answer)
    return json_response(body, status)


@web.middleware
async def refusals(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """A :class:`Refused` raised anywhere below a handler becomes its error response."""
    try:
        return await handler(request)
    except Refused as exc:
        error = ApiError(exc.message, code=exc.code, details=exc.details)
        error.status = STATUS[exc.code]
        raise error from None


@dataclass(frozen=True)
class Deps:
    """What the handlers work with, made once by the app."""

    settings: Settings
    store: BillingStore
    payments: Payments
    accounts: AccountStore
    issuer: TokenIssuer


DEPS = web.AppKey("billing_deps", Deps)

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is the mail server's call.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
TICKET_CODE = re.compile(r"^[A-Za-z0-9_-]+$")
RELEASE_CHECK_MAX = 1000  # order ids per release-check call
ORDER_NOT_FOUND = NotFound("no such order", code="ORDER_NOT_FOUND")
USER_NOT_FOUND = NotFound("no such user", code="USER_NOT_FOUND")


def route_limits(settings: Settings) -> dict[tuple[str, str], RouteLimit]:
    """Logins are limited per client address and per e-mail (README, "Rate limits")."""
    if not settings.rate_limits_enabled:
        return {}
    return {("POST", "/api/sessions"): RouteLimit("logins", per_address=settings.logins_per_address,
                                                  per_key=settings.logins_per_email),
            # a sign-up costs an argon2 hash: tens of milliseconds of CPU per request
            ("POST", "/api/users"): RouteLimit("signups", per_address=settings.signups_per_address)}


# --- request pieces ---------------------------------------------------------------------


def _path_id(request: web.Request, name: str, code: str, what: str) -> str:
    return str(v.path_uuid(request.match_info[name], code, what))


def _email(body: dict) -> str:
    email = v.text(body, "email", max_len=254).lower()
    if not EMAIL.match(email):
        raise v.invalid("email", "must be an email address")
    return email


def _password(body: dict) -> str:
    password = body.get("password")
    if not isinstance(password, str) or not accounts.MIN_PASSWORD <= len(password) <= accounts.MAX_PASSWORD:
        raise v.invalid("password", f"must be text of {accounts.MIN_PASSWORD} to {accounts.MAX_PASSWORD} characters")
    return v.storable(password, "password")  # a lone surrogate cannot be hashed: a 422, not a 500


def for_caller(order: dict, caller: Principal) -> dict:
    """An order as ``caller`` may see it: ticket codes admit at the door, so they reach the buyer (and
    services acting for buyers), never an organizer looking at its event's orders."""
    if caller.role != ORGANIZER or caller.subject == order["user_id"]:
        return order
    return {**order, "tickets": [{k: v for k, v in t.items() if k != "code"} for t in order["tickets"]]}


async def _visible_order(request: web.Request, order_id: str) -> Principal:
    """The caller, if it may see ``order_id`` (its buyer, its event's organizer, a service); else 404."""
    caller = principal(request)
    parties = None if caller.is_service else await request.app[DEPS].store.orders.order_parties(order_id)
    require_visible(caller, owner=parties and parties["user_id"], organizer=parties and parties["organizer_id"],
                    not_found=ORDER_NOT_FOUND)
    return caller


def _own_user(request: web.Request, user_id: str) -> None:
    caller = principal(request)
    if not caller.is_service and caller.subject != user_id:
        raise USER_NOT_FOUND


# --- users and sessions ---------------------------------------------------------------


async def create_user(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = v.obj(await read_json(request))
    email, name, password = _email(body), v.text(body, "name"), _password(body)
    created = await deps.store.users.create_user(email, name, idempotency(request, body),
                                                 password_hash=await accounts.hash_password(password))
    if isinstance(created, Replayed) and principal(request).anonymous:
        # An anonymous replay is scoped by the request minus its password (which is never stored
        # in the clear, nor as a bare hash): only the one who knows the account's password gets
        # the stored answer; anyone else is told what a new request would be told.
        account = await deps.accounts.credentials(email)
        if not await accounts.verify_password(account and account["password_hash"], password):
            raise email_taken()
    return respond(created)


async def login(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = v.obj(await read_json(request))
    email, password = _email(body), body.get("password")
    account = await deps.accounts.credentials(email)
    # Guessing against one account, from anywhere: counted per account, since the e-mail collation
    # finds one account under many spellings (accents, case); per e-mail when there is no account.
    limit_key(request, "logins", account["id"] if account else email)
    if not isinstance(password, str) or not await accounts.verify_password(
            account and account["password_hash"], password[:accounts.MAX_PASSWORD]):
        raise Unauthorized("wrong e-mail or password")
    token, granted = deps.issuer.issue(account["id"], account["role"])
    return json_response({"token": token, "token_type": "Bearer", "user_id": account["id"],
                          "role": account["role"], "expires_at": rfc3339(granted.expires_at)}, 201)


async def logout(request: web.Request) -> web.Response:
    await request.app[DEPS].accounts.revoke(principal(request))
    return json_response({"status": "logged_out"})


async def get_user(request: web.Request) -> web.Response:
    user_id = _path_id(request, "user_id", "USER_NOT_FOUND", "user")
    _own_user(request, user_id)
    user = await request.app[DEPS].store.users.get_user(user_id)
    if user is None:
        raise USER_NOT_FOUND
    return json_response(user)


# --- orders -----------------------------------------------------------------------------


async def user_orders(request: web.Request) -> web.Response:
    user_id = _path_id(request, "user_id", "USER_NOT_FOUND", "user")
    _own_user(request, user_id)
    orders = await request.app[DEPS].store.orders.user_orders(user_id)
    if orders is None:
        raise USER_NOT_FOUND
    return json_response({"orders": orders})


async def event_orders(request: web.Request) -> web.Response:
    event_id = _path_id(request, "event_id", "EVENT_NOT_FOUND", "event")
    caller = principal(request)
    orders = await request.app[DEPS].store.orders.event_orders(event_id, None if caller.is_service else caller.subject)
    # An organizer sees the orders of its own events; for anyone else's event it is as if none existed.
    return json_response({"event_id": event_id, "orders": [for_caller(o, caller) for o in orders]})


async def event_sales(request: web.Request) -> web.Response:
    """The organizers' page's money figures (README, "The organizers' page"): its organizer's orders only."""
    event_id = _path_id(request, "event_id", "EVENT_NOT_FOUND", "event")
    caller = principal(request)
    report = await request.app[DEPS].store.sales.event_sales(event_id, None if caller.is_service else caller.subject)
    if report is None:  # no order of it here, or none of the caller's: ids reveal nothing
        raise NotFound("no sales of an event of yours", code="EVENT_NOT_FOUND")
    return json_response(report)


async def get_order(request: web.Request) -> web.Response:
    order_id = _path_id(request, "order_id", "ORDER_NOT_FOUND", "order")
    caller = await _visible_order(request, order_id)
    if request.method == "HEAD":
        # Is it there yet (a client waiting for an order polls this): one indexed lookup, no view.
        # A caller other than a service was answered by _visible_order's lookup already.
        if caller.is_service and not await request.app[DEPS].store.orders.exists(order_id):
            raise ORDER_NOT_FOUND
        return web.Response(status=200, content_type="application/json")
    order = await request.app[DEPS].store.orders.get_order(order_id)
    if order is None:
        raise ORDER_NOT_FOUND
    return json_response(for_caller(order, caller))


# --- pages -------------------------------------------------------------------------------

DOOR_PAGES = Pages(Path(__file__).parent / "web", {path: file for path, (file, _) in PAGES.items()})


# --- money --------------------------------------------------------------------------------


async def pay(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    order_id = _path_id(request, "order_id", "ORDER_NOT_FOUND", "order")
    caller = await _visible_order(request, order_id)
    body = await read_json(request) if request.can_read_body else {}
    key = idempotency(request, body, required=True)
    # Begin or resume the attempt, charge, record and audit a 200 (billing_daemon.payments).
    status, answer = response(await deps.payments.pay(order_id, key, actor=caller))
    metrics.PAYMENTS.labels("succeeded" if status == 200 else metrics.bounded(
        str(answer.get("error", {}).get("code", status)).lower())).inc()
    return json_response(answer, status)


async def refund(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    order_id = _path_id(request, "order_id", "ORDER_NOT_FOUND", "order")
    caller = await _visible_order(request, order_id)
    body = await read_json(request) if request.can_read_body else {}
    reason = v.text(v.obj(body), "reason", required=False, default="requested", max_len=200)
    actor = None if caller.anonymous else f"{caller.role}:{caller.subject}"  # the refund's audit trail
    refunded = await deps.payments.refund(order_id, reason, actor)
    await deps.accounts.record(caller, "refund", order_id, reason)
    status, answer = response(refunded)
    if status == 200:
        answer = for_caller(answer, caller)  # an organizer never sees codes, void or not
    return json_response(answer, status)


# --- the door, and the reservation daemon ---------------------------------------------


async def check_in(request: web.Request) -> web.Response:
    body = v.obj(await read_json(request))
    code = v.text(body, "code", min_len=10, max_len=100)
    if not TICKET_CODE.match(code):
        # Codes are URL-safe base64; anything else (a misread scan) is no ticket of ours.
        raise NotFound("no valid ticket has this code", code="TICKET_NOT_FOUND")
    return json_response(await request.app[DEPS].store.checkin.check_in(code))


async def release_check(request: web.Request) -> web.Response:
    body = v.obj(await read_json(request))
    order_ids = [str(i) for i in v.uuid_list(body, "order_ids", max_items=RELEASE_CHECK_MAX)]
    return json_response({"answers": await request.app[DEPS].store.inbox.release_check(order_ids)})


def routes(ready: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]], instance: str) -> list[web.RouteDef]:
    return [
        *service_routes(ready, instance, SPEC),
        web.post("/api/users", create_user),
        web.post("/api/sessions", login),
        web.delete("/api/sessions/current", logout),
        web.get("/api/events/{event_id}/orders", event_orders),
        web.get("/api/events/{event_id}/sales", event_sales),
        web.get("/api/users/{user_id}", get_user),
        web.get("/api/users/{user_id}/orders", user_orders),
        web.get("/api/orders/{order_id}", get_order),
        web.post("/api/orders/{order_id}/pay", pay),
        web.post("/api/orders/{order_id}/refund", refund),
        web.post("/api/checkin", check_in),
        web.post("/api/internal/holds/release-check", release_check),
        *DOOR_PAGES.routes(),
    ]
