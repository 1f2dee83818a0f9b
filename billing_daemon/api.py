"""HTTP handlers of the billing daemon: validate, check who is asking, call the store (and gateway),
shape the response. Who may call each operation is declared in openapi.py and enforced by
deploy.runtime.auth; the per-resource rule (owner, organizer of the event) is checked here."""

from __future__ import annotations

import re

from aiohttp import web

from billing_daemon import accounts
from billing_daemon.accounts import AccountStore
from billing_daemon.config import Settings
from billing_daemon.gateway import PaymentGateway
from billing_daemon.openapi import SPEC
from billing_daemon.payments import PAYMENTS
from billing_daemon.store import BillingError, BillingStore
from deploy.runtime import validation as v
from deploy.runtime.auth import ORGANIZER, Principal, TokenIssuer, Unauthorized, principal, require_visible
from deploy.runtime.http import (ApiError, NotFound, RouteLimit, idempotency, json_response, limit_key, read_json,
                                 service_routes)

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is the mail server's call.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
TICKET_CODE = re.compile(r"^[A-Za-z0-9_-]+$")


def _path_id(request: web.Request, name: str, code: str, what: str) -> str:
    return str(v.path_uuid(request.match_info[name], code, what))


def _billing_error(exc: BillingError) -> ApiError:
    error = ApiError(exc.message, code=exc.code, details=exc.details)
    error.status = exc.status
    return error


def _email(body: dict) -> str:
    email = v.text(body, "email", max_len=254).lower()
    if not EMAIL.match(email):
        raise v.invalid("email", "must be an email address")
    return email


def _password(body: dict) -> str:
    password = body.get("password")
    if not isinstance(password, str) or not accounts.MIN_PASSWORD <= len(password) <= accounts.MAX_PASSWORD:
        raise v.invalid("password", f"must be text of {accounts.MIN_PASSWORD} to {accounts.MAX_PASSWORD} characters")
    return password


RELEASE_CHECK_MAX = 1000  # order ids per release-check call
ORDER_NOT_FOUND = NotFound("no such order", code="ORDER_NOT_FOUND")


def for_caller(order: dict, caller: Principal) -> dict:
    """An order as ``caller`` may see it: ticket codes admit at the door, so they reach the buyer (and
    services acting for buyers), never an organizer looking at its event's orders."""
    if caller.role != ORGANIZER or caller.subject == order["user_id"]:
        return order
    return {**order, "tickets": [{k: v for k, v in t.items() if k != "code"} for t in order["tickets"]]}
USER_NOT_FOUND = NotFound("no such user", code="USER_NOT_FOUND")


def route_limits(settings: Settings) -> dict[tuple[str, str], RouteLimit]:
    """Logins are limited per client address and per e-mail (README, "Rate limits")."""
    if not settings.rate_limits_enabled:
        return {}
    return {("POST", "/api/sessions"): RouteLimit("logins", per_address=settings.logins_per_address,
                                                  per_key=settings.logins_per_email)}


def routes(settings: Settings, store: BillingStore, gateway: PaymentGateway, ready, instance: str,
           issuer: TokenIssuer, account_store: AccountStore):
    async def visible_order(request: web.Request, order_id: str) -> Principal:
        """The caller, if it may see ``order_id`` (its buyer, its event's organizer, a service); else 404."""
        caller = principal(request)
        parties = None if caller.is_service else await store.order_parties(order_id)
        require_visible(caller, owner=parties and parties["user_id"], organizer=parties and parties["organizer_id"],
                        not_found=ORDER_NOT_FOUND)
        return caller

    def own_user(request: web.Request, user_id: str) -> None:
        caller = principal(request)
        if not caller.is_service and caller.subject != user_id:
            raise USER_NOT_FOUND

    async def create_user(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        email, name, password = _email(body), v.text(body, "name"), _password(body)
        try:
            status, answer = await store.create_user(email, name, idempotency(request, body),
                                                     password_hash=await accounts.hash_password(password))
            return json_response(answer, status)
        except BillingError as exc:
            raise _billing_error(exc) from None

    async def login(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        email, password = _email(body), body.get("password")
        limit_key(request, "logins", email)  # password guessing against one account, from anywhere
        account = await account_store.credentials(email)
        if not isinstance(password, str) or not await accounts.verify_password(
                account and account["password_hash"], password[:accounts.MAX_PASSWORD]):
            raise Unauthorized("wrong e-mail or password")
        token, granted = issuer.issue(account["id"], account["role"])
        return json_response({"token": token, "token_type": "Bearer", "user_id": account["id"],
                              "role": account["role"], "expires_at": _rfc3339(granted.expires_at)}, 201)

    async def logout(request: web.Request) -> web.Response:
        await account_store.revoke(principal(request))
        return json_response({"status": "logged_out"})

    async def get_user(request: web.Request) -> web.Response:
        user_id = _path_id(request, "user_id", "USER_NOT_FOUND", "user")
        own_user(request, user_id)
        user = await store.get_user(user_id)
        if user is None:
            raise USER_NOT_FOUND
        return json_response(user)

    async def user_orders(request: web.Request) -> web.Response:
        user_id = _path_id(request, "user_id", "USER_NOT_FOUND", "user")
        own_user(request, user_id)
        orders = await store.user_orders(user_id)
        if orders is None:
            raise USER_NOT_FOUND
        return json_response({"orders": orders})

    async def event_orders(request: web.Request) -> web.Response:
        event_id = _path_id(request, "event_id", "EVENT_NOT_FOUND", "event")
        caller = principal(request)
        orders = await store.event_orders(event_id, None if caller.is_service else caller.subject)
        # An organizer sees the orders of its own events; for anyone else's event it is as if none existed.
        return json_response({"event_id": event_id, "orders": [for_caller(o, caller) for o in orders]})

    async def get_order(request: web.Request) -> web.Response:
        order_id = _path_id(request, "order_id", "ORDER_NOT_FOUND", "order")
        await visible_order(request, order_id)
        order = await store.get_order(order_id)
        if order is None:
            raise ORDER_NOT_FOUND
        return json_response(for_caller(order, principal(request)))

    async def pay(request: web.Request) -> web.Response:
        order_id = _path_id(request, "order_id", "ORDER_NOT_FOUND", "order")
        await visible_order(request, order_id)
        body = await read_json(request) if request.can_read_body else {}
        key = idempotency(request, body, required=True)
        try:
            # Begin or resume the attempt, charge, record (billing_daemon.payments).
            status, answer = await request.app[PAYMENTS].pay(order_id, key)
            if status == 200:
                await account_store.record(principal(request), "pay", order_id)
            return json_response(answer, status)
        except BillingError as exc:
            raise _billing_error(exc) from None

    async def refund(request: web.Request) -> web.Response:
        order_id = _path_id(request, "order_id", "ORDER_NOT_FOUND", "order")
        await visible_order(request, order_id)
        body = await read_json(request) if request.can_read_body else {}
        reason = v.text(v.obj(body), "reason", required=False, default="requested", max_len=200)
        caller = principal(request)
        actor = None if caller.anonymous else f"{caller.role}:{caller.subject}"  # the refund's audit trail
        try:
            status, answer = await request.app[PAYMENTS].refund(order_id, reason, actor)
            await account_store.record(principal(request), "refund", order_id, reason)
            return json_response(answer, status)
        except BillingError as exc:
            raise _billing_error(exc) from None

    async def release_check(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        order_ids = [str(i) for i in v.uuid_list(body, "order_ids", max_items=RELEASE_CHECK_MAX)]
        return json_response({"answers": await store.release_check(order_ids)})

    async def check_in(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        code = v.text(body, "code", min_len=10, max_len=100)
        if not TICKET_CODE.match(code):
            # Codes are URL-safe base64; anything else (a misread scan) is no ticket of ours.
            raise NotFound("no valid ticket has this code", code="TICKET_NOT_FOUND")
        try:
            return json_response(await store.check_in(code))
        except BillingError as exc:
            raise _billing_error(exc) from None

    return [
        *service_routes(ready, instance, SPEC),
        web.post("/api/users", create_user),
        web.post("/api/sessions", login),
        web.delete("/api/sessions/current", logout),
        web.get("/api/events/{event_id}/orders", event_orders),
        web.get("/api/users/{user_id}", get_user),
        web.get("/api/users/{user_id}/orders", user_orders),
        web.get("/api/orders/{order_id}", get_order),
        web.post("/api/orders/{order_id}/pay", pay),
        web.post("/api/orders/{order_id}/refund", refund),
        web.post("/api/checkin", check_in),
        web.post("/api/internal/holds/release-check", release_check),
    ]


def _rfc3339(epoch: float | None) -> str | None:
    from datetime import datetime, timezone

    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")
