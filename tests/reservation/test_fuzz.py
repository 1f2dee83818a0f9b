"""Property-based: whatever body a client sends, the reservation daemon answers with the error
envelope and a 4xx, or does the thing; never a 500, never a response outside its OpenAPI document.

Runs against the real daemon and PostgreSQL (ApiClient checks every reply against the spec).
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reservation.conftest import create_event, seats_of
from tests.support.auth import CALLER_KINDS, caller_headers

# JSON values of any shape, with the keys the API reads turning up often enough to get past the first check.
KEYS = st.sampled_from(["seat_id", "seat_ids", "user_id", "event_id", "name", "venue", "starts_at", "layout",
                        "sections", "rows", "seats_per_row", "price_minor", "currency", "description", "x"])
SCALARS = (st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
           | st.text(max_size=30) | st.sampled_from(["", "EUR", "eur", "2027-01-01T20:00:00Z",
                                                     "00000000-0000-0000-0000-000000000000"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                    max_leaves=12)
PATHS = st.sampled_from(["/api/reserve", "/api/reservations", "/api/events"])
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(path=PATHS, body=JSON)
async def test_any_json_body_gets_an_answer_in_the_contract(reservation, path, body):
    reply = await reservation.api.post(path, body)
    assert reply.status in (201, 400, 404, 409, 422), (path, body, reply.body)


@FUZZ
@given(path=PATHS, raw=st.binary(max_size=200))
async def test_any_bytes_get_an_answer_in_the_contract(reservation, path, raw):
    reply = await reservation.api.request("POST", path, data=raw, headers={"Content-Type": "application/json"})
    assert reply.status in (201, 400, 404, 409, 422), (path, raw, reply.body)
    try:
        json.loads(raw)
    except ValueError:
        assert reply.body["error"]["code"] == "MALFORMED_JSON"


@FUZZ
@given(user=st.text(max_size=300), seats=st.lists(st.integers(0, 12), max_size=12))
async def test_holds_with_odd_users_and_seat_lists_never_break_exclusivity(reservation, user, seats):
    # Real seat ids (some repeated, some out of range) mixed with odd user ids.
    if not hasattr(reservation, "fuzz_event"):
        reservation.fuzz_event = await create_event(reservation.api, sections=[
            {"name": "F", "rows": 1, "seats_per_row": 10, "price_minor": 100, "currency": "EUR"}])
        reservation.fuzz_seats = [s["id"] for s in await seats_of(reservation.api, reservation.fuzz_event["id"])]
    ids = [reservation.fuzz_seats[i] if i < 10 else "not-a-uuid" for i in seats]
    reply = await reservation.api.post("/api/reservations", {"event_id": reservation.fuzz_event["id"],
                                                             "seat_ids": ids, "user_id": user})
    assert reply.status in (201, 409, 422), reply.body
    held = [s for s in await seats_of(reservation.api, reservation.fuzz_event["id"]) if s["status"] != "available"]
    statuses = (await reservation.api.get(f"/api/events/{reservation.fuzz_event['id']}")).body["seats"]
    assert statuses["held"] == len(held) and statuses["available"] + statuses["held"] == 10


@FUZZ
@given(template=st.sampled_from(["GET /api/events/{}", "GET /api/events/{}/seats", "GET /api/reservations/{}",
                                 "DELETE /api/reservations/{}", "POST /api/reservations/{}/confirm"]),
       # "." and ".." are dot-segments: the client resolves them (RFC 3986 5.2.4), so they never reach the
       # server as an id; /api/reservations/./confirm is a request for /api/reservations/confirm.
       ident=st.text(min_size=1, max_size=60).filter(lambda s: s not in {".", ".."}),
       status=st.none() | st.text(max_size=12))
async def test_any_id_or_filter_in_a_url_gets_an_answer_in_the_contract(reservation, template, ident, status):
    from urllib.parse import quote, urlencode

    method, path = template.split(" ")
    url = path.format(quote(ident, safe=""))
    if status is not None and path.endswith("/seats"):
        url += "?" + urlencode({"status": status})
    reply = await reservation.api.request(method, url)
    assert reply.status in (200, 404, 409, 422), (url, reply.body)


@FUZZ
@given(path=st.sampled_from(["/api/reserve", "/api/reservations", "/api/events",
                             "/api/reservations/00000000-0000-0000-0000-000000000000/release"]),
       body=JSON, caller=st.sampled_from(CALLER_KINDS))
async def test_any_caller_with_any_body_gets_an_answer_in_the_contract(reservation, path, body, caller):
    anonymous = reservation.api.as_(None)  # credentials only as caller_headers says
    reply = await anonymous.post(path, body, headers=caller_headers(caller))
    assert reply.status in (201, 400, 401, 403, 404, 409, 422), (path, caller, body, reply.body)
    if caller in ("anonymous", "garbage", "basic", "expired"):
        assert reply.status == 401, "no valid token: refused before the body is even read"
