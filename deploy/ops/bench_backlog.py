"""``ticketflow bench --mode backlog``: how fast billing drains a reservation backlog into MariaDB.

Issue 13's scenario: billing is stopped while N holds are taken, then started. Self-contained
(needs only the stack's servers, like ``--mode holds-sql``):

1. a throwaway PostgreSQL database and a throwaway MariaDB database, both migrated by the
   daemons' own migrators (billing's schema is ready before billing starts, as after a restart);
2. a private reservation daemon on free ports, its link pointed at a billing port nobody serves yet;
3. N holds taken in bulk through the daemon's own stored function: ``tf_reserve`` once per seat,
   a chunk of seats per statement (``unnest`` + ``LATERAL tf_reserve``), a few connections at once.
   Each hold writes its ``reservation.created`` outbox row exactly as ``POST /api/reserve`` does;
   no HTTP on this path (it only fills the backlog and is not what is measured);
4. a private billing daemon started; the bench polls billing's stream position
   (``BillingStore.stream_position``) and the reservation stream's head
   (``ReservationStore.stream_state``) until the position equals the head and covers the N events.
   Reported: the time from billing's start (includes process start and the relay's reconnect
   backoff) and from billing's first applied event, events/s of each, each daemon's peak RSS
   (VmHWM) and CPU seconds during the drain;
5. the baseline, in the same run on the same server: the same N order rows written into a copy of
   billing's ``orders`` table by plain batched multi-row INSERTs, one commit per batch (what MariaDB
   does without the pipeline), once before billing starts and once after the drain (a shared
   machine's load drifts), and the ratio drain / their mean.

Processes and databases are removed at the end, also on Ctrl-C or a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomysql
import asyncpg

from deploy.ops.bench_sql import pg_database
from deploy.ops.ports import free_port
from deploy.ops.reports import publish
from deploy.ops.stack.keys import Keys
from deploy.ops.stack.settings import stack_settings
from deploy.ops.supervisor import daemon_env, service_env
from deploy.runtime.ids import uuid7
from deploy.runtime.mysql import MariaDsn

GOAL_EVENTS_PER_S = 10_000
HOLD_CHUNK = 1000  # seats per bulk statement
HOLD_CONNECTIONS = 4
BASELINE_BATCH = 1000  # rows per INSERT and per commit (the receiver's default batch)
HOLD_TTL_SECONDS = 3600  # nothing expires while the bench runs: only reservation.created in the backlog
POLL_SECONDS = 0.01

# tf_reserve per seat, exactly as the daemon calls it for a one-seat hold (no event, no Idempotency-Key),
# with time-ordered reservation ids (uuid7) as the daemon makes them: they become billing's order ids.
BULK_HOLD = ("SELECT count(*) FILTER (WHERE r.outcome = 'held')"
             "  FROM unnest($1::uuid[], $2::uuid[]) AS s(seat, reservation)"
             "  CROSS JOIN LATERAL tf_reserve(s.reservation, NULL, ARRAY[s.seat], $3,"
             "                                make_interval(secs => $4), NULL, NULL, NULL) AS r")




# --- throwaway databases ---------------------------------------------------------------


def _maria_connect(dsn: MariaDsn, database: str | None = None, autocommit: bool = True) -> Any:
    host, port = dsn.hosts[0]
    return aiomysql.connect(host=host, port=port, user=dsn.user, password=dsn.password, db=database,
                            autocommit=autocommit, charset="utf8mb4", init_command="SET time_zone = '+00:00'")


@asynccontextmanager
async def maria_database(base_dsn: str, prefix: str) -> AsyncIterator[str]:
    dsn = MariaDsn.parse(base_dsn)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await _maria_connect(dsn)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
        finally:
            conn.close()

    await admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        host, port = dsn.hosts[0]
        yield f"mysql://{dsn.user}:{dsn.password}@{host}:{port}/{name}"
    finally:
        await admin(f"DROP DATABASE IF EXISTS `{name}`")


# --- daemons -----------------------------------------------------------------------------


class Daemon:
    """A daemon as a child process in its own session (Ctrl-C reaches the bench, which stops it)."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path, http_port: int) -> None:
        self.name, self.module, self.env, self.http_port = name, module, env, http_port
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                async with session.get(f"http://127.0.0.1:{self.http_port}/ready",
                                       timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} daemon not ready after {timeout:.0f}s:\n{self.tail()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} daemon exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _status(self, key: str) -> int | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
        except (OSError, AttributeError):
            pass
        return None

    def peak_rss_mb(self) -> float | None:
        kb = self._status("VmHWM")
        return round(kb / 1024, 1) if kb is not None else None

    def cpu_seconds(self) -> float | None:
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# --- the phases ------------------------------------------------------------------------------


async def prepare(pg_dsn: str, maria_dsn: str, events: int) -> list[uuid.UUID]:
    """Both schemas (the daemons' migrators) and one event with ``events`` seats; its seat ids."""
    from billing_daemon.store import BillingStore
    from deploy.runtime.mysql import MariaDB
    from deploy.runtime.pg import Database
    from reservation_daemon.store import ReservationStore, Section

    db = Database(pg_dsn)
    await db.start()
    maria = MariaDB(maria_dsn)
    try:
        await BillingStore(maria).migrate()
        store = ReservationStore(db)
        await store.migrate()
        event_id = uuid.uuid4()
        per_row = 1000
        answer = await store.create_event(
            event_id, "bench backlog", "bench", datetime(2030, 1, 1, tzinfo=UTC), "",
            [Section("B", -(-events // per_row), per_row, 100, "EUR")], organizer_id="bench-organizer")
        if answer.name != "event_created":
            raise RuntimeError(f"could not create the bench event: {answer}")
    finally:
        await db.close()
        await maria.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT id FROM seats WHERE event_id = $1 ORDER BY id LIMIT $2", event_id, events)
    finally:
        await conn.close()
    return [r["id"] for r in rows]


async def take_holds(pg_dsn: str, seat_ids: list[uuid.UUID]) -> dict[str, Any]:
    """One hold per seat through tf_reserve, HOLD_CHUNK seats per statement, HOLD_CONNECTIONS at once."""
    chunks = [seat_ids[i:i + HOLD_CHUNK] for i in range(0, len(seat_ids), HOLD_CHUNK)]
    queue: asyncio.Queue[list[uuid.UUID]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    held = 0

    async def worker() -> None:
        nonlocal held
        conn = await asyncpg.connect(pg_dsn)
        try:
            while not queue.empty():
                seats = queue.get_nowait()
                taken = await conn.fetchval(BULK_HOLD, seats, [uuid7() for _ in seats], "bench-buyer",
                                            HOLD_TTL_SECONDS)
                held += taken  # after the await: ``held += await ...`` would read ``held`` before it
        finally:
            await conn.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(min(HOLD_CONNECTIONS, len(chunks)))))
    seconds = time.monotonic() - started
    if held != len(seat_ids):
        raise RuntimeError(f"only {held} of {len(seat_ids)} holds were taken")
    return {"held": held, "seconds": round(seconds, 3), "per_s": round(held / seconds, 1),
            "method": f"tf_reserve per seat, {HOLD_CHUNK} per statement, {HOLD_CONNECTIONS} connections"}


async def drain(pg_dsn: str, maria_dsn: str, events: int, billing: Daemon, daemons: list[Daemon],
                timeout: float) -> dict[str, Any]:
    """Start billing; poll its position and the reservation head until the backlog is applied."""
    from billing_daemon.store import BillingStore
    from deploy.runtime.mysql import MariaDB
    from deploy.runtime.pg import Database
    from reservation_daemon.store import STREAM, ReservationStore

    pg = Database(pg_dsn)
    await pg.start()
    maria = MariaDB(maria_dsn)
    reservations, bills = ReservationStore(pg), BillingStore(maria)
    try:
        # Events written before billing starts: numbered or not yet (the relay numbers them as it reads).
        state = await reservations.stream_state()
        head_before = state["last_seq"] + state["unsequenced"]
        cpu_before = {d.name: d.cpu_seconds() for d in daemons if d.proc is not None}
        started = time.monotonic()
        billing.start()
        cpu_before[billing.name] = 0.0
        first = None
        position = head = 0
        deadline = started + timeout
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"billing applied {position} of {events} events in {timeout:.0f}s "
                                   f"(reservation head {head}):\n{billing.tail()}")
            billing.check_alive()
            position = await bills.stream_position(STREAM)
            if position > 0 and first is None:
                first = now
            if position >= events:
                head = (await reservations.stream_state())["last_seq"]
                if position == head:
                    break
            await asyncio.sleep(POLL_SECONDS)
        done = time.monotonic()
        cpu = {d.name: (round(c - cpu_before[d.name], 2) if (c := d.cpu_seconds()) is not None else None)
               for d in [*daemons, billing] if d.proc is not None}
    finally:
        await pg.close()
        await maria.close()
    assert first is not None
    from_start, from_first = done - started, done - first
    return {"events": position, "head_before_billing": head_before,
            "from_start_s": round(from_start, 3), "from_first_applied_s": round(from_first, 3),
            "until_first_applied_s": round(first - started, 3),
            "events_per_s_from_start": round(position / from_start, 1),
            "events_per_s": round(position / from_first, 1) if from_first > 0 else None,
            "cpu_s": cpu}


def order_rows(events: int) -> list[tuple[Any, ...]]:
    """Rows shaped like the orders the inbox opens (one seat, the same column values)."""
    expires = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None)
    now = datetime.now(UTC).replace(tzinfo=None)
    event_id = str(uuid.uuid4())
    return [(str(uuid7()), "bench-buyer", event_id, "bench-organizer", "pending", 100, "EUR",
             json.dumps([{"id": str(uuid.uuid4()), "label": f"B-1-{i}"}]), expires, now, now)
            for i in range(events)]


async def baseline(maria_dsn: str, events: int, table: str) -> dict[str, Any]:
    """The same N order rows by plain multi-row INSERTs of BASELINE_BATCH rows, one commit each,
    into ``table``, a fresh copy of billing's ``orders`` (same columns, keys and indexes)."""
    dsn = MariaDsn.parse(maria_dsn)
    rows = order_rows(events)
    conn = await _maria_connect(dsn, dsn.database, autocommit=False)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE TABLE {table} LIKE orders")
            await conn.commit()
            started = time.monotonic()
            for i in range(0, len(rows), BASELINE_BATCH):
                # %s placeholders only: aiomysql turns this into ONE multi-row INSERT per batch.
                await cur.executemany(
                    f"INSERT INTO {table} (id, user_id, event_id, organizer_id, status, amount_minor,"
                    " currency, seats, expires_at, created_at, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows[i:i + BASELINE_BATCH])
                await conn.commit()
            seconds = time.monotonic() - started
            await cur.execute(f"SELECT count(*) FROM {table}")
            (count,) = await cur.fetchone()
    finally:
        conn.close()
    if count != events:
        raise RuntimeError(f"baseline wrote {count} of {events} rows")
    return {"rows": count, "seconds": round(seconds, 3), "rows_per_s": round(count / seconds, 1)}


async def run(events: int, timeout: float | None = None) -> dict[str, Any]:
    settings = stack_settings()
    env = daemon_env(settings)
    keys = Keys(settings.root)
    keys.ensure()
    timeout = timeout if timeout is not None else max(120.0, events / 200)
    daemons: list[Daemon] = []
    with tempfile.TemporaryDirectory(prefix="tf-bench-backlog-") as tmp:
        async with pg_database(env["TICKETFLOW_PG_DSN"], "tf_bench_backlog") as pg_dsn, \
                maria_database(env["TICKETFLOW_MARIADB_DSN"], "tf_bench_backlog") as maria_dsn, \
                aiohttp.ClientSession() as session:
            try:
                seat_ids = await prepare(pg_dsn, maria_dsn, events)
                # The baseline runs right before and right after the drain (the machine is shared and
                # its load drifts); the ratio is against their mean.
                before = await baseline(maria_dsn, events, "bench_baseline_before")
                link, billing_http, reservation_http = free_port(), free_port(), free_port()
                common = {**env, "TICKETFLOW_BILLING_LINK_PORT": str(link),
                          "TICKETFLOW_BILLING_URL": f"http://127.0.0.1:{billing_http}",
                          "TICKETFLOW_RATE_LIMITS_ENABLED": "off",
                          "TICKETFLOW_MOCK_GATEWAY_LEDGER": str(Path(tmp) / "mock-gateway.jsonl")}
                reservation = Daemon("reservation", "reservation_daemon", service_env({
                    **common, "TICKETFLOW_PG_DSN": pg_dsn, "TICKETFLOW_RESERVATION_PORT": str(reservation_http)},
                    keys, "reservation"), Path(tmp), reservation_http)
                daemons.append(reservation)
                reservation.start()
                await reservation.wait_ready(session)
                holds = await take_holds(pg_dsn, seat_ids)
                reservation.check_alive()
                billing = Daemon("billing", "billing_daemon", service_env({
                    **common, "TICKETFLOW_MARIADB_DSN": maria_dsn, "TICKETFLOW_BILLING_PORT": str(billing_http),
                    "TICKETFLOW_BRIDGE_LINK_PORT": str(free_port())}, keys, "billing"), Path(tmp), billing_http)
                daemons.append(billing)
                drained = await drain(pg_dsn, maria_dsn, events, billing, [reservation], timeout)
                rss = {d.name: d.peak_rss_mb() for d in daemons}
                for d in daemons:
                    d.stop()
                after = await baseline(maria_dsn, events, "bench_baseline_after")
            finally:
                for d in reversed(daemons):
                    d.stop()
    base = {"rows_per_s": round((before["rows_per_s"] + after["rows_per_s"]) / 2, 1), "before": before,
            "after": after, "batch": BASELINE_BATCH,
            "what": "multi-row INSERT into a copy of orders, one commit per batch, before and after the drain"}
    ratio = round(drained["events_per_s"] / base["rows_per_s"], 3) if drained["events_per_s"] else None
    return {"mode": "backlog", "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "events": events, "cpus": os.cpu_count(), "holds": holds, "drain": drained, "peak_rss_mb": rss,
            "baseline": base, "ratio_drain_over_baseline": ratio, "goal_events_per_s": GOAL_EVENTS_PER_S,
            "goal_met": bool(drained["events_per_s"] and drained["events_per_s"] >= GOAL_EVENTS_PER_S)}


def render(report: dict[str, Any]) -> str:
    d, b, h = report["drain"], report["baseline"], report["holds"]
    rss = report["peak_rss_mb"]
    row = "  {:<42} {:>9.3f} {:>10.0f}"
    lines = [f"ticketflow bench --mode backlog: {report['events']} reservation.created events, {report['at']}",
             f"  backlog taken: {h['held']} holds in {h['seconds']} s ({h['per_s']:.0f}/s; {h['method']})", "",
             f"  {'measure':<42} {'seconds':>9} {'events/s':>10}",
             row.format("drain from billing start", d["from_start_s"], d["events_per_s_from_start"]),
             row.format("drain from first applied event", d["from_first_applied_s"], d["events_per_s"] or 0),
             row.format("baseline before: multi-row INSERT orders", b["before"]["seconds"],
                        b["before"]["rows_per_s"]),
             row.format("baseline after: multi-row INSERT orders", b["after"]["seconds"], b["after"]["rows_per_s"]),
             "",
             (f"  drain (from first applied) / mean baseline: {report['ratio_drain_over_baseline']}   goal >= "
              f"{report['goal_events_per_s']} events/s: {'met' if report['goal_met'] else 'not met'}"),
             f"  billing start -> first applied event: {d['until_first_applied_s']} s",
             "  peak RSS MB: " + ", ".join(f"{k} {v}" for k, v in rss.items()),
             "  CPU s during the drain: " + ", ".join(f"{k} {v}" for k, v in d["cpu_s"].items())]
    return "\n".join(lines)


def main(events: int, json_path: str | None) -> int:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        report = asyncio.run(run(events))
    except (RuntimeError, OSError, asyncpg.PostgresError, aiomysql.Error) as exc:
        print(f"ticketflow bench: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    publish(report, render(report), json_path)
    return 0
