"""``ticketflow bench --mode emit-sql``: what appending to billing's payments outbox costs a writer.

N concurrent writers (asyncio tasks, one pooled MariaDB connection each) run the payment
path's shape in a loop: ``BEGIN; SELECT ... FOR UPDATE`` their own order row, update it,
emit, ``COMMIT``. Each writer has an order of its own, so only the emit can make them wait
for each other. Three variants run back to back at each client count, in the same minutes:

- ``no-emit``: the transaction without an outbox row — the ceiling (baseline);
- ``head-row``: the emit billing had before issue 13, word for word: ``UPDATE stream_heads
  SET last_seq = LAST_INSERT_ID(last_seq + 1)``, ``SELECT LAST_INSERT_ID()``, then the INSERT
  with that seq (and the same payload validation) — the head row stays locked until commit;
- ``relay-seq``: today's ``Outbox.emit`` (one INSERT, seq NULL) while a relay stand-in numbers
  and reads the rows as the relay does (``Outbox.read`` in a loop, acking what it read). The
  report says how many rows it numbered during the run and that none were left after it.

Each variant's time is cut into slices run in turn with the others' (the machine is shared and
its load drifts). Everything happens in a throwaway database on the stack's MariaDB (billing's own migrations),
dropped afterwards. Figures: transactions/s, latency p50/p99, and each variant's ratio to
``no-emit`` and relay-seq's to head-row.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiomysql

from billing_daemon.store import BillingStore
from billing_daemon.store.outbox import OUT_STREAM, Outbox
from deploy.ops.reports import publish
from deploy.ops.stack.settings import stack_settings
from deploy.ops.supervisor import daemon_env
from deploy.runtime import events
from deploy.runtime.ids import uuid7
from deploy.runtime.mysql import MariaDB, MariaDsn, execute, fetchval

VARIANTS = ("no-emit", "head-row", "relay-seq")
ROUNDS = 5  # each variant's time is split in this many slices, interleaved with the others' 
DATA = {"id": "bench", "order_id": "bench", "event_id": "bench", "seat_id": "bench", "seat_label": "A1",
        "checked_in_at": "2027-01-01T00:00:00Z"}


async def _old_emit(conn: aiomysql.Connection) -> None:
    """Billing's emit before issue 13 (billing_daemon/store/outbox.py at c1dda12), on today's columns."""
    data = events.validated("ticket.checked_in", DATA)
    await execute(conn, "UPDATE stream_heads SET last_seq = LAST_INSERT_ID(last_seq + 1) WHERE stream = %s",
                  (OUT_STREAM,))
    seq = await fetchval(conn, "SELECT LAST_INSERT_ID()")
    await execute(conn, "INSERT INTO outbox (stream, seq, event_id, type, data, created_at)"
                        " VALUES (%s, %s, %s, %s, %s, NOW(6))",
                  (OUT_STREAM, seq, str(uuid7()), "ticket.checked_in", json.dumps(data)))


async def _variant(db: MariaDB, outbox: Outbox, variant: str, clients: int, seconds: float,
                   latencies: list[float]) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    stop = asyncio.Event()
    numbered = 0
    done_before = len(latencies)

    async def writer(order: int) -> None:
        async def transaction(conn: aiomysql.Connection) -> None:
            await execute(conn, "SELECT n FROM bench_orders WHERE id = %s FOR UPDATE", (order,))
            await execute(conn, "UPDATE bench_orders SET n = n + 1 WHERE id = %s", (order,))
            if variant == "head-row":
                await _old_emit(conn)
            elif variant == "relay-seq":
                await outbox.emit(conn, "ticket.checked_in", DATA)

        while time.monotonic() < deadline:
            started = time.perf_counter()
            await db.transaction(transaction, idempotent=False)
            latencies.append(time.perf_counter() - started)
            if variant == "relay-seq":
                outbox.emitted()

    async def relay() -> None:  # numbers and reads as the sender does, woken by emitted()
        nonlocal numbered
        after = 0
        while True:
            wake.clear()
            events = await outbox.read(after, 256)
            if events:
                after = events[-1].seq
                numbered = after
                await outbox.record_ack(after)
            elif stop.is_set():
                return
            else:
                try:
                    await asyncio.wait_for(wake.wait(), 0.25)
                except TimeoutError:
                    pass

    wake = asyncio.Event()
    outbox.on_emit[:] = [wake.set]
    relaying = asyncio.create_task(relay()) if variant == "relay-seq" else None
    started = time.monotonic()
    await asyncio.gather(*(writer(n) for n in range(1, clients + 1)))
    elapsed = time.monotonic() - started
    during = numbered
    if relaying is not None:
        stop.set()
        wake.set()
        await relaying
    result: dict[str, Any] = {"elapsed": elapsed}
    if variant == "relay-seq":
        state = await outbox.state()
        result.update(numbered_during_run=during, left_unnumbered=state["unsequenced"],
                      gap_free=state["last_seq"] == state["acked_seq"] == len(latencies) - done_before)
    return result


async def _reset(db: MariaDB) -> None:
    async def reset(conn: aiomysql.Connection) -> None:
        await execute(conn, "DELETE FROM outbox")
        await execute(conn, "UPDATE stream_heads SET last_seq = 0, acked_seq = 0")

    await db.transaction(reset, idempotent=True)


async def run(seconds: float, clients: list[int]) -> dict[str, Any]:
    base = MariaDsn.parse(daemon_env(stack_settings())["TICKETFLOW_MARIADB_DSN"])
    host, port = base.hosts[0]
    name = f"tf_bench_emit_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await aiomysql.connect(host=host, port=port, user=base.user, password=base.password,
                                      autocommit=True, connect_timeout=10)
        try:
            await execute(conn, sql)
        finally:
            conn.close()

    await admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    runs: list[dict[str, Any]] = []
    db = MariaDB(f"mysql://{base.user}:{base.password}@{host}:{port}/{name}", max_size=max(clients) + 4)
    try:
        await BillingStore(db).migrate()
        await db.transaction(lambda c: execute(c, "CREATE TABLE bench_orders (id INT PRIMARY KEY, n BIGINT NOT NULL)"
                                                  " ENGINE=InnoDB"), idempotent=True)
        await db.transaction(lambda c: execute(c, "INSERT INTO bench_orders SELECT seq, 0 FROM seq_1_to_1000"),
                             idempotent=True)
        for n in clients:
            # Interleaved slices (no-emit, head-row, relay-seq, no-emit, ...): the machine is shared and its
            # load drifts; each variant gets the same share of good and bad seconds.
            slices: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
            latencies: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(ROUNDS):
                for variant in VARIANTS:
                    await _reset(db)
                    outbox = Outbox(db)  # a fresh relay stand-in: nothing cached from the last slice
                    slices[variant].append(await _variant(db, outbox, variant, n, seconds / ROUNDS,
                                                          latencies[variant]))
            for variant in VARIANTS:
                ms = sorted(x * 1000 for x in latencies[variant])
                run = {"variant": variant, "clients": n, "transactions": len(ms),
                       "tps": round(len(ms) / sum(s["elapsed"] for s in slices[variant]), 1),
                       "p50_ms": round(ms[len(ms) // 2], 2),
                       "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2)}
                if variant == "relay-seq":
                    run.update(numbered_during_run=sum(s["numbered_during_run"] for s in slices[variant]),
                               left_unnumbered=sum(s["left_unnumbered"] for s in slices[variant]),
                               gap_free=all(s["gap_free"] for s in slices[variant]))
                runs.append(run)
    finally:
        await db.close()
        await admin(f"DROP DATABASE IF EXISTS `{name}`")
    by = {(r["variant"], r["clients"]): r for r in runs}
    ratios = {}
    for n in clients:
        ceiling, old, new = by["no-emit", n]["tps"], by["head-row", n]["tps"], by["relay-seq", n]["tps"]
        ratios[str(n)] = {"head_row_over_no_emit": round(old / ceiling, 3) if ceiling else None,
                          "relay_seq_over_no_emit": round(new / ceiling, 3) if ceiling else None,
                          "relay_seq_over_head_row": round(new / old, 3) if old else None}
    return {"mode": "emit-sql", "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds_per_run": seconds, "cpus": os.cpu_count(), "runs": runs, "ratios": ratios}


def render(report: dict[str, Any]) -> str:
    lines = [(f"ticketflow bench --mode emit-sql: payment-shaped MariaDB transactions, {report['seconds_per_run']} s"
              f" per run, {report['at']}"), "",
             f"  {'variant':<10} {'clients':>7} {'tps':>9} {'p50 ms':>8} {'p99 ms':>8} {'transactions':>13}"]
    for r in report["runs"]:
        lines.append(f"  {r['variant']:<10} {r['clients']:>7} {r['tps']:>9.0f} {r['p50_ms']:>8} {r['p99_ms']:>8}"
                     f" {r['transactions']:>13}")
        if r["variant"] == "relay-seq":
            lines.append(f"  {'':<10} relay numbered {r['numbered_during_run']} during the run, "
                         f"{r['left_unnumbered']} left after it, gap-free: {r['gap_free']}")
    lines.append("")
    for n, ratio in report["ratios"].items():
        lines.append(f"  at {n} client(s): head-row / no-emit {ratio['head_row_over_no_emit']}, relay-seq / no-emit "
                     f"{ratio['relay_seq_over_no_emit']}, relay-seq / head-row {ratio['relay_seq_over_head_row']}")
    return "\n".join(lines)


def main(seconds: float, clients: list[int], json_path: str | None) -> int:
    import logging

    import pymysql
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        report = asyncio.run(run(seconds, clients))
    except (RuntimeError, OSError, pymysql.err.MySQLError) as exc:
        print(f"ticketflow bench: {exc}")
        return 1
    publish(report, render(report), json_path)
    return 0
