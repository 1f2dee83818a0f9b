"""``ticketflow bench --open-loop RATE``: holds arriving at a fixed rate, timed from when each was planned.

A closed loop (N buyers, each waiting for its answer before the next request) slows its own
arrivals down whenever the server is slow, so the queueing it causes never shows in its
latencies (coordinated omission). Here request i is planned at ``t0 + i / RATE`` and started
at that time whatever the earlier ones are doing; its latency runs from the PLANNED start to
its answer, so a scheduler that falls behind (or a server that queues) shows up in the
percentiles instead of hiding. The report gives the offered rate, the rate actually sent,
the rate of holds achieved, and how late the scheduler itself started requests.

Each request is ``POST /api/reserve`` for a distinct seat of a new event, as the operator
service, like ``ticketflow bench`` (holds only: nobody pays, the holds expire with their TTL).

The generator must be able to offer the rate itself, or its own lag is what gets measured:
requests go out on the raw HTTP/1.1 client of ``--mode holds-http`` (:class:`~deploy.ops.bench_http.RawHttp`,
a pre-built request on a keep-alive connection; aiohttp's client cost more CPU per request than the
daemon's handler and fell ~1 s behind at 1,000/s on 2 cores), one request per connection at a time,
connections taken from a free list and opened when none is free, on uvloop like the daemons.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from deploy.ops import resources
from deploy.ops.bench import _baseline, _bench_seats, _ready, _session, percentiles
from deploy.ops.bench_http import RawHttp
from deploy.ops.daemons import BY_NAME, DAEMONS
from deploy.ops.reports import publish
from deploy.ops.stack.settings import stack_settings
from deploy.ops.supervisor import daemon_env, operator_token


class Connections:
    """Keep-alive :class:`RawHttp` connections, one request on each at a time: a free one is reused,
    else a new one is opened, up to ``limit``; beyond it a request waits for a free one. The wait
    counts in its latency (measured from its planned start), so queueing is still seen; without a
    limit a slow server is sent thousands of new connections, whose setup is then what it measures."""

    def __init__(self, host: str, port: int, headers: dict[str, str], limit: int = 64) -> None:
        self.host, self.port, self.headers = host, port, headers
        self._free: list[RawHttp] = []
        self._slots = asyncio.Semaphore(limit)
        self.opened = 0

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        async with self._slots:
            return await self._request(method, path, body)

    async def _request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        client = self._free.pop() if self._free else None
        if client is None:
            client = RawHttp(self.host, self.port, self.headers)
            self.opened += 1
        try:
            answer = await client.request(method, path, body)
        except BaseException:
            await client.close()  # its state is unknown: never reused
            raise
        self._free.append(client)
        return answer

    async def close(self) -> None:
        for client in self._free:
            await client.close()
        self._free.clear()


def planned_starts(rate: float, duration: float, t0: float = 0.0) -> list[float]:
    """When each request of an open-loop run is due: evenly spaced at ``rate`` per second."""
    if rate <= 0:
        raise ValueError("the rate must be positive")
    return [t0 + i / rate for i in range(int(rate * duration))]


async def schedule(rate: float, duration: float, fire: Callable[[int, float], Awaitable[Any]],
                   clock: Callable[[], float] = time.perf_counter,
                   sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> list[asyncio.Task]:
    """Start ``fire(i, planned)`` for each planned time, never waiting for earlier ones to finish.

    Returns the tasks (await them for the results). If the scheduler is late, the due requests
    start at once, and their latency, measured from ``planned``, includes the lateness.
    """
    tasks: list[asyncio.Task] = []
    for i, planned in enumerate(planned_starts(rate, duration, clock())):
        delay = planned - clock()
        if delay > 0:
            await sleep(delay)
        tasks.append(asyncio.ensure_future(fire(i, planned)))
    return tasks


async def run(rate: float, duration: float, baseline: bool) -> dict[str, Any]:
    settings = stack_settings()
    env = daemon_env(settings)
    urls = {spec.name: spec.url(env) for spec in DAEMONS}
    clock = time.perf_counter
    latencies: list[float] = []
    lags: list[float] = []
    finished: list[float] = []
    errors: dict[str, int] = {}
    async with _session(env) as session:
        await _ready(session, urls)
        seats = await _bench_seats(session, urls["reservation"], int(rate * duration) + 1)
    run_id = os.urandom(3).hex()
    connections = Connections("127.0.0.1", BY_NAME["reservation"].port(env),
                              {"Authorization": f"Bearer {operator_token(env)}"})

    async def reserve(i: int, planned: float) -> None:
        lags.append((clock() - planned) * 1000)
        body = json.dumps({"seat_id": seats[i], "user_id": f"bench-open-{run_id}-{i}"}).encode()
        try:
            status, _ = await connections.request("POST", "/api/reserve", body)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        if status != 201:
            errors[f"reserve {status}"] = errors.get(f"reserve {status}", 0) + 1
            return
        done = clock()
        latencies.append((done - planned) * 1000)
        finished.append(done)

    sampler = resources.Sampler(resources.daemon_pids(settings)).start()  # the daemons `run all` started
    generator_cpu = time.process_time()
    t0 = clock()
    try:
        tasks = await schedule(rate, duration, reserve, clock)
        sent_s = clock() - t0
        await asyncio.gather(*tasks)
    finally:
        used = sampler.stop()
        await connections.close()
    elapsed = (max(finished) if finished else clock()) - t0
    generator_cpu = time.process_time() - generator_cpu
    return {
        "mode": "open-loop", "duration_s": duration, "requests": len(tasks),
        "offered_per_s": rate,
        "sent_per_s": round(len(tasks) / max(sent_s, 1 / rate), 1),
        "achieved_holds_per_s": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "reserve_latency_from_planned_ms": percentiles(latencies),
        "scheduler_start_lag_ms": percentiles(lags),
        # The generator's own cost: a generator near a full core cannot offer the rate it is asked.
        "generator": {"connections": connections.opened,
                      "cpu_percent": round(100 * generator_cpu / elapsed, 1) if elapsed > 0 else None},
        "errors": errors, "resources": used,
        "baseline": _baseline(env, 16, max(3, int(duration))) if baseline else None,
    }


def render(report: dict[str, Any]) -> str:
    p, lag = report["reserve_latency_from_planned_ms"], report["scheduler_start_lag_ms"]
    lines = [f"ticketflow bench --open-loop {report['offered_per_s']}: {report['requests']} holds over "
             f"{report['duration_s']} s",
             f"  offered {report['offered_per_s']}/s   sent {report['sent_per_s']}/s   "
             f"achieved {report['achieved_holds_per_s']} holds/s",
             "", f"  {'latency (ms)':<42} {'n':>7} {'p50':>9} {'p95':>9} {'p99':>9}",
             f"  {'reserve, from planned start':<42} {p['n']:>7} {p['p50']!s:>9} {p['p95']!s:>9} {p['p99']!s:>9}",
             f"  {'scheduler lag (start - planned)':<42} {lag['n']:>7} {lag['p50']!s:>9} {lag['p95']!s:>9} "
             f"{lag['p99']!s:>9}"]
    gen = report.get("generator")
    if gen:
        lines += [f"  generator: {gen['connections']} connections, {gen['cpu_percent']}% of a core"]
    lines += resources.render(report.get("resources"))
    base = report.get("baseline")
    if base and "tps" in base:
        lines += ["", f"  baseline, same machine, same run: {base['what']}: {base['tps']:.0f} tps, "
                      f"{base['latency_avg_ms']} ms average"]
    if report["errors"]:
        lines += ["", f"  errors: {report['errors']}"]
    return "\n".join(lines)


def main(rate: float, duration: float, baseline: bool, json_path: str | None) -> int:
    import uvloop

    try:
        report = uvloop.run(run(rate, duration, baseline))  # the loop the daemons run on
    except (RuntimeError, ValueError) as exc:
        print(f"ticketflow bench: {exc}")
        return 1
    publish(report, render(report), json_path)
    return 0
