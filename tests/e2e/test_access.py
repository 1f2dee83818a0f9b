"""Who may do what: every declared operation of every daemon, called by every kind of caller.

The matrix is generated from each daemon's /openapi.json: an operation without a
declared rule fails the test, and each answer must be the one its declaration
implies (401 anonymous, 403 wrong role, 404 for a buyer who does not own the
resource). Then the double sale of issue 9, end to end.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from deploy.runtime.auth import OWNER_EXTENSION, allowed_roles, operation_table, undeclared_operations
from tests.billing.conftest import order_appears
from tests.helpers import wait_until
from tests.support.auth import token

CALLERS = ("anonymous", "another_buyer", "owner", "organizer", "door", "operator", "service")
ROLE_OF = {"anonymous": None, "another_buyer": "buyer", "owner": "buyer", "organizer": "organizer",
           "door": "door", "operator": "operator", "service": "service"}


@dataclass
class World:
    """One event (its organizer), one buyer who paid for a seat of it, and fresh seats to hold."""

    event_id: str
    organizer: str
    owner: str
    owner_email: str
    reservation_id: str
    ticket_code: str
    free_seats: list[str]
    counter: itertools.count = field(default_factory=itertools.count)

    def subject(self, caller: str) -> str | None:
        return {"owner": self.owner, "organizer": self.organizer, "service": "matrix-service",
                "door": "door-1", "operator": "operator-1", "another_buyer": "stranger-" + uuid.uuid4().hex[:6]}.get(caller)

    def token(self, caller: str) -> str | None:
        role = ROLE_OF[caller]
        return None if role is None else token(role, subject=self.subject(caller))


def parties(path: str) -> set[str]:
    """Which callers a resource at ``path`` belongs to: a user's things are the user's; an order or
    reservation is its buyer's and its event organizer's."""
    if "{user_id}" in path or path == "/api/notifications":
        return {"owner"}
    if path == "/api/events/{event_id}":
        return {"organizer"}
    return {"owner", "organizer"}


def request_for(world: World, method: str, path: str, caller: str) -> tuple[str, Any, dict[str, str]]:
    """A well-formed request for the operation, so that only the caller decides the answer."""
    n = next(world.counter)
    url = (path.replace("{event_id}", world.event_id).replace("{reservation_id}", world.reservation_id)
           .replace("{order_id}", world.reservation_id).replace("{user_id}", world.owner)
           .replace("{message_id}", "no-such-dead-letter").replace("{run_id}", "20260101T000000Z-pg-failover")
           .replace("{name}", "not-a-drill"))
    acting_for = {"user_id": world.owner} if caller == "service" else {}
    bodies = {
        ("POST", "/api/events"): {"name": f"M{n}", "venue": "V", "starts_at": "2027-01-01T20:00:00Z",
                                  "layout": {"sections": [{"name": "A", "rows": 1, "seats_per_row": 1,
                                                           "price_minor": 100, "currency": "EUR"}]}},
        ("POST", "/api/reserve"): {"seat_id": world.free_seats[n % len(world.free_seats)], **acting_for},
        ("POST", "/api/reservations"): {"event_id": world.event_id,
                                        "seat_ids": [world.free_seats[n % len(world.free_seats)]], **acting_for},
        ("POST", "/api/reservations/{reservation_id}/release"): {"refund_id": "not-a-refund"},
        ("PATCH", "/api/events/{event_id}"): {"description": f"changed by the matrix ({n})"},
        ("POST", "/api/users"): {"email": f"m{n}-{uuid.uuid4().hex[:6]}@example.com", "name": "M",
                                 "password": "matrix-password"},
        ("POST", "/api/sessions"): {"email": world.owner_email, "password": "owner-password"},
        ("POST", "/api/orders/{order_id}/refund"): {"reason": "access matrix"},
        ("POST", "/api/checkin"): {"code": world.ticket_code},
    }
    if path == "/api/notifications":
        url += f"?user_id={world.owner}"
    headers = {"Idempotency-Key": f"matrix-{n}"}
    return url, bodies.get((method, path)), headers


def expected(operation: dict[str, Any], path: str, caller: str) -> str:
    """'allowed', or the status the declaration implies for this caller."""
    roles = allowed_roles(operation)
    if roles is None:
        return "allowed"
    if caller == "anonymous":
        return "401"
    if ROLE_OF[caller] not in roles:
        return "403"
    if operation.get(OWNER_EXTENSION) and caller != "service" and caller not in parties(path):
        return "404"
    return "allowed"


async def make_world(full) -> World:
    reservation, billing = full["reservation"].api, full["billing"].api
    organizer = str(uuid.uuid4())
    event = await reservation.as_(token("organizer", subject=organizer)).post("/api/events", {
        "name": "Matrix", "venue": "Hall", "starts_at": "2027-01-01T20:00:00Z",
        "layout": {"sections": [{"name": "A", "rows": 2, "seats_per_row": 20, "price_minor": 2500,
                                 "currency": "EUR"}]}})
    assert event.status == 201, event.body
    assert (await reservation.get(f"/api/events/{event.body['id']}")).status == 200
    email = f"owner-{uuid.uuid4().hex[:6]}@example.com"
    user = await billing.as_(None).post("/api/users", {"email": email, "name": "Owner", "password": "owner-password"})
    assert user.status == 201, user.body
    login = await billing.as_(None).post("/api/sessions", {"email": email, "password": "owner-password"})
    assert login.status == 201 and login.body["role"] == "buyer", login.body
    owner = reservation.as_(login.body["token"])
    seats = [s["id"] for s in (await reservation.get(f"/api/events/{event.body['id']}/seats")).body["seats"]]
    held = await owner.post("/api/reserve", {"seat_id": seats[0]})
    assert held.status == 201 and held.body["user_id"] == user.body["id"], held.body
    await wait_until(lambda: order_appears(full["billing"], held.body["id"]), 10, "the order reaching billing")
    paid = await billing.as_(login.body["token"]).post(f"/api/orders/{held.body['id']}/pay",
                                                       headers={"Idempotency-Key": "owner-pays"})
    assert paid.status == 200, paid.body
    return World(event.body["id"], organizer, user.body["id"], email, held.body["id"],
                 paid.body["tickets"][0]["code"], seats[1:])


async def raw(client, bearer: str | None, method: str, url: str, headers: dict[str, str]):
    from tests.support.api import Reply

    if bearer:
        headers = {**headers, "Authorization": f"Bearer {bearer}"}
    async with client.session.request(method, client.base_url + url, headers=headers) as response:
        return Reply(response.status, None, dict(response.headers))  # a stream's body never ends: not read


@pytest.mark.slow
async def test_every_operation_answers_every_kind_of_caller_as_declared(full):
    await full.start_all()
    world = await make_world(full)
    clients = {name: full[name].api for name in ("reservation", "billing", "portal")}
    seen, wrong = 0, []
    for name, client in clients.items():
        spec = (await client.get("/openapi.json")).body
        assert not undeclared_operations(spec), f"{name}: operations without a security rule"
        for (method, path), operation in sorted(operation_table(spec).items()):
            if allowed_roles(operation) is None and not _json(operation):
                continue  # a public page, asset or event stream: no rule to enforce, and no JSON to check
            # Callers who must be refused go first: a refusal must change nothing for those after.
            for caller in sorted(CALLERS, key=lambda c: expected(operation, path, c) == "allowed"):
                url, body, headers = request_for(world, method, path, caller)
                if "application/json" in operation["responses"].get("200", {}).get("content", {"application/json": 1}):
                    reply = await client.as_(world.token(caller)).request(
                        method, url, json_body=body, headers=headers)
                else:  # a page or an event stream: only the status and the challenge are checked
                    reply = await raw(client, world.token(caller), method, url, headers)
                want = expected(operation, path, caller)
                seen += 1
                if want == "allowed":
                    ok = reply.status not in (401, 403) and not (
                        operation.get(OWNER_EXTENSION) and reply.status == 404)
                else:
                    ok = str(reply.status) == want
                    if want == "401":
                        ok = ok and reply.headers.get("WWW-Authenticate", "").startswith("Bearer")
                if not ok:
                    wrong.append(f"{name} {method} {path} as {caller}: want {want}, got {reply.status} {reply.body}")
    assert not wrong, "\n".join(wrong)
    assert seen >= 6 * 20


@pytest.mark.slow
async def test_the_double_sale_of_issue_9_is_refused(full):
    """A paid, finalized seat; then every caller but a real refund tries to put it back on sale."""
    await full.start_all()
    world = await make_world(full)
    reservation = full["reservation"].api
    await wait_until(lambda: _status_is(reservation, world.reservation_id, "confirmed"), 10, "the sale finalized")
    release = f"/api/reservations/{world.reservation_id}/release"
    assert (await reservation.as_(None).post(release)).status == 401
    for caller in ("owner", "another_buyer", "organizer", "door"):
        assert (await reservation.as_(world.token(caller)).post(release)).status == 403, caller
    refused = await reservation.post(release)  # even a service: no refund, no release
    assert refused.status == 409 and refused.body["error"]["code"] == "REFUND_REQUIRED"
    refused = await reservation.post(release, {"refund_id": str(uuid.uuid4())})
    assert refused.status == 409 and refused.body["error"]["code"] == "REFUND_NOT_FOUND"
    event = world.event_id
    sold = (await reservation.get(f"/api/events/{event}/seats?status=sold")).body["seats"]
    second = await reservation.as_(token("buyer")).post("/api/reserve", {"seat_id": sold[0]["id"]})
    assert second.status == 409 and second.body["error"]["code"] == "SEAT_UNAVAILABLE"
    # Confirm without payment: a buyer holding a seat cannot turn it into a sale.
    buyer = reservation.as_(token("buyer"))
    hold = await buyer.post("/api/reserve", {"seat_id": world.free_seats[0]})
    assert hold.status == 201
    confirm = f"/api/reservations/{hold.body['id']}/confirm"
    assert (await reservation.as_(None).post(confirm)).status == 401
    assert (await buyer.post(confirm)).status == 403
    assert (await buyer.get(f"/api/reservations/{hold.body['id']}")).body["status"] == "held"


def _json(operation: dict[str, Any]) -> bool:
    content = operation["responses"].get("200", {}).get("content", {"application/json": {}})
    return "application/json" in content


async def _status_is(api, reservation_id: str, status: str) -> bool:
    return (await api.get(f"/api/reservations/{reservation_id}")).body["status"] == status


@pytest.mark.slow
async def test_changes_of_money_and_seats_are_audited_with_who_and_why(full):
    await full.start_all()
    world = await make_world(full)
    organizer = full["billing"].api.as_(world.token("organizer"))
    # The organizer sees its event's order, but not the ticket codes: those admit at the door.
    seen_by_organizer = (await organizer.get(f"/api/orders/{world.reservation_id}")).body
    assert seen_by_organizer["tickets"] and all("code" not in t for t in seen_by_organizer["tickets"])
    seen_by_owner = (await full["billing"].api.as_(world.token("owner")).get(
        f"/api/orders/{world.reservation_id}")).body
    assert [t["code"] for t in seen_by_owner["tickets"]] == [world.ticket_code]
    refunded = await organizer.post(f"/api/orders/{world.reservation_id}/refund", {"reason": "event moved"})
    assert refunded.status == 200, refunded.body
    assert all("code" not in t for t in refunded.body["tickets"]), "not even in the refund's answer"
    trail = await full.maria("SELECT actor, actor_role, action, reason FROM audit_log WHERE target = %s ORDER BY at",
                             (world.reservation_id,))
    assert [(r["actor"], r["actor_role"], r["action"]) for r in trail] == [
        (world.owner, "buyer", "pay"), (world.organizer, "organizer", "refund")]
    assert trail[-1]["reason"] == "event moved"

    async def seats_released() -> bool:
        rows = await full.reservation_sql("SELECT action, actor_role FROM audit_log WHERE target = $1 ORDER BY id",
                                          uuid.UUID(world.reservation_id))
        return [(r["action"], r["actor_role"]) for r in rows][-1:] == [("release", "service")]

    # The portal confirms the sale, then gives the seat back as part of the refund: both by the service.
    await wait_until(seats_released, 15, "the portal releasing the refunded seat, audited")
