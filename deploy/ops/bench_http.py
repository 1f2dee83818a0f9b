"""``ticketflow bench --mode holds-http``: HTTP holds beside the daemon's own statement, same concurrency.

Two closed loops of ``concurrency`` workers each, one after the other, in the same run:

- ``http``: ``POST /api/reserve`` against the running reservation daemon, as the operator
  service (each hold for its own simulated buyer), one keep-alive connection per worker;
- ``sql``: the daemon's hold driven directly, without HTTP: the reservation store's own
  ``reserve`` (``reservation_daemon/store/holds.py``: ``tf_reserve`` exactly as the daemon
  calls it, asyncpg's per-connection prepared statement included) on one dedicated asyncpg
  connection per worker, on the daemon's own database.

Each loop holds distinct seats of a fresh bench event (one event per loop, created through
the API like ``ticketflow bench`` does), so no request meets a seat already held. The report
gives holds/s and p50/p99 of each, the ratio http/sql, and the CPU the load generator and
the reservation daemon used in each loop: a generator near a full core would be measuring
itself, not the daemon.

The HTTP client is a raw asyncio HTTP/1.1 client (:class:`RawHttp`): one pre-built request
per hold on a keep-alive connection, the answer read by ``Content-Length``. It costs a few
microseconds of CPU per request where a general client (aiohttp's) costs well over a
hundred, which on a 2-core machine would otherwise be taken from the daemon it measures.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import asyncpg

from deploy.ops.bench import _baseline, _bench_seats, _ready, _session, percentiles
from deploy.ops.daemons import BY_NAME, DAEMONS
from deploy.ops.reports import publish
from deploy.ops.stack import process
from deploy.ops.stack.settings import stack_settings
from deploy.ops.supervisor import daemon_dirs, daemon_env, operator_token


class RawHttp:
    """A minimal HTTP/1.1 client on one keep-alive connection: enough for JSON requests to our daemons.

    No redirects, no chunked bodies (the daemons answer with ``Content-Length``), no TLS.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(f"{method} {path} HTTP/1.1\r\n{self._head}Content-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        answer = await self._reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, answer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None


class _OneConnection:
    """What the store needs of a ``Database`` (``run``), on one dedicated connection: no pool, no retries."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[Any]], *, idempotent: bool,
                  attempts: int = 3) -> Any:
        return await fn(self.conn)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pid(name: str) -> int | None:
    """The pid ``ticketflow run all`` recorded for a daemon, if that process is alive."""
    pids, _ = daemon_dirs(stack_settings())
    return process.running_pid(pids / f"{name}.pid")


async def closed_loop(workers: list[Callable[[str], Awaitable[bool]]], seats: list[str],
                      duration: float, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Each worker holds the next free seat, again and again, until ``duration`` is over or seats run out.

    A worker's call answers True for a hold made; latencies of holds made are kept.
    """
    latencies: list[float] = []
    failures = 0
    queue = iter(seats)
    started = clock()
    until = started + duration

    async def loop(hold: Callable[[str], Awaitable[bool]]) -> None:
        nonlocal failures
        for seat in queue:
            if clock() >= until:
                return
            t = clock()
            if await hold(seat):
                latencies.append((clock() - t) * 1000)
            else:
                failures += 1

    await asyncio.gather(*(loop(w) for w in workers))
    elapsed = clock() - started
    return {"holds": len(latencies), "failures": failures, "seconds": round(elapsed, 3),
            "holds_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
            "latency_ms": percentiles(latencies)}


async def _measured(name: str, pid: int | None, body: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run one loop, adding the CPU (in cores) the generator and the daemon used meanwhile."""
    wall, own = time.perf_counter(), cpu_seconds()
    theirs = cpu_seconds(pid) if pid else None
    result = await body
    wall = time.perf_counter() - wall
    result["generator_cpu_cores"] = round((cpu_seconds() - own) / wall, 2)
    result["daemon_cpu_cores"] = round((cpu_seconds(pid) - theirs) / wall, 2) if pid and theirs is not None else None
    return {"path": name, **result}


async def run(duration: float, concurrency: int, baseline: bool) -> dict[str, Any]:
    env = daemon_env(stack_settings())
    urls = {spec.name: spec.url(env) for spec in DAEMONS}
    port = BY_NAME["reservation"].port(env)
    # Enough fresh seats for either loop at up to 6,000 holds/s (the event's seats are capped by the daemon).
    needed = min(int(duration * 6000) + concurrency, 100_000)
    async with _session(env) as session:
        await _ready(session, urls)
        http_seats = await _bench_seats(session, urls["reservation"], needed)
        sql_seats = await _bench_seats(session, urls["reservation"], needed)
    pid = daemon_pid("reservation")
    run_id = os.urandom(3).hex()

    clients = [RawHttp("127.0.0.1", port, {"Authorization": f"Bearer {operator_token(env)}"})
               for _ in range(concurrency)]

    def http_worker(i: int, client: RawHttp) -> Callable[[str], Awaitable[bool]]:
        n = 0

        async def hold(seat: str) -> bool:
            nonlocal n
            n += 1
            body = json.dumps({"seat_id": seat, "user_id": f"bench-http-{run_id}-{i}-{n}"}).encode()
            status, _ = await client.request("POST", "/api/reserve", body)
            return status == 201

        return hold

    from reservation_daemon.store import ReservationStore

    conns = [await asyncpg.connect(env["TICKETFLOW_PG_DSN"], server_settings={"timezone": "UTC"})
             for _ in range(concurrency)]
    from deploy.runtime.pg import (
        _init_connection,  # the daemon's json codecs: the same work per row
    )

    for conn in conns:
        await _init_connection(conn)
    ttl = float(env.get("TICKETFLOW_HOLD_TTL_SECONDS", 600))

    def sql_worker(i: int, conn: asyncpg.Connection) -> Callable[[str], Awaitable[bool]]:
        store = ReservationStore(_OneConnection(conn))  # type: ignore[arg-type]
        n = 0

        async def hold(seat: str) -> bool:
            nonlocal n
            n += 1
            from deploy.runtime.ids import uuid7

            outcome = await store.reserve(uuid7(), None, [uuid.UUID(seat)], f"bench-sql-{run_id}-{i}-{n}", ttl, None)
            return outcome.name == "held"

        return hold

    try:
        runs = [
            await _measured("http", pid, closed_loop([http_worker(i, c) for i, c in enumerate(clients)],
                                                     http_seats, duration)),
            await _measured("sql", pid, closed_loop([sql_worker(i, c) for i, c in enumerate(conns)],
                                                    sql_seats, duration)),
        ]
    finally:
        for client in clients:
            await client.close()
        for conn in conns:
            await conn.close()
    by = {r["path"]: r for r in runs}
    ratio = (round(by["http"]["holds_per_s"] / by["sql"]["holds_per_s"], 3)
             if by["sql"]["holds_per_s"] and by["http"]["holds_per_s"] is not None else None)
    return {"mode": "holds-http", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "duration_s": duration, "concurrency": concurrency, "cpus": os.cpu_count(),
            "client": "raw asyncio HTTP/1.1, one keep-alive connection per worker",
            "runs": runs, "ratio_http_over_sql": ratio,
            "baseline": _baseline(env, concurrency, max(3, int(duration))) if baseline else None}


def render(report: dict[str, Any]) -> str:
    lines = [f"ticketflow bench --mode holds-http: {report['concurrency']} workers, {report['duration_s']} s per "
             f"path, {report['at']}", f"  client: {report['client']}",
             "", f"  {'path':<6} {'holds/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'holds':>7} {'failed':>7}"
                 f" {'generator cpu':>14} {'daemon cpu':>11}"]
    for r in report["runs"]:
        p = r["latency_ms"]
        lines.append(f"  {r['path']:<6} {r['holds_per_s']!s:>9} {p['p50']!s:>8} {p['p99']!s:>8} {r['holds']:>7}"
                     f" {r['failures']:>7} {r['generator_cpu_cores']!s:>14} {r['daemon_cpu_cores']!s:>11}")
    lines += ["", f"  http / sql (holds/s): {report['ratio_http_over_sql']}   (goal >= 0.7)"]
    base = report.get("baseline")
    if base and "tps" in base:
        lines += [f"  baseline, same machine, same run: {base['what']}: {base['tps']:.0f} tps, "
                  f"{base['latency_avg_ms']} ms average"]
    return "\n".join(lines)


def main(duration: float, concurrency: int, baseline: bool, json_path: str | None) -> int:
    import logging

    import structlog
    import uvloop

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        report = uvloop.run(run(duration, concurrency, baseline))
    except (RuntimeError, OSError, asyncpg.PostgresError) as exc:
        print(f"ticketflow bench: {exc}")
        return 1
    publish(report, render(report), json_path)
    return 0
