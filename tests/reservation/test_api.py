"""The HTTP surface: conventions, bad input, readiness, the OpenAPI document, big layouts."""

import time

import aiohttp

from reservation_daemon.openapi import SPEC
from tests.reservation.conftest import create_event, seats_of
from tests.support.api import ApiClient
from tests.support.daemons import DaemonProcess
from tests.support.stack import free_port


async def test_health_ready_and_instance(reservation):
    assert (await reservation.api.get("/health")).body == {"status": "ok"}
    ready = await reservation.api.get("/ready")
    assert ready.status == 200 and ready.body["checks"]["database"] == "ok"
    info = (await reservation.api.get("/api/instance")).body
    assert info["instance"] == "reservation-1" and info["pid"] == reservation.process.proc.pid


async def test_every_route_of_the_daemon_is_in_the_openapi_document(reservation):
    from reservation_daemon.api import routes

    documented = {(path, method.upper()) for path, ops in SPEC["paths"].items() for method in ops}
    served = {(r.path, r.method) for r in routes(None, "x")}
    assert served == documented
    assert (await reservation.api.get("/openapi.json")).body["openapi"] == "3.1.0"


async def test_bad_input_gets_stable_codes_never_a_500(reservation):
    api = reservation.api
    cases = [
        (await api.request("POST", "/api/reserve", data=b"{not json"), 400, "MALFORMED_JSON"),
        (await api.request("POST", "/api/reserve", data=b"\xff\xfe"), 400, "MALFORMED_JSON"),
        (await api.post("/api/reserve", [1, 2]), 422, "VALIDATION_FAILED"),
        (await api.post("/api/reserve", {"seat_id": "nope", "user_id": "u"}), 422, "VALIDATION_FAILED"),
        (await api.post("/api/reserve", {"seat_id": "6f1b2b8e-8f55-4b43-9c39-3c1ba1d3a6a1"}), 422,
         "VALIDATION_FAILED"),
        (await api.post("/api/reservations", {"event_id": "6f1b2b8e-8f55-4b43-9c39-3c1ba1d3a6a1",
                                              "seat_ids": [], "user_id": "u"}), 422, "VALIDATION_FAILED"),
        (await api.post("/api/events", {"name": "x", "venue": "y", "starts_at": "tomorrow",
                                        "layout": {"sections": [{"name": "A", "rows": 1, "seats_per_row": 1,
                                                                 "price_minor": 1, "currency": "EUR"}]}}),
         422, "VALIDATION_FAILED"),
        (await api.post("/api/events", {"name": "x", "venue": "y", "starts_at": "2027-01-01T00:00:00Z",
                                        "layout": {"sections": [{"name": "A", "rows": 1, "seats_per_row": 1,
                                                                 "price_minor": 1, "currency": "euro"}]}}),
         422, "VALIDATION_FAILED"),
        (await api.request("POST", "/api/reserve", data=b"x" * (2 << 20)), 413, "PAYLOAD_TOO_LARGE"),
    ]
    for reply, status, code in cases:
        assert (reply.status, reply.body["error"]["code"]) == (status, code), reply.body
    assert (await api.get("/api/events/x/seats?status=lost")).status == 404
    seats = await api.get(f"/api/events/{(await create_event(api))['id']}/seats?status=lost")
    assert seats.status == 422
    assert (await reservation.api.get("/ready")).status == 200, "the daemon carried on"


async def test_a_layout_of_100000_seats_is_created_in_one_request(reservation):
    sections = [{"name": f"S{i}", "rows": 100, "seats_per_row": 100, "price_minor": 1000 + i, "currency": "EUR"}
                for i in range(10)]
    started = time.monotonic()
    event = await create_event(reservation.api, sections)
    took = time.monotonic() - started
    print(f"100,000-seat layout created in {took:.2f}s")
    assert event["seats"] == {"total": 100_000, "available": 100_000, "held": 0, "sold": 0}
    first = (await reservation.api.get(f"/api/events/{event['id']}/seats")).body
    assert len(first["seats"]) == 1000 and first["seats"][0]["label"] == "S0-1-1", "one page by default"
    assert first["next"] == first["seats"][-1]["id"]
    started = time.monotonic()
    seats = await seats_of(reservation.api, event["id"])
    print(f"100,000 seats read in 20 pages in {time.monotonic() - started:.2f}s")
    assert len(seats) == len({s["id"] for s in seats}) == 100_000
    assert [(s["section"], s["row"], s["number"]) for s in seats] == sorted(
        (f"S{i}", r, n) for i in range(10) for r in range(1, 101) for n in range(1, 101))
    too_big = await reservation.api.post("/api/events", {
        "name": "x", "venue": "y", "starts_at": "2027-01-01T00:00:00Z",
        "layout": {"sections": [{"name": "A", "rows": 1000, "seats_per_row": 101, "price_minor": 1,
                                 "currency": "EUR"}]}})
    assert too_big.status == 422 and too_big.body["error"]["code"] == "LAYOUT_TOO_LARGE"


async def test_events_are_listed_with_their_counts(reservation):
    a = await create_event(reservation.api, name="A")
    b = await create_event(reservation.api, name="B")
    listed = (await reservation.api.get("/api/events")).body
    assert {e["id"] for e in listed["events"]} == {a["id"], b["id"]} and listed["next"] is None
    assert all(e["seats"] == {"total": 10, "available": 10, "held": 0, "sold": 0} for e in listed["events"])


async def test_without_a_database_the_daemon_runs_and_says_so(tmp_path):
    port = free_port()
    dead_db = f"postgresql://ticketflow:ticketflow@127.0.0.1:{free_port()}/nothing"
    url = f"http://127.0.0.1:{port}"
    process = DaemonProcess("reservation_daemon", {"TICKETFLOW_PG_DSN": dead_db,
                                                   "TICKETFLOW_RESERVATION_PORT": str(port)},
                            tmp_path / "r.log")
    process.start()
    try:
        async with aiohttp.ClientSession() as session:
            api = ApiClient(url, SPEC, session)
            from tests.helpers import wait_until

            async def health_ok() -> bool:
                try:
                    return (await api.get("/health")).status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(health_ok, 20, "the daemon answering /health without its database")
            ready = await api.get("/ready")
            assert ready.status == 503 and ready.body["checks"]["database"] == "unavailable"
            reply = await api.get("/api/events")
            assert reply.status == 503 and reply.headers["Retry-After"] == "1"
            assert reply.body["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
        assert process.proc.poll() is None, "the daemon exited because its database is away"
        assert process.terminate() == 0, "SIGTERM should stop it cleanly"
    finally:
        process.kill()


async def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "reservation_daemon"], capture_output=True, text=True,
                            env={"TICKETFLOW_HOLD_TTL_SECONDS": "-5", "PATH": "/usr/bin"}, timeout=30)
    assert result.returncode == 2 and "TICKETFLOW_HOLD_TTL_SECONDS" in result.stderr


async def test_a_client_over_the_rate_limit_gets_429_and_probes_are_never_limited(cluster):
    api = (await cluster.start(TICKETFLOW_RATE_LIMIT_PER_SECOND="5")).api
    replies = [await api.get("/api/events") for _ in range(30)]
    limited = [r for r in replies if r.status == 429]
    assert limited, "30 back-to-back requests at a limit of 5/s were never limited"
    assert limited[0].body["error"]["code"] == "RATE_LIMITED" and limited[0].headers["Retry-After"] == "1"
    probes = [(await api.get("/ready")).status for _ in range(30)]
    assert probes == [200] * 30


def test_the_token_bucket_refills_at_its_rate():
    from deploy.runtime.http import RateLimiter

    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(5)] == [True] * 4 + [False]  # burst of 2 * rate
    assert limiter.allow("b")  # other clients have their own bucket
    now[0] += 0.5
    assert limiter.allow("a") and not limiter.allow("a")


async def test_creating_an_event_twice_with_one_idempotency_key_creates_one_event(reservation):
    import asyncio

    body = {"name": "Once", "venue": "Hall", "starts_at": "2027-01-01T20:00:00Z",
            "layout": {"sections": [{"name": "A", "rows": 1, "seats_per_row": 3, "price_minor": 1,
                                     "currency": "EUR"}]}}
    replies = await asyncio.gather(*(reservation.api.post("/api/events", body, headers={"Idempotency-Key": "ev-1"})
                                     for _ in range(10)))
    created = [r for r in replies if r.status == 201]
    assert created and len({r.body["id"] for r in created}) == 1
    assert all(r.status == 409 and r.body["error"]["code"] == "REQUEST_IN_PROGRESS" for r in replies if r.status != 201)
    assert len((await reservation.api.get("/api/events")).body["events"]) == 1
    changed = await reservation.api.post("/api/events", {**body, "name": "Other"}, headers={"Idempotency-Key": "ev-1"})
    assert changed.status == 422 and changed.body["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


async def test_a_multi_host_dsn_finds_the_writable_primary(cluster, receiver_db):
    from tests.helpers import wait_until
    from tests.reservation.conftest import seats_of

    # The first host is gone (a failed primary); the daemon must use the next writable one.
    live = cluster.dsn.split("@", 1)[1]  # 127.0.0.1:port/db
    hosts_dsn = (f"postgresql://ticketflow:ticketflow@127.0.0.1:{free_port()},{live}"
                 "?target_session_attrs=read-write")
    api = (await cluster.start(TICKETFLOW_PG_DSN=hosts_dsn)).api
    event = await create_event(api)
    seat = (await seats_of(api, event["id"]))[0]["id"]
    assert (await api.post("/api/reserve", {"seat_id": seat, "user_id": "u"})).status == 201
    await cluster.start_receiver(receiver_db)

    async def relayed() -> bool:
        return (await cluster.sql("SELECT acked_seq FROM stream_heads"))[0]["acked_seq"] == 1

    await wait_until(relayed, 15, "the relay (on the same multi-host DSN) delivering")


async def test_an_organizer_changes_its_own_event_and_no_one_else_s(reservation):
    from tests.support.auth import token

    mine, theirs = (reservation.api.as_(token("organizer")) for _ in range(2))
    created = await mine.post("/api/events", {"name": "Gig", "venue": "Hall", "starts_at": "2027-01-01T20:00:00Z",
                                              "layout": {"sections": [{"name": "A", "rows": 1, "seats_per_row": 2,
                                                                       "price_minor": 100, "currency": "EUR"}]}})
    assert created.status == 201
    path = f"/api/events/{created.body['id']}"
    changed = await mine.request("PATCH", path, json_body={"venue": "Bigger Hall", "starts_at": "2027-02-01T20:00:00Z"})
    assert changed.status == 200 and changed.body["venue"] == "Bigger Hall"
    assert changed.body["starts_at"].startswith("2027-02-01T20:00:00") and changed.body["seats"]["total"] == 2
    assert (await theirs.request("PATCH", path, json_body={"venue": "Mine now"})).status == 404
    assert (await mine.request("PATCH", path, json_body={})).status == 422
    assert (await reservation.api.get(path)).body["venue"] == "Bigger Hall"


async def test_a_time_with_no_utc_equivalent_is_refused_not_a_500(reservation):
    for starts_at in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        reply = await reservation.api.post("/api/events", {
            "name": "Edge", "venue": "Hall", "starts_at": starts_at,
            "layout": {"sections": [{"name": "A", "rows": 1, "seats_per_row": 1, "price_minor": 1, "currency": "EUR"}]}})
        assert reply.status == 422 and reply.body["error"]["details"]["field"] == "starts_at", reply.body
