"""`ticketflow bench`'s measurement modes do what they say (behaviour only, never timings):
the pgbench scripts of `--mode holds-sql` hold a seat and write an outbox row on a fresh
reservation database, `--open-loop` starts requests at their planned times, `--mode bridge` drains a
real billing backlog through a real bridge beside a plain publisher and cleans up, `--mode backlog`
drains a reservation backlog through real daemons, reports its figures and leaves nothing behind, and the
resource sampler reads a real process's memory and CPU.
"""

import asyncio
import itertools
import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pymysql
import pytest

from deploy.ops import bench_sql
from deploy.ops.bench_open import planned_starts, schedule
from deploy.ops.stack.rabbitmq import RABBIT_BIN
from deploy.ops.stack.settings import stack_settings
from deploy.ops.stack.topology import local
from tests.support.stack import fresh_pg_database


@pytest.mark.stack
@pytest.mark.parametrize("kind", sorted(bench_sql.STATEMENTS))
async def test_each_holds_sql_statement_holds_one_seat_and_writes_one_outbox_row(kind):
    async with fresh_pg_database("tf_bench_sql") as dsn:
        await bench_sql.prepare(dsn, seats=1500)  # the daemon's migrator, the store's create_event
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM seats WHERE status = 'available'") == 2000
            # Seats are numbered for pgbench: seat n has the id lpad(n, 32, '0')::uuid.
            assert await conn.fetchval("SELECT count(*) FROM seats WHERE id = lpad('1234', 32, '0')::uuid") == 1

            await conn.execute(bench_sql.asyncpg_statement(kind), "1234")

            held = await conn.fetch("SELECT id, status FROM seats WHERE status <> 'available'")
            assert [(str(r["id"]), r["status"]) for r in held] == [(f"{1234:032d}"[:8] + "-0000-0000-0000-"
                                                                    + f"{1234:032d}"[20:], "held")]
            outbox = await conn.fetch("SELECT type, data FROM outbox")
            assert [r["type"] for r in outbox] == ["reservation.created"]

            # A second hold of the same seat holds nothing more.
            await conn.execute(bench_sql.asyncpg_statement(kind), "1234")
            assert await conn.fetchval("SELECT count(*) FROM seats WHERE status = 'held'") == 1
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 1

            # Between pgbench runs every seat is available again and the outbox empty.
            await conn.execute(bench_sql.RESET)
            assert await conn.fetchval("SELECT count(*) FROM seats WHERE status <> 'available'") == 0
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
        finally:
            await conn.close()


def test_pgbench_scripts_pick_a_random_seat_per_transaction():
    for kind in bench_sql.STATEMENTS:
        script = bench_sql.pgbench_script(kind)
        assert script.startswith("\\set n random(1, :seats)\n")
        assert ":n" in script.splitlines()[1]
    assert "tf_reserve(gen_random_uuid(), NULL, ARRAY[" in bench_sql.STATEMENTS["daemon"]


def test_planned_starts_are_evenly_spaced_at_the_rate():
    starts = planned_starts(500, 2.0, t0=100.0)
    assert len(starts) == 1000
    assert starts[0] == 100.0
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(abs(g - 1 / 500) < 1e-9 for g in gaps)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # like a real sleep, let the requests already started run (at the current time)
        self.now += seconds


async def test_open_loop_starts_each_request_at_its_planned_time_whatever_earlier_ones_do():
    clock = FakeClock()
    never_answered = asyncio.Event()  # every request hangs until the end: a closed loop would send one
    started: list[tuple[int, float, float]] = []

    async def fire(i: int, planned: float) -> None:
        started.append((i, planned, clock()))
        await never_answered.wait()

    tasks = await asyncio.wait_for(schedule(100, 1.0, fire, clock=clock, sleep=clock.sleep), 10)
    await asyncio.sleep(0)  # let the last task begin
    assert len(tasks) == 100 and len(started) == 100
    for i, planned, at in started:
        assert planned == pytest.approx(i / 100)
        assert at == pytest.approx(planned)  # started on time, not after the previous answer
    never_answered.set()
    await asyncio.gather(*tasks)


async def test_a_late_scheduler_starts_due_requests_at_once_and_keeps_their_planned_times():
    clock = FakeClock()
    seen: list[tuple[float, float]] = []

    async def fire(i: int, planned: float) -> None:
        seen.append((planned, clock()))
        if i == 0:
            clock.now += 0.05  # the loop was busy for 50 ms: five more requests fell due meanwhile

    tasks = await schedule(100, 0.1, fire, clock=clock, sleep=clock.sleep)
    await asyncio.gather(*tasks)
    assert [p for p, _ in seen] == pytest.approx([i / 100 for i in range(10)])
    assert all(at >= planned for planned, at in seen)  # latency from `planned` includes the lateness


# --- per-daemon RSS and CPU (deploy/ops/resources.py) ------------------------------------------------

SPIN = """
import sys, select
block = bytearray(80 * 1024 * 1024)
for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
    block[i] = 1
print("allocated", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:  # busy until the test writes (or closes stdin)
    pass
"""


def test_the_sampler_reads_a_real_processes_memory_and_cpu():
    from deploy.ops import resources

    child = subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "allocated"
        sampler = resources.Sampler({"hog": child.pid, "gone": None}, interval=0.02).start()
        deadline = time.monotonic() + 20
        while resources.cpu_seconds(child.pid) - sampler.cpu_start["hog"] < 0.3:
            assert time.monotonic() < deadline, "the spinning child never used 0.3 s of CPU"
            select.select([], [], [], 0.02)  # the sampler's thread samples meanwhile
        report = sampler.stop()
    finally:
        child.stdin.close()
        child.wait(10)
    assert set(report) == {"hog"}  # a daemon that is not running is left out
    hog = report["hog"]
    assert hog["pid"] == child.pid
    assert 80 <= hog["peak_rss_mb"] < 200, hog  # the 80 MB it touched, plus an interpreter
    assert hog["cpu_seconds"] >= 0.3 and hog["cpu_percent"] > 10, hog
    assert sampler.samples >= 3
    # After it exited, /proc has nothing: the figures of the last sample stay.
    assert resources.rss_kb(child.pid) is None and resources.cpu_seconds(child.pid) is None
    assert sampler.report()["hog"]["peak_rss_mb"] == hog["peak_rss_mb"]
    assert "hog" in "\n".join(resources.render(report))


# --- ticketflow bench --mode bridge ---------------------------------------------------------------------


@pytest.mark.stack
def test_bridge_mode_drains_billings_backlog_through_a_real_bridge_beside_a_plain_publisher(tmp_path):
    out = tmp_path / "bridge.json"
    bench = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "bench", "--mode", "bridge", "--events", "700",
                            "--json-out", str(out)], capture_output=True, text=True, timeout=240, check=False)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "ratio bridge / baseline" in bench.stdout and "peak RSS MB" in bench.stdout
    report = json.loads(out.read_text())
    assert report["mode"] == "bridge" and report["events"] == 700
    # Every event went through billing's relay and the bridge, and billing knows RabbitMQ has them all.
    assert report["bridge"]["billing_stream"] == {"stream": "payments", "last_seq": 700, "acked_seq": 700, "lag": 0,
                                                  "unsequenced": 0}
    assert report["bridge"]["msgs_per_s"] > 0 and report["baseline"]["msgs_per_s"] > 0
    assert len(report["baseline"]["runs_msgs_per_s"]) == 2
    assert report["ratio"] == pytest.approx(report["bridge"]["msgs_per_s"] / report["baseline"]["msgs_per_s"],
                                            rel=0.01)
    assert set(report["resources"]) == {"billing", "bridge"}
    for figures in report["resources"].values():
        assert figures["peak_rss_mb"] > 20 and figures["cpu_percent"] is not None, report["resources"]
    # The throwaway database and vhost are gone, as are the daemons it started.
    removed = report["removed"]
    settings = stack_settings()
    conn = pymysql.connect(host="127.0.0.1", port=settings.mariadb_port, user=settings.user,
                           password=settings.password)
    try:
        with conn.cursor() as cur:
            assert cur.execute("SHOW DATABASES LIKE %s", (removed["database"],)) == 0
    finally:
        conn.close()
    vhosts = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "list_vhosts", "--silent"],
                            env=local(settings).server("rabbitmq").base_env(), capture_output=True, text=True,
                            check=False)
    assert vhosts.returncode == 0 and removed["vhost"] not in vhosts.stdout.split()
    for name in ("billing", "bridge"):
        assert resources_gone(report["resources"][name]["pid"])


def resources_gone(pid: int) -> bool:
    from deploy.ops.stack.process import _start_time

    return _start_time(pid) is None


# --- --mode backlog ---------------------------------------------------------------------------------


async def _bench_databases() -> set[str]:
    """The throwaway databases of `--mode backlog` that exist now, on both servers."""
    import aiomysql

    from tests.support.stack import pg_dsn

    conn = await asyncpg.connect(pg_dsn("postgres"))
    try:
        names = {r["datname"] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'tf_bench_backlog_%'")}
    finally:
        await conn.close()
    settings = local().server("mariadb").settings
    maria = await aiomysql.connect(host="127.0.0.1", port=settings.mariadb_port, user=settings.user,
                                   password=settings.password, autocommit=True)
    try:
        async with maria.cursor() as cur:
            await cur.execute("SHOW DATABASES LIKE 'tf\\_bench\\_backlog\\_%'")
            names |= {row[0] for row in await cur.fetchall()}
    finally:
        maria.close()
    return names


def _processes_naming(text: str) -> list[int]:
    """Pids whose environment mentions ``text`` (a daemon started with a bench database's DSN)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if text.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _bench(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deploy.ops.cli", "bench", "--mode", "backlog", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.stack
async def test_backlog_mode_drains_a_small_backlog_reports_every_figure_and_leaves_nothing(tmp_path):
    existing = await _bench_databases()
    out = tmp_path / "backlog.json"
    bench = _bench("--events", "300", "--json-out", str(out))
    output, _ = await asyncio.to_thread(bench.communicate, timeout=300)
    assert bench.returncode == 0, output
    report = json.loads(out.read_text())
    assert report["mode"] == "backlog" and report["events"] == 300
    assert report["holds"]["held"] == 300
    drain = report["drain"]
    # Billing applied exactly the backlog: its position reached the head, which the 300 holds made.
    assert drain["events"] == drain["head_before_billing"] == 300
    for key in ("from_start_s", "from_first_applied_s", "until_first_applied_s", "events_per_s_from_start",
                "events_per_s"):
        assert drain[key] > 0, key
    assert drain["from_first_applied_s"] <= drain["from_start_s"]
    assert set(drain["cpu_s"]) == {"reservation", "billing"}
    assert all(report["peak_rss_mb"][name] > 0 for name in ("reservation", "billing"))
    base = report["baseline"]
    assert base["before"]["rows"] == base["after"]["rows"] == 300 and base["rows_per_s"] > 0
    assert report["ratio_drain_over_baseline"] == pytest.approx(drain["events_per_s"] / base["rows_per_s"], rel=0.01)
    assert report["goal_events_per_s"] == 10_000 and isinstance(report["goal_met"], bool)
    assert "drain from first applied event" in output and "baseline before" in output  # the human table
    assert await _bench_databases() == existing, "the bench's databases were not dropped"


@pytest.mark.stack
async def test_backlog_mode_interrupted_stops_its_daemons_and_drops_its_databases():
    existing = await _bench_databases()
    bench = _bench("--events", "20000")
    try:
        # Interrupt once a daemon of its own runs (its environment names the bench's database).
        deadline = time.monotonic() + 120
        mine: set[str] = set()
        pids: list[int] = []
        while not pids:
            assert time.monotonic() < deadline, "the bench never started a daemon"
            assert bench.poll() is None, bench.communicate()[0]
            mine = await _bench_databases() - existing
            pids = [pid for name in mine for pid in _processes_naming(name) if pid != bench.pid]
            await asyncio.sleep(0.1)
        bench.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = await asyncio.to_thread(bench.communicate, timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 130, output
    assert not [pid for name in mine for pid in _processes_naming(name)], "a daemon outlived the bench"
    assert not (await _bench_databases() & mine), "the bench's databases were not dropped"
