"""``ticketflow bench --mode holds-sql``: the daemon's hold statement beside a one-statement hold, by pgbench.

No HTTP and no Python on the measured path: pgbench drives the database directly, so
the figures say what the statements themselves cost on this server, in the same minutes:

- ``daemon``: the exact statement the reservation daemon runs for ``POST /api/reserve``
  (``reservation_daemon/store/holds.py``: ``SELECT outcome, body FROM tf_reserve(...)`` with
  no event, one seat, a TTL and no idempotency key), prepared as asyncpg prepares it;
- ``one-statement``: the hold from issue 13, ``WITH s AS (UPDATE seats ... RETURNING ...)
  INSERT INTO outbox ... SELECT ... FROM s``, adapted to the real columns. It writes no
  reservations row and takes its outbox ``seq`` from a plain sequence (not gap-free, no
  lock held to commit): it is the yardstick of what the hardware does, not a replacement.

Everything happens in a throwaway database the bench creates on the stack's PostgreSQL and
drops afterwards: the reservation schema comes from the daemon's own migrator
(``ReservationStore.migrate``), the event and its seats from ``ReservationStore.create_event``.
Seat ids are then renumbered to ``lpad(n, 32, '0')::uuid`` (n = 1..seats) so a pgbench script
can name a random seat with an integer variable.

Seats never run out: each run starts from every seat available (the bench resets seats,
reservations and outbox between runs, outside the measured time), and there are far more
seats than a run holds. A random pick can still land on a seat held earlier in the same run;
that transaction answers ``seat_unavailable`` (the daemon) or updates nothing (one-statement).
The report counts the holds actually made per run (``held``) so such misses are visible.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from deploy.ops.reports import publish
from deploy.ops.stack.settings import stack_settings
from deploy.ops.supervisor import daemon_env

# pgbench variables: ``:n`` is the seat's number (1..seats), set per transaction by the script.
SEAT = "lpad(CAST(:n AS text), 32, '0')::uuid"

STATEMENTS = {
    # The daemon's statement, word for word, with pgbench values for its parameters:
    # $1 a fresh reservation id, $2 no event (the one-seat /api/reserve), $3 one seat, $4 the user,
    # $5 the TTL in seconds, $6..$8 no Idempotency-Key, $9 the request's correlation id (a uuid's length).
    "daemon": "SELECT outcome, body FROM tf_reserve(gen_random_uuid(), NULL, ARRAY[" + SEAT + "], 'bench',"
              " make_interval(secs => 600), NULL, NULL, NULL, '0190c3c4-1111-7222-8333-444455556666');",
    # Issue 13's one-statement hold on the real columns. seq: a plain sequence (created by the bench in
    # its throwaway database), on a stream of its own so it never meets the daemon's sequence numbers.
    "one-statement": "WITH s AS (UPDATE seats SET status = 'held', reservation_id = gen_random_uuid()"
                     " WHERE id = " + SEAT + " AND status = 'available'"
                     " RETURNING id, event_id, reservation_id, price_minor, currency)"
                     " INSERT INTO outbox (stream, seq, event_id, type, data)"
                     " SELECT 'bench-one-statement', nextval('bench_one_statement_seq'), gen_random_uuid(),"
                     " 'reservation.created', jsonb_build_object('id', s.reservation_id, 'event_id', s.event_id,"
                     " 'user_id', 'bench', 'seat_ids', jsonb_build_array(s.id), 'amount_minor', s.price_minor,"
                     " 'currency', s.currency) FROM s;",
}

# Bench scaffolding in the throwaway database (not the reservation schema: that comes from the migrator).
SCAFFOLD = "CREATE SEQUENCE IF NOT EXISTS bench_one_statement_seq"
RESET = ("UPDATE seats SET status = 'available', reservation_id = NULL WHERE status <> 'available';"
         " TRUNCATE outbox, reservations, seat_count_deltas")


def pgbench_script(kind: str) -> str:
    """The pgbench script for one statement: a random seat per transaction, then the hold."""
    return f"\\set n random(1, :seats)\n{STATEMENTS[kind]}\n"


def asyncpg_statement(kind: str) -> str:
    """The same statement for asyncpg, the seat number as ``$1`` (text), for tests and checks."""
    return STATEMENTS[kind].replace(":n", "$1").rstrip(";")


def find_pgbench() -> str | None:
    return shutil.which("pgbench") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"),
                                                      reverse=True)), None)


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def pg_database(base_dsn: str, prefix: str) -> AsyncIterator[str]:
    """A throwaway database on the stack's PostgreSQL, dropped afterwards (also on error or Ctrl-C)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_with_database(base_dsn, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(base_dsn, name)
    finally:
        admin = await asyncpg.connect(_with_database(base_dsn, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def prepare(dsn: str, seats: int) -> uuid.UUID:
    """Schema (the daemon's migrator), one event of ``seats`` seats numbered for pgbench, scaffolding."""
    from deploy.runtime.pg import Database
    from reservation_daemon.store import ReservationStore, Section

    db = Database(dsn)
    await db.start()
    try:
        store = ReservationStore(db)
        await store.migrate()
        event_id = uuid.uuid4()
        per_row = 1000
        answer = await store.create_event(
            event_id, "bench holds-sql", "bench", datetime(2030, 1, 1, tzinfo=timezone.utc), "",
            [Section("B", -(-seats // per_row), per_row, 100, "EUR")])
        if answer.name != "event_created":
            raise RuntimeError(f"could not create the bench event: {answer}")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SCAFFOLD)
            await conn.execute(
                "UPDATE seats s SET id = lpad(m.k::text, 32, '0')::uuid"
                "  FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM seats WHERE event_id = $1) m"
                " WHERE s.id = m.id", event_id)
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
        return event_id
    finally:
        await db.close()


async def _reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(RESET)
        await conn.execute("VACUUM ANALYZE seats")
    finally:
        await conn.close()


async def _held(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM seats WHERE status = 'held'")
    finally:
        await conn.close()


def _pgbench(pgbench: str, dsn: str, script: str, seats: int, clients: int, seconds: int) -> dict[str, Any]:
    d = urlsplit(dsn)
    result = subprocess.run(
        [pgbench, "-n", "-M", "prepared", "-f", script, "-D", f"seats={seats}", "-c", str(clients),
         "-j", str(min(clients, 2)), "-T", str(seconds), "-h", d.hostname or "127.0.0.1", "-p", str(d.port or 5432),
         "-U", d.username or "ticketflow", d.path.lstrip("/")],
        capture_output=True, text=True, env={**os.environ, "PGPASSWORD": d.password or ""}, timeout=seconds + 60,
        check=False)
    tps = re.search(r"tps = ([\d.]+)", result.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", result.stdout)
    done = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    if not tps or result.returncode != 0:
        raise RuntimeError(f"pgbench failed: {(result.stderr or result.stdout).strip()[-400:]}")
    return {"tps": float(tps.group(1)), "latency_avg_ms": float(latency.group(1)) if latency else None,
            "transactions": int(done.group(1)) if done else None,
            "failed": int(failed.group(1)) if failed else 0}


def _write_scripts(directory: str) -> dict[str, str]:
    scripts = {}
    for kind in STATEMENTS:
        scripts[kind] = os.path.join(directory, f"{kind}.sql")
        with open(scripts[kind], "w") as f:
            f.write(pgbench_script(kind))
    return scripts


async def run(seconds: int, clients: list[int], seats: int) -> dict[str, Any]:
    pgbench = find_pgbench()
    if pgbench is None:
        raise RuntimeError("pgbench not found (Debian's postgresql client package provides it)")
    base = daemon_env(stack_settings())["TICKETFLOW_PG_DSN"]
    runs: list[dict[str, Any]] = []
    async with pg_database(base, "tf_bench_holds") as dsn:
        await prepare(dsn, seats)
        with tempfile.TemporaryDirectory(prefix="tf-bench-sql-") as tmp:
            scripts = _write_scripts(tmp)
            # Side by side: at each client count both statements run back to back, each from all seats free.
            for n in clients:
                for kind in STATEMENTS:
                    await _reset(dsn)
                    figures = await asyncio.to_thread(_pgbench, pgbench, dsn, scripts[kind], seats, n, seconds)
                    runs.append({"statement": kind, "clients": n, **figures, "held": await _held(dsn)})
    version = (await asyncio.to_thread(subprocess.run, [pgbench, "--version"], capture_output=True, text=True,
                                       check=False)).stdout.strip()
    by = {(r["statement"], r["clients"]): r for r in runs}
    ratio = {str(n): round(by["daemon", n]["tps"] / by["one-statement", n]["tps"], 3)
             if by["one-statement", n]["tps"] else None for n in clients}
    return {"mode": "holds-sql", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds_per_run": seconds, "seats": seats, "pgbench": version, "cpus": os.cpu_count(),
            "runs": runs, "ratio_daemon_over_one_statement": ratio}


def render(report: dict[str, Any]) -> str:
    lines = [f"ticketflow bench --mode holds-sql: pgbench, {report['seconds_per_run']} s per run, "
             f"{report['seats']} seats, {report['at']}",
             "", f"  {'statement':<15} {'clients':>7} {'tps':>10} {'latency avg ms':>15} {'transactions':>13}"
                 f" {'held':>9}"]
    for r in report["runs"]:
        lines.append(f"  {r['statement']:<15} {r['clients']:>7} {r['tps']:>10.0f} {r['latency_avg_ms']!s:>15}"
                     f" {r['transactions']!s:>13} {r['held']:>9}")
    lines.append("")
    for n, ratio in report["ratio_daemon_over_one_statement"].items():
        lines.append(f"  daemon / one-statement at {n} client(s): {ratio}")
    return "\n".join(lines)


def main(seconds: float, clients: list[int], seats: int, json_path: str | None) -> int:
    import logging

    import structlog

    # The migrator logs each step of the throwaway schema; the report is what matters here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        report = asyncio.run(run(max(1, int(seconds)), clients, seats))
    except (RuntimeError, OSError, asyncpg.PostgresError) as exc:
        print(f"ticketflow bench: {exc}")
        return 1
    publish(report, render(report), json_path)
    return 0
