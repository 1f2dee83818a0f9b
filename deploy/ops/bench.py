"""``ticketflow bench``: simulated buyers against the running pipeline, figures as a table and JSON.

Each buyer loops for the duration: hold a seat, wait for its order in
billing, pay. Client-side latencies are measured per request. Hop latencies
come from the timestamps the stores record at commit time (one machine, one
clock), read through the daemons' HTTP APIs like any client, and from a
bench-owned queue bound to the events exchange:

- reservation commit -> order in billing: the order's ``created_at`` - the hold's ``created_at``
- payment commit -> message in RabbitMQ: arrival at the bench queue - the order's ``paid_at``
- payment commit -> sale finalized: the portal's ``purchase_confirmed`` notification's ``created_at``
  (written in the transaction that finalizes the sale) - the order's ``paid_at``

A baseline from the same run on the same machine is printed beside them
(``pgbench`` doing ``SELECT 1`` at the same concurrency), because shared
machines drift and absolute numbers alone mislead.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiohttp

from deploy.ops import resources
from deploy.ops.daemons import DAEMONS
from deploy.ops.reports import publish
from deploy.ops.stack.settings import stack_settings
from deploy.ops.supervisor import daemon_env, operator_token
from deploy.runtime.amqp import Names

MAX_EVENT_SEATS = 100_000  # the reservation daemon refuses larger layouts (LAYOUT_TOO_LARGE)


@dataclass
class Samples:
    reserve_ms: list[float] = field(default_factory=list)
    pay_ms: list[float] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    # commit times the daemons report (epoch seconds), by order id
    held: dict[str, float] = field(default_factory=dict)
    ordered: dict[str, float] = field(default_factory=dict)
    paid: dict[str, float] = field(default_factory=dict)
    buyer: dict[str, str] = field(default_factory=dict)


def epoch(rfc3339: str | None) -> float | None:
    """An RFC 3339 time from an API answer as epoch seconds (None stays None)."""
    if rfc3339 is None:
        return None
    parsed = datetime.fromisoformat(rfc3339)
    return parsed.replace(tzinfo=parsed.tzinfo or timezone.utc).timestamp()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}


async def _buyer(session: aiohttp.ClientSession, urls: dict[str, str], seats: asyncio.Queue, until: float,
                 samples: Samples, tag: str) -> None:
    r, b = urls["reservation"], urls["billing"]
    bought = 0
    while time.monotonic() < until and not seats.empty():
        seat = seats.get_nowait()
        # One simulated user per purchase: the portal's notifications are then looked up per order.
        user = f"bench-{tag}-{bought}"
        try:
            started = time.perf_counter()
            async with session.post(f"{r}/api/reserve", json={"seat_id": seat, "user_id": user}) as resp:
                body = await resp.json()
            if resp.status != 201:
                samples.errors[f"reserve {resp.status}"] = samples.errors.get(f"reserve {resp.status}", 0) + 1
                continue
            samples.reserve_ms.append((time.perf_counter() - started) * 1000)
            order_id = body["id"]
            samples.held[order_id] = epoch(body["created_at"])
            pause = 0.002
            while True:  # the order arrives over the reservation -> billing link
                # HEAD: is it there yet (one indexed lookup in billing, not the order's whole view); its
                # created_at comes with the pay answer. Polling must load billing as little as it can.
                async with session.head(f"{b}/api/orders/{order_id}") as resp:
                    if resp.status == 200:
                        break
                # Back off: tight polling by many buyers would load billing more than the work measured.
                await asyncio.sleep(pause)
                pause = min(0.05, pause * 2)
            started = time.perf_counter()
            async with session.post(f"{b}/api/orders/{order_id}/pay", headers={"Idempotency-Key": order_id}) as resp:
                paid = await resp.json()
            if resp.status != 200:
                samples.errors[f"pay {resp.status}"] = samples.errors.get(f"pay {resp.status}", 0) + 1
                continue
            samples.pay_ms.append((time.perf_counter() - started) * 1000)
            samples.orders.append(order_id)
            samples.paid[order_id] = epoch(paid.get("paid_at"))
            samples.ordered[order_id] = epoch(paid.get("created_at"))  # the order's commit in billing
            samples.buyer[order_id] = user
            bought += 1
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            samples.errors[type(exc).__name__] = samples.errors.get(type(exc).__name__, 0) + 1


async def _watch_rabbitmq(url: str, names: Names, arrivals: dict[str, float], ready: asyncio.Event) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(await channel.get_exchange(names.exchange), routing_key="payment.succeeded")
        ready.set()
        async with queue.iterator(no_ack=True) as messages:
            async for message in messages:
                arrivals[json.loads(message.body)["data"]["order_id"]] = time.time()
    finally:
        await connection.close()


def _baseline(env: dict[str, str], concurrency: int, seconds: int) -> dict[str, Any] | None:
    pgbench = shutil.which("pgbench") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"),
                                                             reverse=True)), None)
    if pgbench is None:
        return None
    dsn = urlsplit(env["TICKETFLOW_PG_DSN"])
    script = "/tmp/ticketflow-bench-select1.sql"
    with open(script, "w") as f:
        f.write("SELECT 1;\n")
    result = subprocess.run(
        [pgbench, "-n", "-f", script, "-c", str(concurrency), "-j", "2", "-T", str(seconds),
         "-h", dsn.hostname or "127.0.0.1", "-p", str(dsn.port or 5432), "-U", dsn.username or "ticketflow",
         dsn.path.lstrip("/")],
        capture_output=True, text=True, env={**os.environ, "PGPASSWORD": dsn.password or ""}, timeout=seconds + 30)
    tps = re.search(r"tps = ([\d.]+)", result.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", result.stdout)
    if not tps:
        return {"error": result.stderr.strip()[-300:]}
    return {"what": f"pgbench SELECT 1, {concurrency} clients, {seconds}s", "tps": float(tps.group(1)),
            "latency_avg_ms": float(latency.group(1)) if latency else None}


def _hop(later: dict[str, float | None], earlier: dict[str, float | None], orders: list[str]) -> dict[str, Any]:
    """Percentiles of ``later - earlier`` in ms over the orders that have both times."""
    return percentiles([(later[o] - earlier[o]) * 1000 for o in orders  # type: ignore[operator]
                        if later.get(o) is not None and earlier.get(o) is not None])


async def _finalized(session: aiohttp.ClientSession, portal: str, samples: Samples, arrivals: dict[str, float],
                     deadline: float) -> dict[str, float | None]:
    """When the portal finalized each paid order (its ``purchase_confirmed`` notification), waiting until
    every sale crossed RabbitMQ and the portal, or ``deadline``."""
    finalized: dict[str, float | None] = {}
    pending = list(samples.orders)
    while (pending or len(arrivals) < len(samples.orders)) and time.monotonic() < deadline:
        async def look(order_id: str) -> None:
            async with session.get(f"{portal}/api/notifications",
                                   params={"user_id": samples.buyer[order_id]}) as resp:
                notes = (await resp.json()).get("notifications", []) if resp.status == 200 else []
            for note in notes:
                if note["order_id"] == order_id and note["kind"] == "purchase_confirmed":
                    finalized[order_id] = epoch(note["created_at"])

        for start in range(0, len(pending), 32):
            await asyncio.gather(*(look(o) for o in pending[start:start + 32]))
        pending = [o for o in pending if o not in finalized]
        await asyncio.sleep(0.2)
    return finalized


async def _ready(session: aiohttp.ClientSession, urls: dict[str, str]) -> None:
    for name, url in urls.items():
        try:
            async with session.get(url + "/ready") as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{name} is not ready ({resp.status})")
        except aiohttp.ClientError:
            raise RuntimeError(f"{name} is not running at {url}: start the pipeline with `make run`") from None


async def _bench_seats(session: aiohttp.ClientSession, reservation: str, seats_needed: int) -> list[str]:
    """A new event with at least ``seats_needed`` seats (rows of 1000); their ids, read page by page."""
    rows = max(1, -(-seats_needed // 1000))
    async with session.post(reservation + "/api/events", json={
        "name": f"bench {datetime.now(timezone.utc).isoformat(timespec='seconds')}", "venue": "bench",
        "starts_at": "2030-01-01T00:00:00Z",
        "layout": {"sections": [{"name": "B", "rows": rows, "seats_per_row": 1000, "price_minor": 100,
                                 "currency": "EUR"}]}}) as resp:
        event = await resp.json()
    seat_ids: list[str] = []
    page_url = f"{reservation}/api/events/{event['id']}/seats?limit=5000"
    while True:  # the seat list comes in pages
        async with session.get(page_url + (f"&after={seat_ids[-1]}" if seat_ids else "")) as resp:
            page = await resp.json()
        seat_ids += [s["id"] for s in page["seats"]]
        if page["next"] is None:
            break
    return seat_ids


def _session(env: dict[str, str]) -> aiohttp.ClientSession:
    # The bench is an operator tool: it calls as the stack's `operator` service (holds for simulated buyers).
    credential = {"Authorization": f"Bearer {operator_token(env)}"}
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=credential,
                                 timeout=aiohttp.ClientTimeout(total=30))


async def run(duration: float, concurrency: int, baseline: bool) -> dict[str, Any]:
    settings = stack_settings()
    env = daemon_env(settings)
    urls = {spec.name: spec.url(env) for spec in DAEMONS}
    async with _session(env) as session:
        await _ready(session, urls)
        # enough seats for ~400 purchases/s per buyer-second, within one event's layout limit
        seat_ids = await _bench_seats(session, urls["reservation"],
                                      min(MAX_EVENT_SEATS, (int(concurrency * duration * 400 / 1000) + 1) * 1000))
        seats: asyncio.Queue = asyncio.Queue()
        for seat in seat_ids:
            seats.put_nowait(seat)

        arrivals: dict[str, float] = {}
        watching = asyncio.Event()
        watcher = asyncio.create_task(_watch_rabbitmq(env["TICKETFLOW_AMQP_URL"],
                                                      Names(env.get("TICKETFLOW_AMQP_PREFIX", "ticketflow")),
                                                      arrivals, watching))
        await asyncio.wait_for(watching.wait(), 10)
        samples = Samples()
        sampler = resources.Sampler(resources.daemon_pids(settings)).start()  # the daemons `run all` started
        started = time.monotonic()
        until = started + duration
        run_id = os.urandom(3).hex()  # simulated users of this run only
        try:
            await asyncio.gather(*(_buyer(session, urls, seats, until, samples, f"{run_id}-{i}")
                                   for i in range(concurrency)))
        finally:
            used = sampler.stop()
        elapsed = time.monotonic() - started

        # Let the last sales cross every hop, then read when the portal finalized each.
        finalized = await _finalized(session, urls["portal"], samples, arrivals, time.monotonic() + 60)
    watcher.cancel()

    hops = {
        "reservation commit -> order in billing": _hop(samples.ordered, samples.held, samples.orders),
        "payment commit -> message in RabbitMQ": _hop(arrivals, samples.paid, samples.orders),
        "payment commit -> sale finalized": _hop(finalized, samples.paid, samples.orders),
    }
    report = {
        "duration_s": round(elapsed, 2), "concurrency": concurrency,
        "reservations_per_s": round(len(samples.reserve_ms) / elapsed, 1),
        "purchases_per_s": round(len(samples.orders) / elapsed, 1),
        "reserve_latency_ms": percentiles(samples.reserve_ms), "pay_latency_ms": percentiles(samples.pay_ms),
        "propagation_ms": hops, "errors": samples.errors, "resources": used,
        "baseline": _baseline(env, concurrency, max(3, int(duration))) if baseline else None,
    }
    return report


def render(report: dict[str, Any]) -> str:
    def row(name: str, p: dict[str, Any]) -> str:
        return f"  {name:<42} {p['n']:>7} {p['p50']!s:>9} {p['p95']!s:>9} {p['p99']!s:>9}"

    lines = [f"ticketflow bench: {report['concurrency']} buyers for {report['duration_s']} s",
             f"  reservations/s {report['reservations_per_s']}   purchases/s {report['purchases_per_s']}",
             "", f"  {'latency (ms)':<42} {'n':>7} {'p50':>9} {'p95':>9} {'p99':>9}",
             row("reserve (HTTP, client side)", report["reserve_latency_ms"]),
             row("pay (HTTP, client side)", report["pay_latency_ms"])]
    lines += [row(name, p) for name, p in report["propagation_ms"].items()]
    lines += resources.render(report.get("resources"))
    base = report.get("baseline")
    if base and "tps" in base:
        lines += ["", f"  baseline, same machine, same run: {base['what']}: {base['tps']:.0f} tps, "
                      f"{base['latency_avg_ms']} ms average"]
    if report["errors"]:
        lines += ["", f"  errors: {report['errors']}"]
    return "\n".join(lines)


def main(duration: float, concurrency: int, baseline: bool, json_path: str | None) -> int:
    try:
        report = asyncio.run(run(duration, concurrency, baseline))
    except RuntimeError as exc:
        print(f"ticketflow bench: {exc}")
        return 1
    publish(report, render(report), json_path)
    return 0
