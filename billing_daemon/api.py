"""HTTP handlers of the billing daemon: validate, call the store (and gateway), shape the response."""

from __future__ import annotations

import re

from aiohttp import web

from billing_daemon.config import Settings
from billing_daemon.gateway import PaymentGateway
from billing_daemon.openapi import SPEC
from billing_daemon.payments import PAYMENTS
from billing_daemon.store import BillingError, BillingStore
from deploy.runtime import validation as v
from deploy.runtime.auth import principal
from deploy.runtime.http import ApiError, NotFound, idempotency, json_response, read_json, service_routes

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is the mail server's call.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
TICKET_CODE = re.compile(r"^[A-Za-z0-9_-]+$")


def _path_id(request: web.Request, name: str, code: str, what: str) -> str:
    return str(v.path_uuid(request.match_info[name], code, what))


def _billing_error(exc: BillingError) -> ApiError:
    error = ApiError(exc.message, code=exc.code, details=exc.details)
    error.status = exc.status
    return error


def routes(settings: Settings, store: BillingStore, gateway: PaymentGateway, ready, instance: str):
    async def create_user(request: web.Request) -> web.Response:
        body = v.obj(await read_json(request))
        email = v.text(body, "email", max_len=254).lower()
        if not EMAIL.match(email):
            raise v.invalid("email", "must be an email address")
        try:
            status, answer = await store.create_user(email, v.text(body, "name"), idempotency(request, body))
            return json_response(answer, status)
        except BillingError as exc:
            raise _billing_error(exc) from None

    async def get_user(request: web.Request) -> web.Response:
        user = await store.get_user(_path_id(request, "user_id", "USER_NOT_FOUND", "user"))
        if user is None:
            raise NotFound("no such user", code="USER_NOT_FOUND")
        return json_response(user)

    async def user_orders(request: web.Request) -> web.Response:
        orders = await store.user_orders(_path_id(request, "user_id", "USER_NOT_FOUND", "user"))
        if orders is None:
            raise NotFound("no such user", code="USER_NOT_FOUND")
        return json_response({"orders": orders})

    async def get_order(request: web.Request) -> web.Response:
        order = await store.get_order(_path_id(request, "order_id", "ORDER_NOT_FOUND", "order"))
        if order is None:
            raise NotFound("no such order", code="ORDER_NOT_FOUND")
        return json_response(order)

    async def pay(request: web.Request) -> web.Response:
        order_id = _path_id(request, "order_id", "ORDER_NOT_FOUND", "order")
        body = await read_json(request) if request.can_read_body else {}
        key = idempotency(request, body, required=True)
        try:
            # Begin or resume the attempt, charge, record (billing_daemon.payments).
            status, answer = await request.app[PAYMENTS].pay(order_id, key)
            return json_response(answer, status)
        except BillingError as exc:
            raise _billing_error(exc) from None

    async def refund(request: web.Request) -> web.Response:
        order_id = _path_id(request, "order_id", "ORDER_NOT_FOUND", "order")
        body = await read_json(request) if request.can_read_body else {}
        reason = v.text(v.obj(body), "reason", required=False, default="requested", max_len=200)
        caller = principal(request)
        actor = None if caller.anonymous else f"{caller.role}:{caller.subject}"  # the refund's audit trail
        try:
            status, answer = await request.app[PAYMENTS].refund(order_id, reason, actor)
            return json_response(answer, status)
        except BillingError as exc:
            raise _billing_error(exc) from None

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
        web.get("/api/users/{user_id}", get_user),
        web.get("/api/users/{user_id}/orders", user_orders),
        web.get("/api/orders/{order_id}", get_order),
        web.post("/api/orders/{order_id}/pay", pay),
        web.post("/api/orders/{order_id}/refund", refund),
        web.post("/api/checkin", check_in),
    ]
