"""Hostile HTTP input against the real daemon: slow clients, idle connections, deep JSON, bad bytes, floods.

Each of these answered 500, or held a connection for an hour, before the bounds in deploy/runtime/http.py.
"""

import asyncio
import json
import time

from reservation_daemon.openapi import SPEC
from tests.support.auth import token
from tests.openapi_check import check_response
from tests.reservation.conftest import create_event, seats_of


async def exchange(port: int, data: bytes, within: float) -> tuple[bytes, float]:
    """Send ``data``, then read until the server closes; (everything read, seconds until the close).

    Fails if the server has not closed the connection ``within`` seconds.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), started + within - time.monotonic())
            except (asyncio.TimeoutError, ValueError):
                raise AssertionError(f"within {within}s: the server never closed the connection "
                                     f"(received {received[:200]!r})") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return received, time.monotonic() - started
            received += chunk
    finally:
        writer.transport.abort()


def parse(raw: bytes, method: str, path: str) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    parsed = json.loads(body)
    check_response(SPEC, method, path, status, parsed)
    return status, parsed


def request(method: str, path: str, body: bytes = b"", *headers: bytes, length: int | None = None) -> bytes:
    # As a service: a caller allowed to reach the body (anyone else is refused before it is read).
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: test", f"Authorization: Bearer {token()}".encode(),
             *headers,
             b"Content-Type: application/json", b"Content-Length: %d" % (len(body) if length is None else length)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_a_stalled_body_is_answered_408_and_the_connection_closed(cluster):
    instance = await cluster.start(TICKETFLOW_HTTP_REQUEST_TIMEOUT_SECONDS="1", TICKETFLOW_HTTP_KEEPALIVE_SECONDS="60")
    raw, took = await exchange(instance.port, request("POST", "/api/reserve", b'{"seat_id": ', length=200), 8)
    status, body = parse(raw, "POST", "/api/reserve")
    assert (status, body["error"]["code"]) == (408, "REQUEST_TIMEOUT")
    assert 0.9 < took < 5, f"closed after {took:.1f}s; the bound is 1 s (+ at most 1 s draining)"


async def test_unfinished_headers_are_closed_within_the_request_timeout(cluster):
    instance = await cluster.start(TICKETFLOW_HTTP_REQUEST_TIMEOUT_SECONDS="1", TICKETFLOW_HTTP_KEEPALIVE_SECONDS="60")
    _, took = await exchange(instance.port, b"GET /api/events HTTP/1.1\r\nHost: test\r\nX-Slow: ", 8)
    assert took < 5, f"a half-sent head held the connection {took:.1f}s"
    # The same for the next request on a kept-alive connection, sent after the first was answered.
    reader, writer = await asyncio.open_connection("127.0.0.1", instance.port)
    try:
        writer.write(request("GET", "/health"))
        assert (await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 5)).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: test\r\n")
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 8) == b"", "the half-sent second head was answered"
        assert time.monotonic() - started < 5
    finally:
        writer.transport.abort()


async def test_idle_keep_alive_connections_are_closed(cluster):
    instance = await cluster.start(TICKETFLOW_HTTP_KEEPALIVE_SECONDS="1", TICKETFLOW_HTTP_REQUEST_TIMEOUT_SECONDS="60")
    raw, took = await exchange(instance.port, request("GET", "/health"), 8)
    assert raw.startswith(b"HTTP/1.1 200") and b'{"status":"ok"}' in raw
    assert 0.9 < took < 5, f"an idle keep-alive connection was closed after {took:.1f}s; the bound is 1 s"
    _, took = await exchange(instance.port, b"", 8)  # connects and never says a word
    assert took < 5


async def test_deeply_nested_json_is_400_not_500(reservation):
    api = reservation.api
    for depth in (33, 100_000):
        reply = await api.request("POST", "/api/reserve", data=b"[" * depth + b"]" * depth)
        assert (reply.status, reply.body["error"]["code"]) == (400, "MALFORMED_JSON"), (depth, reply.body)
    nested = {"seat_id": "6f1b2b8e-8f55-4b43-9c39-3c1ba1d3a6a1", "user_id": "u", "x": [[[[[[[[[[[]]]]]]]]]]]}
    many = {**nested, "y": [[1]] * 50_000}  # many brackets, shallow: accepted by the depth check
    for body in (nested, many):
        assert (await api.post("/api/reserve", body)).body["error"]["code"] == "SEAT_NOT_FOUND"
    assert (await api.get("/ready")).status == 200


async def test_a_non_utf8_header_is_400_in_the_envelope(reservation):
    event = await create_event(reservation.api)
    seat = (await seats_of(reservation.api, event["id"]))[0]["id"]
    body = json.dumps({"seat_id": seat, "user_id": "u"}).encode()
    raw, _ = await exchange(reservation.port, request("POST", "/api/reserve", body, b"Idempotency-Key: k\xff\xfe",
                                                      b"Connection: close"), 10)
    status, reply = parse(raw, "POST", "/api/reserve")
    assert (status, reply["error"]["code"]) == (400, "MALFORMED_HEADER"), reply
    assert reply["error"]["details"] == {"header": "Idempotency-Key"}
    # A byte aiohttp's parser refuses (in a header name) is answered in the envelope too.
    raw, _ = await exchange(reservation.port, request("GET", "/api/events", b"", b"X-\xff: 1"), 10)
    status, reply = parse(raw, "GET", "/api/events")
    assert (status, reply["error"]["code"]) == (400, "MALFORMED_REQUEST")
    assert [s["status"] for s in await seats_of(reservation.api, event["id"]) if s["id"] == seat] == ["available"]
    assert (await reservation.api.get("/ready")).status == 200


async def test_holds_over_the_per_address_limit_get_429_with_retry_after(cluster):
    instance = await cluster.start(TICKETFLOW_RATE_LIMITS_ENABLED="on",
                                   TICKETFLOW_RATE_LIMIT_HOLDS_PER_ADDRESS="1/min burst 3")
    event = await create_event(instance.api)
    seats = [s["id"] for s in await seats_of(instance.api, event["id"])]
    api = instance.api.as_(token("buyer", subject="u"))  # services are never limited; buyers are
    replies = [await api.post("/api/reserve", {"seat_id": seat, "user_id": "u"}) for seat in seats[:5]]
    assert [r.status for r in replies] == [201, 201, 201, 429, 429]
    limited = replies[3]
    assert limited.body["error"]["code"] == "RATE_LIMITED"
    assert limited.body["error"]["details"] == {"limit": "holds", "per": "address"}
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    many = await api.post("/api/reservations", {"event_id": event["id"], "seat_ids": seats[5:7], "user_id": "u"})
    assert many.status == 429, "both hold routes share the budget"
    assert (await api.get(f"/api/events/{event['id']}")).status == 200, "reads are not hold-limited"
    assert len(await seats_of(api, event["id"], "held")) == 3


async def test_holds_are_limited_per_token_subject_and_services_are_exempt(cluster):
    instance = await cluster.start(TICKETFLOW_RATE_LIMITS_ENABLED="on",
                                   TICKETFLOW_RATE_LIMIT_HOLDS_PER_SUBJECT="1/min burst 2",
                                   TICKETFLOW_RATE_LIMIT_HOLDS_PER_ADDRESS="0")
    event = await create_event(instance.api)
    seats = [s["id"] for s in await seats_of(instance.api, event["id"])]
    ann, bob = (instance.api.as_(token("buyer")) for _ in range(2))
    replies = [await ann.post("/api/reserve", {"seat_id": seat}) for seat in seats[:3]]
    assert [r.status for r in replies] == [201, 201, 429]
    assert replies[2].body["error"]["details"] == {"limit": "holds", "per": "subject"}
    assert (await bob.post("/api/reserve", {"seat_id": seats[3]})).status == 201, "another buyer has its own budget"
    service = [await instance.api.post("/api/reserve", {"seat_id": s, "user_id": "svc"}) for s in seats[4:8]]
    assert {r.status for r in service} == {201}, "service callers are never limited"
