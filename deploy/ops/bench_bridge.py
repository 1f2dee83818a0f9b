"""``ticketflow bench --mode bridge``: billing -> bridge -> RabbitMQ beside a plain publisher, same broker, same run.

Self-contained (needs only the stack): a throwaway MariaDB database and RabbitMQ vhost, a
private billing daemon and a private bridge daemon on free ports.

1. Billing's schema is migrated and N ``payment.succeeded`` events are put in its outbox
   through its own store (``Outbox.emit`` in transactions of a few hundred), the bridge not
   yet running: a backlog.
2. Baseline (run once before and once after step 3; their mean is the baseline): a plain publisher (aio_pika like the bridge, the very messages the bridge would
   publish — ``to_message`` of the outbox's events — persistent, publisher confirms, up to
   the link's window in flight) publishes the N messages to the same exchange of the same
   broker. The queues are purged after each run.
3. Billing and the bridge start; the relay drains the backlog through the bridge.

Both runs feed the same queues (the portal's quorum queue the bridge declares and a classic
bench queue bound to the exchange). A run is timed from its first message in the broker to
its Nth: the baseline from its first publish to its last confirm, the bridge from the first
message seen in the bench queue until the bench queue holds N (polled), so neither includes
a process start-up. Billing's ``acked_seq`` must then reach the head: the bridge acks only
what RabbitMQ confirmed. Per-daemon peak RSS (from start-up) and CPU (over the drain) are sampled in the bridge run.
Everything is removed afterwards, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import uvloop

from deploy.ops import resources
from deploy.ops.ports import free_port
from deploy.ops.reports import publish
from deploy.ops.stack import process
from deploy.ops.stack.rabbitmq import RABBIT_BIN
from deploy.ops.stack.settings import stack_settings
from deploy.ops.stack.topology import local
from deploy.ops.supervisor import daemon_env
from deploy.runtime.amqp import Names, declare_topology, to_message
from deploy.runtime.mysql import MariaDB
from protocol.messages import Event

EMIT_BATCH = 250
BENCH_QUEUE = "bench.bridge"
DEFAULT_WINDOW = 256




def payment(i: int) -> dict[str, Any]:
    """A valid ``payment.succeeded`` (deploy/runtime/events.py) of one seat, as billing's pay emits it."""
    seat = {"id": str(uuid.uuid4()), "label": f"B-{i // 1000 + 1}-{i % 1000 + 1}"}
    return {"order_id": str(uuid.uuid4()), "reservation_id": str(uuid.uuid4()), "user_id": f"bench-{i}",
            "event_id": str(uuid.uuid4()), "amount_minor": 4500, "currency": "EUR", "payment_id": str(uuid.uuid4()),
            "seats": [seat], "tickets": [{"id": str(uuid.uuid4()), "seat_id": seat["id"], "seat_label": seat["label"]}]}


class Sandbox:
    """The throwaway database, vhost and daemon processes of one run; ``close`` removes them all."""

    def __init__(self) -> None:
        self.settings = stack_settings()
        self.topology = local(self.settings)
        self.rabbit = self.topology.server("rabbitmq")
        self.mariadb = self.topology.server("mariadb")
        tag = uuid.uuid4().hex[:8]
        self.database = f"tf_bench_bridge_{tag}"
        self.vhost = f"tf-bench-bridge-{tag}"
        self.dir = Path(tempfile.mkdtemp(prefix="tf-bench-bridge-"))
        self.pidfiles: list[Path] = []
        self.made_database = self.made_vhost = False

    # --- servers ---------------------------------------------------------------------------

    def _admin_sql(self, sql: str) -> None:
        import pymysql

        s = self.settings
        conn = pymysql.connect(host="127.0.0.1", port=s.mariadb_port, user=s.user, password=s.password,
                               autocommit=True, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def _ctl(self, *args: str) -> None:
        done = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), *args], env=self.rabbit.base_env(),  # type: ignore[attr-defined]
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-300:]}")

    def create(self) -> None:
        self._admin_sql(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        self.made_database = True
        self._ctl("add_vhost", self.vhost)
        self.made_vhost = True
        self._ctl("set_permissions", "-p", self.vhost, self.settings.user, ".*", ".*", ".*")

    @property
    def maria_dsn(self) -> str:
        return self.mariadb.dsn(self.database)  # type: ignore[attr-defined]

    @property
    def amqp_url(self) -> str:
        return self.rabbit.url(self.vhost)  # type: ignore[attr-defined]

    # --- daemons ---------------------------------------------------------------------------

    def spawn(self, name: str, module: str, env: dict[str, str]) -> int:
        pidfile = self.dir / f"{name}.pid"
        self.pidfiles.append(pidfile)
        return process.spawn([sys.executable, "-m", module], pidfile, self.dir / f"{name}.log", env=env)

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        for pidfile in reversed(self.pidfiles):
            process.stop(pidfile, signal.SIGTERM, timeout=10)
        if self.made_vhost:
            try:
                self._ctl("delete_vhost", self.vhost)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"ticketflow bench: could not delete vhost {self.vhost}: {exc}", file=sys.stderr)
        if self.made_database:
            try:
                self._admin_sql(f"DROP DATABASE IF EXISTS `{self.database}`")
            except Exception as exc:  # report, and go on cleaning
                print(f"ticketflow bench: could not drop database {self.database}: {exc!r}", file=sys.stderr)
        for path in self.dir.glob("*"):
            path.unlink(missing_ok=True)
        self.dir.rmdir()


async def _wait(what: str, condition, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")


async def _ready(url: str, name: str, sandbox: Sandbox, pid: int, timeout: float = 60) -> None:
    async def ready() -> bool:
        if process.running_pid(sandbox.dir / f"{name}.pid") is None:
            raise RuntimeError(f"{name} exited during start-up:\n{sandbox.log_tail(name)}")
        try:
            async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(2)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    await _wait(f"{name} (pid {pid}) ready at {url}", ready, timeout)


async def _fill_outbox(dsn: str, n: int) -> list[Event]:
    """Billing's schema, then ``n`` payments in its outbox through its own store; returns them as the relay reads them."""
    from billing_daemon.store import BillingStore

    db = MariaDB(dsn, max_size=2)
    store = BillingStore(db)
    try:
        await store.migrate()
        for start in range(0, n, EMIT_BATCH):
            async def emit(conn, start: int = start) -> None:
                for i in range(start, min(n, start + EMIT_BATCH)):
                    await store.outbox.emit(conn, "payment.succeeded", payment(i))

            await db.transaction(emit, idempotent=False)
        events: list[Event] = []
        while len(events) < n:
            page = await store.outbox.read(events[-1].seq if events else 0, 5000)
            if not page:
                break
            events += page
        return events
    finally:
        await db.close()


async def _bench_topology(url: str, prefix: str) -> tuple[aio_pika.abc.AbstractConnection, Any, Any]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    exchange = await declare_topology(channel, Names(prefix))
    queue = await channel.declare_queue(BENCH_QUEUE, durable=True)
    await queue.bind(exchange, routing_key="#")
    return connection, channel, queue


async def _purge(channel: Any, prefix: str) -> None:
    names = Names(prefix)
    for queue in (BENCH_QUEUE, names.portal_queue):
        await (await channel.get_queue(queue)).purge()


async def _count(channel: Any) -> int:
    declared = await channel.declare_queue(BENCH_QUEUE, passive=True)
    return declared.declaration_result.message_count


async def raw_publisher(url: str, prefix: str, events: list[Event], window: int) -> dict[str, Any]:
    """The baseline: the same messages, persistent, confirmed, at most ``window`` unconfirmed at a time."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Names(prefix).exchange)
        room = asyncio.Semaphore(window)

        async def publish(event: Event) -> None:
            try:
                await exchange.publish(to_message(event), routing_key=event.type)
            finally:
                room.release()

        started = time.perf_counter()
        tasks = []
        for event in events:
            await room.acquire()
            tasks.append(asyncio.ensure_future(publish(event)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    return {"what": f"aio_pika publisher, confirms, {window} in flight", "messages": len(events),
            "seconds": round(elapsed, 3), "msgs_per_s": round(len(events) / elapsed, 1)}


async def _through_bridge(sandbox: Sandbox, env: dict[str, str], channel: Any, n: int,
                          timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    from billing_daemon.store import BillingStore

    billing_http, bridge_http, bridge_link = free_port(), free_port(), free_port()
    common = {**env, "TICKETFLOW_MARIADB_DSN": sandbox.maria_dsn, "TICKETFLOW_AMQP_URL": sandbox.amqp_url,
              "TICKETFLOW_BILLING_PORT": str(billing_http), "TICKETFLOW_BILLING_LINK_PORT": str(free_port()),
              "TICKETFLOW_BRIDGE_PORT": str(bridge_http), "TICKETFLOW_BRIDGE_LINK_PORT": str(bridge_link),
              "TICKETFLOW_RELAY_LOCK_RETRY_SECONDS": "0.2"}
    # The bridge first, so billing's relay finds it at its first attempt (no reconnect backoff in the figure).
    bridge_pid = sandbox.spawn("bridge", "bridge_daemon", common)
    await _ready(f"http://127.0.0.1:{bridge_http}/ready", "bridge", sandbox, bridge_pid)
    billing_pid = sandbox.spawn("billing", "billing_daemon", common)
    sampler = resources.Sampler({"billing": billing_pid, "bridge": bridge_pid}).start()
    try:
        first: float | None = None
        first_count = 0
        deadline = time.monotonic() + timeout
        while True:
            count = await _count(channel)
            now = time.perf_counter()
            if count and first is None:
                first, first_count = now, count
                sampler.restart_cpu()  # CPU over the drain; peak RSS over the whole run
            if count >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {count} of {n} messages reached RabbitMQ within {timeout:.0f} s; "
                                   f"bridge log:\n{sandbox.log_tail('bridge')}\nbilling log:\n"
                                   f"{sandbox.log_tail('billing')}")
            for name in ("bridge", "billing"):
                if process.running_pid(sandbox.dir / f"{name}.pid") is None:
                    raise RuntimeError(f"{name} exited:\n{sandbox.log_tail(name)}")
            await asyncio.sleep(0.01)
        done = time.perf_counter()
        db = MariaDB(sandbox.maria_dsn, max_size=1)
        outbox = BillingStore(db).outbox
        try:
            async def all_acked() -> bool:
                state = await outbox.state()
                return state["acked_seq"] >= state["last_seq"] == n

            await _wait(f"billing's acked_seq reaching the head ({n})", all_acked, 30, 0.02)
            acked = time.perf_counter()
            state = await outbox.state()
        finally:
            await db.close()
    finally:
        used = sampler.stop()
    assert first is not None
    seconds = max(done - first, 1e-6)
    return ({"what": "billing outbox -> relay -> bridge -> RabbitMQ (confirmed)", "messages": n,
             "timed_messages": n - first_count, "seconds": round(seconds, 3),
             "msgs_per_s": round((n - first_count) / seconds, 1),
             "acked_seq_reached_head_after_s": round(acked - first, 3), "billing_stream": state}, used)


async def run(n: int, timeout: float = 300) -> dict[str, Any]:
    sandbox = Sandbox()
    try:
        sandbox.create()
        env = daemon_env(sandbox.settings)
        window = int(env.get("TICKETFLOW_LINK_WINDOW", DEFAULT_WINDOW))
        prefix = env.get("TICKETFLOW_AMQP_PREFIX", "ticketflow")
        events = await _fill_outbox(sandbox.maria_dsn, n)
        if len(events) != n:
            raise RuntimeError(f"the outbox holds {len(events)} events, not {n}")
        connection, channel, _ = await _bench_topology(sandbox.amqp_url, prefix)
        try:
            # The baseline before and after the bridge's run: the machine is shared and drifts.
            baselines = []
            for attempt in ("before", "after"):
                if attempt == "after":
                    bridge, used = await _through_bridge(sandbox, env, channel, n, timeout)
                    await _purge(channel, prefix)
                baselines.append(await raw_publisher(sandbox.amqp_url, prefix, events, window))
                await _wait(f"the baseline's {n} messages in the bench queue", lambda: _count_is(channel, n), 30)
                await _purge(channel, prefix)
        finally:
            await connection.close()
    finally:
        sandbox.close()
    rate = sum(b["msgs_per_s"] for b in baselines) / len(baselines)
    baseline = {"what": baselines[0]["what"], "messages": n, "msgs_per_s": round(rate, 1),
                "runs_msgs_per_s": [b["msgs_per_s"] for b in baselines]}
    return {"mode": "bridge", "events": n, "window": window, "bridge": bridge, "baseline": baseline,
            "ratio": round(bridge["msgs_per_s"] / rate, 3), "resources": used,
            "removed": {"database": sandbox.database, "vhost": sandbox.vhost}}


async def _count_is(channel: Any, n: int) -> bool:
    return await _count(channel) >= n


def render(report: dict[str, Any]) -> str:
    b, base = report["bridge"], report["baseline"]
    lines = [f"ticketflow bench --mode bridge: {report['events']} payment events, window {report['window']}",
             "", f"  {'path':<58} {'msgs':>7} {'seconds':>8} {'msgs/s':>9}",
             f"  {b['what']:<58} {b['timed_messages']:>7} {b['seconds']:>8} {b['msgs_per_s']:>9}",
             f"  {'baseline: ' + base['what']:<58} {base['messages']:>7} {'':>8} {base['msgs_per_s']:>9}",
             f"    (mean of a run before and one after the bridge's: {base['runs_msgs_per_s']} msgs/s)",
             f"  ratio bridge / baseline: {report['ratio']}  (goal >= 0.8)",
             f"  billing's acked_seq reached the head {b['acked_seq_reached_head_after_s']} s after the first message"]
    return "\n".join(lines + resources.render(report["resources"]))


def main(events: int, json_path: str | None) -> int:
    try:
        report = uvloop.run(run(events))  # the loop the bridge runs on: the baseline gets the same
    except RuntimeError as exc:
        print(f"ticketflow bench: {exc}")
        return 1
    publish(report, render(report), json_path)
    return 0


if __name__ == "__main__":  # pragma: no cover - ``ticketflow bench --mode bridge`` is the way in
    sys.exit(main(int(os.environ.get("N", "20000")), None))
