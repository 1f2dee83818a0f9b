"""`ticketflow bench --mode holds-http` measures what it says (behaviour only, never timings):
its raw HTTP client speaks HTTP/1.1 keep-alive to an aiohttp server, its SQL side holds seats
through the reservation store's own `reserve` on a dedicated connection, and its closed loop
hands each seat to exactly one worker and reports the keys the README's table reads."""

import asyncio
import json
import uuid

import asyncpg
import pytest
from aiohttp import web

from deploy.ops import bench_http, bench_sql
from deploy.runtime.ids import uuid7
from reservation_daemon.store import ReservationStore
from tests.support.stack import fresh_pg_database, free_port


async def test_raw_client_keeps_one_connection_and_reads_each_answer_by_its_length():
    peers: list[tuple] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        body = await request.json()
        return web.json_response({"got": body, "auth": request.headers.get("Authorization")}, status=201)

    async def bye(request: web.Request) -> web.Response:
        response = web.json_response({"bye": True})
        response.force_close()
        return response

    app = web.Application()
    app.add_routes([web.post("/echo", echo), web.post("/bye", bye)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = bench_http.RawHttp("127.0.0.1", port, {"Authorization": "Bearer t"})
    try:
        for i in range(5):
            status, raw = await client.request("POST", "/echo", json.dumps({"i": i}).encode())
            assert status == 201 and json.loads(raw) == {"got": {"i": i}, "auth": "Bearer t"}
        assert len(set(peers)) == 1  # keep-alive: one connection for every request
        status, raw = await client.request("POST", "/bye", b"{}")
        assert status == 200 and json.loads(raw) == {"bye": True}
        status, _ = await client.request("POST", "/echo", b"{}")  # reconnects after Connection: close
        assert status == 201 and len(set(peers)) == 2
    finally:
        await client.close()
        await runner.cleanup()


async def test_closed_loop_gives_each_seat_to_one_worker_and_counts_holds_and_failures():
    taken: list[str] = []

    def worker(refuse: set[str]):
        async def hold(seat: str) -> bool:
            taken.append(seat)
            await asyncio.sleep(0)
            return seat not in refuse

        return hold

    seats = [f"s{i}" for i in range(100)]
    result = await bench_http.closed_loop([worker({"s3", "s50"}) for _ in range(4)], seats, duration=60)
    assert sorted(taken) == sorted(seats)  # every seat once: nobody holds a seat another worker took
    assert result["holds"] == 98 and result["failures"] == 2
    assert set(result) >= {"holds", "failures", "seconds", "holds_per_s", "latency_ms"}
    assert result["latency_ms"]["n"] == 98


@pytest.mark.stack
async def test_the_sql_side_holds_through_the_stores_own_reserve_on_one_connection():
    async with fresh_pg_database("tf_bench_http") as dsn:
        await bench_sql.prepare(dsn, seats=10)  # the daemon's migrator and create_event
        conn = await asyncpg.connect(dsn)
        try:
            store = ReservationStore(bench_http._OneConnection(conn))
            seat = uuid.UUID(int=7)  # prepare numbers seats 1..n
            outcome = await store.reserve(uuid7(), None, [seat], "bench-sql", 600, None)
            assert outcome.name == "held"
            assert await conn.fetchval("SELECT status FROM seats WHERE id = $1", seat) == "held"
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 1
            again = await store.reserve(uuid7(), None, [seat], "bench-sql", 600, None)
            assert again.name == "seat_unavailable"
        finally:
            await conn.close()


def test_the_report_renders_both_paths_and_the_ratio():
    run = {"holds": 10, "failures": 0, "seconds": 1.0, "holds_per_s": 10.0,
           "latency_ms": {"n": 10, "p50": 1.0, "p95": 2.0, "p99": 3.0},
           "generator_cpu_cores": 0.1, "daemon_cpu_cores": 0.5}
    report = {"mode": "holds-http", "at": "now", "duration_s": 1, "concurrency": 2, "client": "raw",
              "runs": [{"path": "http", **run}, {"path": "sql", **run, "holds_per_s": 20.0}],
              "ratio_http_over_sql": 0.5, "baseline": None}
    text = bench_http.render(report)
    assert "http / sql (holds/s): 0.5" in text
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("http ", "sql "))]
    assert [(r[0], r[1]) for r in rows if r[1] != "/"] == [("http", "10.0"), ("sql", "20.0")]


def test_cpu_seconds_reads_a_process_from_proc():
    import os

    assert bench_http.cpu_seconds(os.getpid()) >= 0
    assert bench_http.cpu_seconds() >= 0
