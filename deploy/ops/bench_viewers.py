"""``ticketflow bench --mode viewers``: N open seat streams of one event while seats are held at a steady rate.

Self-contained (needs only the stack's PostgreSQL): a throwaway database and a private
reservation daemon on a free port (its link to billing down: its own sequencer numbers the
stream, as the relay does with the link up).

1. One event; the daemon's RSS is sampled (``deploy/ops/resources.py``) before any viewer.
2. N viewers open ``GET /api/events/{id}/seat-stream`` (one connection each) and wait for
   ``ready``; the RSS is sampled again: (with - before) / N is the memory per viewer.
3. Seats are held through ``POST /api/reserve`` at ``rate`` per second (each started at its
   planned time) for ``duration`` seconds; a hold's commit time is taken as the moment its
   201 arrives (the commit precedes the answer, so delays are if anything overstated by
   the answer's trip, well under a millisecond on loopback).
4. Every viewer records when each held seat reached it; the delay of a (hold, viewer) pair
   is receipt - commit. Reported: p50/p95/p99/max over all pairs, pairs missing after a
   grace period, viewers dropped, the daemon's peak RSS and CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from deploy.ops import resources
from deploy.ops.bench_backlog import Daemon
from deploy.ops.bench_sql import pg_database
from deploy.ops.ports import free_port
from deploy.ops.reports import publish
from deploy.ops.stack.keys import Keys
from deploy.ops.stack.settings import stack_settings
from deploy.ops.supervisor import daemon_env, operator_token, service_env

GRACE = 5.0  # seconds after the last hold for its change to reach every viewer


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str | None, Any]]:
    """(event name, id, parsed data) of each message of a text/event-stream response."""
    name, ident, data = "message", None, []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield name, ident, json.loads("\n".join(data))
            name, ident, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "id":
            ident = value
        elif field == "data":
            data.append(value)


def percentiles_ms(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99),
            "max": round(ordered[-1] * 1000, 1)}


class Viewer:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.received: dict[str, float] = {}  # seat id -> when it was seen held
        self.dropped = False

    async def watch(self, session: aiohttp.ClientSession, url: str) -> None:
        """Whole chunks, split into messages by hand: 500 viewers in one process must not make the
        bench's own parsing the delay it measures (a line-by-line reader did: ~1 s behind)."""
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)) as response:
            if response.status != 200:
                raise RuntimeError(f"seat stream answered {response.status}: {await response.text()}")
            buffer = b""
            async for chunk in response.content.iter_any():
                now = time.time()
                buffer += chunk
                *messages, buffer = buffer.split(b"\n\n")
                for message in messages:
                    if b"event: seats" in message:
                        data = json.loads(message[message.index(b"data: ") + 6:])
                        for seat in data["seats"]:
                            if seat["status"] == "held":
                                self.received.setdefault(seat["id"], now)
                    elif b"event: ready" in message:
                        self.ready.set()
                    elif b"event: dropped" in message:
                        self.dropped = True
                        return


async def run(viewers: int, duration: float, rate: float) -> dict[str, Any]:
    settings = stack_settings()
    env = daemon_env(settings)
    keys = Keys(settings.root)
    keys.ensure()
    token = operator_token(env)
    holds = max(1, int(duration * rate))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    with tempfile.TemporaryDirectory(prefix="tf-bench-viewers-") as tmp:
        async with pg_database(env["TICKETFLOW_PG_DSN"], "tf_bench_viewers") as dsn, aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0)) as session:
            daemon = Daemon("reservation", "reservation_daemon", service_env({
                **env, "TICKETFLOW_PG_DSN": dsn, "TICKETFLOW_RESERVATION_PORT": str(port),
                "TICKETFLOW_BILLING_LINK_PORT": str(free_port()), "TICKETFLOW_RATE_LIMITS_ENABLED": "off",
                "TICKETFLOW_RATE_LIMIT_PER_SECOND": "0",
                "TICKETFLOW_BILLING_URL": f"http://127.0.0.1:{free_port()}"}, keys, "reservation"), Path(tmp), port)
            tasks: list[asyncio.Task] = []
            try:
                daemon.start()
                await daemon.wait_ready(session)
                per_row = 50
                async with session.post(f"{base}/api/events", headers=auth, json={
                        "name": "bench viewers", "venue": "bench", "starts_at": "2030-01-01T20:00:00Z",
                        "layout": {"sections": [{"name": "V", "rows": holds // per_row + 1, "seats_per_row": per_row,
                                                 "price_minor": 1000, "currency": "EUR"}]}}) as r:
                    event = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"could not create the event: {r.status} {event}")
                async with session.get(f"{base}/api/events/{event['id']}/seats?limit=5000") as r:
                    seats = [s["id"] for s in (await r.json())["seats"]][:holds]
                pid = daemon.proc.pid  # type: ignore[union-attr]
                sampler = resources.Sampler({"reservation": pid}).start()
                rss_before = resources.rss_kb(pid) or 0
                watchers = [Viewer() for _ in range(viewers)]
                stream = f"{base}/api/events/{event['id']}/seat-stream"
                tasks = [asyncio.create_task(v.watch(session, stream)) for v in watchers]
                ready = asyncio.gather(*(v.ready.wait() for v in watchers))
                done, _ = await asyncio.wait([asyncio.ensure_future(ready), *tasks], timeout=60,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in tasks:
                        task.result()  # a viewer that failed to connect raises here
                if not all(v.ready.is_set() for v in watchers):
                    raise RuntimeError(f"only {sum(v.ready.is_set() for v in watchers)} of {viewers} viewers "
                                       "connected within 60 s")
                rss_with = resources.rss_kb(pid) or 0
                sampler.restart_cpu()
                committed: dict[str, float] = {}
                errors: dict[str, int] = {}
                started = time.monotonic()

                async def hold(seat: str, at: float) -> None:
                    await asyncio.sleep(max(0.0, at - time.monotonic()))
                    async with session.post(f"{base}/api/reserve", headers=auth,
                                            json={"seat_id": seat, "user_id": f"viewer-bench-{uuid.uuid4()}"}) as r:
                        await r.read()
                        if r.status == 201:
                            committed[seat] = time.time()
                        else:
                            errors[str(r.status)] = errors.get(str(r.status), 0) + 1

                await asyncio.gather(*(hold(seat, started + i / rate) for i, seat in enumerate(seats)))
                deadline = time.monotonic() + GRACE
                while time.monotonic() < deadline and not all(
                        len(v.received) >= len(committed) or v.dropped for v in watchers):
                    await asyncio.sleep(0.05)
                sampler.stop()
                report_rss = sampler.report()
                delays = [v.received[s] - t for v in watchers for s, t in committed.items() if s in v.received]
                missing = sum(1 for v in watchers for s in committed if s not in v.received)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                daemon.stop()
    return {
        "mode": "viewers", "at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "viewers": viewers, "holds": len(committed), "hold_errors": errors, "rate_per_s": rate,
        "duration_s": duration, "delay_ms": percentiles_ms(delays), "missing": missing,
        "dropped": sum(v.dropped for v in watchers),
        "rss_mb_before_viewers": round(rss_before / 1024, 1), "rss_mb_with_viewers": round(rss_with / 1024, 1),
        "rss_kb_per_viewer": round((rss_with - rss_before) / viewers, 1), "daemon": report_rss,
        "goal": "each viewer sees each change within 1 s (issue 14)",
        "goal_met": bool(delays) and missing == 0 and max(delays) < 1.0,
    }


def render(report: dict[str, Any]) -> str:
    d = report["delay_ms"]
    return "\n".join([
        f"ticketflow bench --mode viewers: {report['viewers']} seat-stream viewers of one event, "
        f"{report['holds']} holds at {report['rate_per_s']}/s, {report['at']}",
        f"  hold commit -> viewer receipt (ms, {d['n']} pairs): p50 {d['p50']}  p95 {d['p95']}  p99 {d['p99']}  "
        f"max {d['max']}",
        f"  missing after {GRACE:.0f} s: {report['missing']}   viewers dropped: {report['dropped']}   "
        f"hold errors: {report['hold_errors'] or 'none'}",
        f"  reservation daemon RSS: {report['rss_mb_before_viewers']} MB before viewers, "
        f"{report['rss_mb_with_viewers']} MB with them: {report['rss_kb_per_viewer']} kB per viewer",
        f"  goal (every change within 1 s): {'met' if report['goal_met'] else 'not met'}",
    ])


def main(viewers: int, duration: float, rate: float, json_path: str | None) -> int:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        report = asyncio.run(run(viewers, duration, rate))
    except (RuntimeError, OSError) as exc:
        print(f"ticketflow bench: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    publish(report, render(report), json_path)
    return 0
