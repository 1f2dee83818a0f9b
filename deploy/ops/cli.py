"""``ticketflow``: the operator's entry point.

    ticketflow stack up|down|status|env [--topology local|ha]
                                          the project's own database and broker servers
    ticketflow run reservation|billing|bridge|portal
                                          run a daemon in the foreground
    ticketflow run all [--topology ha]    every daemon (ha: 2 reservation + 2 billing behind HAProxy)
                                          + a demo event + a walkthrough
    ticketflow stop                       stop the daemons and the stack
    ticketflow status                     servers, daemons and each link's lag
    ticketflow link advance --link L --to SEQ [--confirm]
                                          after a reconciliation: move a receiver past pruned events
    ticketflow bench                      simulated buyers against the running pipeline
    ticketflow drill NAME [DAEMON]        a failover drill under purchase load, with an audit
    ticketflow migrate                    apply pending schema migrations and exit
    ticketflow users create --role R ...  an organizer or door account (buyers sign up over HTTP)
    ticketflow keys rotate                a new token signing key, without downtime

Run ``ticketflow <command> --help`` for details.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from deploy.ops.daemons import BY_NAME, LINKS
from deploy.runtime.config import ConfigError, describe
from deploy.ops.stack.server import StackError
from deploy.ops.stack.settings import StackSettings, stack_settings
from deploy.ops.stack.topology import TOPOLOGIES


def _settings_epilog(cls: type) -> str:
    rows = [f"  {env:<34} default {'(a development secret)' if 'SECRET' in env else default}"
            + (f"  ({doc})" if doc else "") for env, default, doc in describe(cls)]
    return "environment:\n" + "\n".join(rows)


def _stack(args: argparse.Namespace) -> int:
    topology = TOPOLOGIES[args.topology]()
    if args.action == "up":
        started = time.monotonic()
        for name, what in topology.up().items():
            print(f"{name:<10} {what}")
        print(f"stack up in {time.monotonic() - started:.1f}s; connection settings: ticketflow stack env")
    elif args.action == "down":
        for name, stopped in topology.down().items():
            print(f"{name:<10} {'stopped' if stopped else 'was not running'}")
    elif args.action == "status":
        states = topology.status()
        servers = {name: {"state": state, "pid": topology.server(name).pid()} for name, state in states.items()}
        cluster = _cluster_status(topology, args.json, servers)
        if not args.json:
            for name, info in servers.items():
                print(f"{name:<10} {info['state']}" + (f" (pid {info['pid']})" if info["pid"] else ""))
            if cluster is not None:
                print(cluster[1])
        healthy = all(s.startswith("up") for s in states.values()) and not (cluster and cluster[0])
        return 0 if healthy else 3
    elif args.action == "env":
        prefix = "export " if args.export else ""
        for key, value in topology.env().items():
            print(f"{prefix}{key}={value}")
    elif args.action == "install":
        installed = topology.install()
        print("installed: " + ", ".join(installed) if installed else "all server packages present")
    return 0


def _cluster_status(topology, as_json: bool, servers: dict) -> tuple[list[str], str] | None:
    """The HA topology's cluster report (roles, lag, etcd, HAProxy backends) and what is wrong with it.

    Prints the JSON (servers included) when ``as_json``; returns (problems, text) or None for a topology
    without a cluster report (local) whose JSON is just the servers.
    """
    import json

    if not hasattr(topology, "report"):
        if as_json:
            print(json.dumps({"servers": servers}, indent=2))
        return None
    from deploy.ops.stack.topology import format_report, report_problems

    report = topology.report()
    problems = report_problems(report)
    if as_json:
        print(json.dumps({"servers": servers, **report, "problems": problems}, indent=2))
    text = format_report(report) + "\n" + (
        "problems:\n" + "\n".join(f"  {p}" for p in problems) if problems else "cluster healthy")
    return problems, text


def _default_topology() -> str:
    from deploy.ops.daemons import TOPOLOGY_ENV

    return os.environ.get(TOPOLOGY_ENV, "local")


def _use_topology(name: str) -> None:
    """Daemons started from here (and the supervisor's restarts) reach the servers of topology ``name``;
    ``run all``, ``status`` and the supervisor use that topology's daemon replicas (``daemons.replicas``)."""
    import os

    from deploy.ops.daemons import TOPOLOGY_ENV

    os.environ[TOPOLOGY_ENV] = name
    if name != "local":

        # The topology's PostgreSQL replaces whatever the shell had; the servers it shares with the
        # local topology (MariaDB, RabbitMQ) and the keys keep an operator's explicit settings.
        for key, value in TOPOLOGIES[name]().env().items():
            os.environ[key] = value if key.startswith("TICKETFLOW_PG_") else os.environ.get(key, value)


def _run(args: argparse.Namespace) -> int:
    _use_topology(args.topology)
    if args.daemon == "all":
        from deploy.ops.supervisor import run_all

        return run_all()
    BY_NAME[args.daemon].run()
    return 0


def _status(args: argparse.Namespace) -> int:
    from deploy.ops.status import main as status_main

    _use_topology(args.topology)  # status reads that topology's servers, replicas and cluster
    if args.watch_lag:
        from deploy.ops.status import watch_lag

        return watch_lag(args.watch_lag, stack_settings())
    return status_main(args.json, stack_settings())


def _trace(args: argparse.Namespace) -> int:
    import json

    from deploy.ops import trace
    from deploy.ops.supervisor import daemon_dirs, daemon_env

    _use_topology(args.topology)  # billing's database of that topology (Galera under ha) holds the order's id
    settings = stack_settings()
    logs = Path(args.logs) if args.logs else daemon_dirs(settings)[1]
    known = [] if args.no_db else [trace.order_correlation_id(args.order_id, daemon_env(settings))]
    report = trace.find(args.order_id, trace.log_files(logs), [k for k in known if k])
    report["logs_dir"] = str(logs)
    print(json.dumps(report, indent=2) if args.json else trace.render(report))
    return 0 if report["steps"] else 1


def _link(args: argparse.Namespace) -> int:
    from deploy.ops.linkctl import main as link_main

    return link_main(args.link, args.to, args.confirm, stack_settings())


def _clients(args: argparse.Namespace) -> list[int]:
    return [int(n) for n in args.clients.split(",")]


def _seconds(args: argparse.Namespace, default: float) -> float:
    return args.duration if args.duration is not None else default


def _bench_buyers(args: argparse.Namespace) -> int:
    if args.open_loop is not None:
        from deploy.ops.bench_open import main as open_loop_main

        return open_loop_main(args.open_loop, _seconds(args, 10.0), not args.no_baseline, args.json_out)
    from deploy.ops.bench import main as bench_main

    return bench_main(_seconds(args, 10.0), args.concurrency, not args.no_baseline, args.json_out)


def _bench_holds_sql(args: argparse.Namespace) -> int:
    from deploy.ops.bench_sql import main

    return main(_seconds(args, 5), _clients(args), args.seats, args.json_out)


def _bench_holds_http(args: argparse.Namespace) -> int:
    from deploy.ops.bench_http import main

    return main(_seconds(args, 5), args.concurrency, not args.no_baseline, args.json_out)


def _bench_emit_sql(args: argparse.Namespace) -> int:
    from deploy.ops.bench_emit import main

    return main(_seconds(args, 5), _clients(args), args.json_out)


def _bench_bridge(args: argparse.Namespace) -> int:
    from deploy.ops.bench_bridge import main

    return main(args.events or 20_000, args.json_out)


def _bench_backlog(args: argparse.Namespace) -> int:
    from deploy.ops.bench_backlog import main

    return main(args.events or 50_000, args.json_out)


def _bench_viewers(args: argparse.Namespace) -> int:
    from deploy.ops.bench_viewers import main

    return main(args.viewers, _seconds(args, 5.0), args.hold_rate, args.json_out)


def _bench_goals(args: argparse.Namespace) -> int:
    from deploy.ops.bench_goals import main

    return main(_seconds(args, 10.0), args.events or 50_000, args.events or 20_000, min(args.seats, 100_000),
                args.json_out)


# name -> (what it measures, beside what; how to run it). One table: --mode's choices and help come from it.
BENCH_MODES: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "buyers": ("simulated buyers against the running pipeline (the default; with --open-loop RATE: holds "
               "arriving at a fixed rate)", _bench_buyers),
    "holds-sql": ("pgbench runs the daemon's hold statement and a one-statement hold side by side in a throwaway "
                  "database (no daemons needed)", _bench_holds_sql),
    "holds-http": ("POST /api/reserve against the running reservation daemon beside its own hold statement "
                   "driven directly (asyncpg), at --concurrency, with the ratio", _bench_holds_http),
    "emit-sql": ("payment-shaped MariaDB transactions without an outbox row, with billing's old head-row emit and "
                 "with today's relay-numbered emit, side by side (only the stack needed)", _bench_emit_sql),
    "bridge": ("a backlog of payment events drained by a private billing and bridge into a throwaway vhost, beside "
               "a plain confirming publisher (only the stack needed)", _bench_bridge),
    "backlog": ("N holds taken while billing is stopped, then a private billing drains them, beside plain "
                "multi-row INSERTs of N orders (private daemons and throwaway databases, only the stack needed)",
                _bench_backlog),
    "viewers": ("--viewers open seat streams (SSE) of one event while seats are held at --hold-rate/s: delay "
                "from each hold's commit to each viewer, p50/p95/p99/max, and the daemon's RSS per viewer "
                "(a private reservation daemon, only the stack needed)", _bench_viewers),
    "goals": ("every figure of issue 13 in one run, each beside its same-run baseline, as one table of goals "
              "(needs the pipeline running: make run)", _bench_goals),
}


def _bench(args: argparse.Namespace) -> int:
    return BENCH_MODES[args.mode][1](args)


def _drill(args: argparse.Namespace) -> int:
    import asyncio

    from deploy.ops.daemons import replicas
    from deploy.ops.drill.faults import FAULTS, DrillRefused, KillDaemon, Target
    from deploy.ops.drill.report import emit, passed
    from deploy.ops.drill.run import run_fault_drill, run_seed_concurrency
    from deploy.ops.stack import process
    from deploy.ops.supervisor import daemon_dirs, daemon_env, operator_token, supervisor_pidfile

    if args.name == "chaos":
        from deploy.ops.drill.chaos import DWELL, parse_steps, run_chaos_drill

        try:
            steps = parse_steps(args.steps)
        except ValueError as exc:
            print(f"ticketflow drill chaos: {exc}", file=sys.stderr)
            return 2
    _use_topology(args.topology)
    settings = stack_settings()
    lock = _one_drill_at_a_time(settings.root)
    if lock is None:
        print(f"ticketflow drill: refused: another drill is running against this stack ({settings.root}/drill.lock); "
              "two at once could take down a cluster's majority", file=sys.stderr)
        return 2
    env = daemon_env(settings)
    pids = daemon_dirs(settings)[0]
    topology = TOPOLOGIES[args.topology]() if args.topology != "local" else None
    urls = {spec.name: spec.url(env) for spec in BY_NAME.values()}
    try:
        token = operator_token(env)
    except OSError as exc:
        print(f"ticketflow drill: refused: no operator credential ({exc}): the stack is not up from here",
              file=sys.stderr)
        return 2
    processes = replicas(env, args.topology)  # what `run all --topology` started: THE list of daemon processes
    target = Target(urls=urls, token=token, env=env, topology=topology, replicas=processes, pids=pids,
                    supervised=process.running_pid(supervisor_pidfile(settings)) is not None)
    try:
        if args.name == "seed-concurrency":
            report = asyncio.run(run_seed_concurrency(target, args.n))
        elif args.name == "chaos":
            report = asyncio.run(run_chaos_drill(target, steps, args.duration or DWELL, args.buyers, args.timeout))
        else:
            if args.name == "kill":
                names = sorted({*BY_NAME, *(r.name for r in processes)})
                if args.daemon not in names:
                    print(f"ticketflow drill kill: name a daemon or replica: {', '.join(names)}", file=sys.stderr)
                    return 2
                fault = KillDaemon(args.daemon)
            else:
                fault = FAULTS[args.name]()
            report = asyncio.run(run_fault_drill(fault, target, args.duration or 15.0, args.buyers, args.timeout))
    except DrillRefused as exc:
        print(f"ticketflow drill: refused: {exc}", file=sys.stderr)
        return 2
    emit(report, args.json_out or _drill_report_path(env, args.name))
    return 0 if passed(report) else 1


def _one_drill_at_a_time(root: Path):
    """An exclusive lock on the stack directory's ``drill.lock``, held until this process exits (the kernel
    drops it even on SIGKILL), or None if another drill holds it: from a terminal, the operators' console of
    any portal replica, or a console restarted while its drill went on."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / "drill.lock", "a")  # noqa: SIM115 -- kept open: the lock lives as long as the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _drill_report_path(env: dict[str, str], name: str) -> str | None:
    """Where a drill keeps its report when --json-out names no file: TICKETFLOW_DRILL_REPORTS_DIR (the stack
    directory's drills/), so the portal's operators' console lists drills run from a terminal too."""
    directory = env.get("TICKETFLOW_DRILL_REPORTS_DIR")
    if not directory:
        return None
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{name}.json")


def _stop(args: argparse.Namespace) -> int:
    from deploy.ops.supervisor import stop_all

    for name, stopped in stop_all(stack_settings()).items():
        print(f"{name:<10} {'stopped' if stopped else 'was not running'}")
    if not args.daemons_only:
        ha_topology = TOPOLOGIES["ha"]()
        if any(server.running() for server in ha_topology):  # the HA stack, if one runs from this checkout
            for name, stopped in ha_topology.down().items():
                print(f"{name:<10} {'stopped' if stopped else 'was not running'}")
        for name, stopped in TOPOLOGIES["local"]().down().items():
            print(f"{name:<10} {'stopped' if stopped else 'was not running'}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from billing_daemon.config import Settings as BillingSettings
    from billing_daemon.store import BillingStore
    from deploy.runtime.config import load
    from deploy.runtime.mysql import MariaDB
    from deploy.runtime.pg import Database
    from reservation_daemon.config import Settings as ReservationSettings
    from reservation_daemon.store import ReservationStore

    async def migrate() -> dict[str, list[str]]:
        pg = Database(load(ReservationSettings).pg_dsn)
        maria = MariaDB(load(BillingSettings).mariadb_dsn)
        await pg.start()
        try:
            return {"reservation": await ReservationStore(pg).migrate(),
                    "billing": await BillingStore(maria).migrate()}
        finally:
            await pg.close()
            await maria.close()

    for daemon, applied in asyncio.run(migrate()).items():
        print(f"{daemon}: " + (", ".join(applied) if applied else "schema up to date"))
    return 0


def _users(args: argparse.Namespace) -> int:
    import asyncio
    import getpass
    import json

    from billing_daemon.accounts import MIN_PASSWORD, hash_password
    from billing_daemon.config import Settings as BillingSettings
    from billing_daemon.rules import Refused
    from billing_daemon.store import BillingStore
    from deploy.runtime.config import load
    from deploy.runtime.mysql import MariaDB

    _use_topology(args.topology)  # the billing database of the topology the daemons run on (Galera under ha)
    password = args.password if args.password is not None else getpass.getpass(f"password for {args.email}: ")
    if len(password) < MIN_PASSWORD:
        print(f"ticketflow: the password must have at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 2

    async def create() -> dict:
        maria = MariaDB(load(BillingSettings).mariadb_dsn)
        try:
            store = BillingStore(maria)
            await store.migrate()
            created = await store.create_user(args.email.strip().lower(), args.name, None,
                                              password_hash=await hash_password(password), role=args.role)
            return created.body
        finally:
            await maria.close()

    try:
        print(json.dumps(asyncio.run(create())))
    except Refused as exc:
        print(f"ticketflow: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _keys(args: argparse.Namespace) -> int:
    from deploy.ops.stack.keys import Keys

    keys = Keys(stack_settings().root)
    if args.action == "rotate":
        print(f"signing key {keys.rotate()} is current; older public keys still verify the tokens they signed")
    else:
        print(keys.ensure())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticketflow",
        description="Operate TicketFlow: its local service stack, the daemons, their status and benchmarks. Start with `make run`; `ticketflow COMMAND --help` for each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = commands.add_parser(
        "stack",
        help="the project's own PostgreSQL, MariaDB and RabbitMQ servers",
        description="Run the project's own PostgreSQL, MariaDB and RabbitMQ as plain processes on "
        "loopback, with data, logs and pid files under .stack/. System servers on the default "
        "ports are never used or touched.",
        epilog=_settings_epilog(StackSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stack.add_argument(
        "action",
        choices=["up", "down", "status", "env", "install"],
        help="up: install what is missing, start, wait until each answers queries (idempotent); "
        "down: stop what the stack started; status: up/down per server (exit 3 if any is not up); "
        "env: print connection settings; install: only install missing packages",
    )
    stack.add_argument("--topology", choices=sorted(TOPOLOGIES), default="local", help="which servers (default: local; ha: etcd x3, Patroni PostgreSQL x3, HAProxy, under <stack dir>/ha)")
    stack.add_argument("--export", action="store_true", help="env: prefix lines with 'export ' for eval in a shell")
    stack.add_argument("--json", action="store_true", help="status: print the report as JSON (ha: roles, lag, etcd, "
                       "HAProxy backends, problems)")
    stack.set_defaults(func=_stack)

    from billing_daemon.config import Settings as BillingSettings
    from reservation_daemon.config import Settings as ReservationSettings

    run = commands.add_parser(
        "run", help="run a daemon in the foreground (SIGTERM or Ctrl-C stops it gracefully)",
        description="Run one daemon in the foreground. It logs JSON lines to stdout and reads its "
        "settings from TICKETFLOW_* variables (eval \"$(ticketflow stack env --export)\" for the stack's URLs).",
        epilog="reservation " + _settings_epilog(ReservationSettings) + "\n\nbilling "
        + _settings_epilog(BillingSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("daemon", choices=["all", *sorted(BY_NAME)],
                     help="all: start every daemon in the background (logs in .stack/logs/), create a demo "
                     "event, print a walkthrough, stop them on Ctrl-C")
    run.add_argument("--topology", choices=sorted(TOPOLOGIES), default="local",
                     help="whose servers the daemons use (ha: PostgreSQL through HAProxy's read-write port)")
    run.set_defaults(func=_run)

    stop = commands.add_parser("stop", help="stop the daemons started by `run all`, then the stack")
    stop.add_argument("--daemons-only", action="store_true", help="leave the stack's servers running")
    stop.set_defaults(func=_stop)

    status = commands.add_parser(
        "status", help="each server and daemon up/down, and each link's lag (exit 3 if anything is down)",
        description="Each stack server and daemon up or down (daemons by their /ready), and each link's lag: "
        "events written but not yet acknowledged downstream (reservation -> billing, billing -> bridge), "
        "messages waiting in the portal's queue, and dead letters.")
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.add_argument("--topology", choices=sorted(TOPOLOGIES), default="local",
                        help="ha: daemons' lag read through HAProxy, plus PostgreSQL roles, lag, etcd and HAProxy")
    status.add_argument("--watch-lag", type=float, metavar="SECONDS", default=None,
                        help="only each link's lag, one JSON line every SECONDS until stdout closes or the "
                             "parent process goes (the portal's operators' console samples its lag chart so)")
    status.set_defaults(func=_status)

    trace_cmd = commands.add_parser(
        "trace", help="one purchase's path through all four daemons' logs, with the time between steps",
        description="Finds the order's correlation ids (billing's order row keeps the hold request's; every log "
        "line naming the order adds its own) and prints every step of the daemons' logs that carries one of them, "
        "in time order, with the milliseconds since the first step and since the previous one. Reads every "
        "replica's log (reservation-1.log, ... under --topology ha). Says which daemon's log is missing. "
        "Exit 1 if no step was found.")
    trace_cmd.add_argument("order_id", metavar="ORDER_ID", help="the order id (the same as its reservation's id)")
    trace_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    trace_cmd.add_argument("--logs", metavar="DIR", help="where the logs are (default: <stack dir>/logs, where "
                           "`run all` writes them)")
    trace_cmd.add_argument("--no-db", action="store_true", help="do not ask billing's database for the order's id")
    trace_cmd.add_argument("--topology", choices=sorted(TOPOLOGIES), default=_default_topology(),
                           help="whose billing database to ask (default: $TICKETFLOW_TOPOLOGY or local)")
    trace_cmd.set_defaults(func=_trace)

    link = commands.add_parser(
        "link", help="repair a link: move a receiver past events its sender no longer retains",
        description="advance: when a sender reports POSITION_BEHIND_RETENTION (ticketflow status shows it, "
        "and the sender's /ready is false) its receiver's durable position is older than the oldest event "
        "the sender still keeps (a restore from an old backup, a lost bridge position). After reconciling "
        "the missing events by other means, move the receiver's position to exactly the position the sender "
        "needs. Without --confirm it only prints what it would do. It refuses any other position, a link "
        "without that condition, and a receiver whose position changed meanwhile.")
    link.add_argument("action", choices=["advance"])
    link.add_argument("--link", required=True, choices=sorted(LINKS), help="which link")
    link.add_argument("--to", required=True, type=int, metavar="SEQ",
                      help="the new receiver position: exactly the 'advance_to' the sender reports")
    link.add_argument("--confirm", action="store_true",
                      help="really move it (the events skipped never reach the receiver)")
    link.set_defaults(func=_link)

    bench = commands.add_parser(
        "bench", help="drive simulated buyers against the running pipeline; print figures as a table and JSON",
        description="Needs the pipeline running (make run in another terminal). Each buyer holds a seat, "
        "waits for its order in billing and pays, for the duration. Prints reservations/s, reserve and pay "
        "latency percentiles, and each hop's propagation latency from the stores' commit timestamps, beside "
        "a pgbench baseline measured in the same run.")
    bench.add_argument("--mode", choices=list(BENCH_MODES), default="buyers",
                       help="; ".join(f"{name}: {what}" for name, (what, _) in BENCH_MODES.items()))
    bench.add_argument("--duration", type=float, default=None,
                       help="seconds of load (default 10; holds-sql: seconds per pgbench run, holds-http: seconds "
                       "per path, default 5)")
    bench.add_argument("--open-loop", type=float, metavar="RATE", default=None,
                       help="instead of buyers: POST /api/reserve arriving at RATE per second, each started at its "
                       "planned time; latency measured from the planned start")
    bench.add_argument("--clients", default="1,16", help="holds-sql, emit-sql: client counts (default 1,16)")
    bench.add_argument("--seats", type=int, default=300_000, help="holds-sql: seats in the event (default 300000)")
    bench.add_argument("--events", type=int, default=None,
                       help="backlog: reservation.created events in the backlog (default 50000); bridge: payment "
                       "events (default 20000)")
    bench.add_argument("--concurrency", type=int, default=16, help="simulated buyers (default 16)")
    bench.add_argument("--viewers", type=int, default=500, help="viewers: open seat streams (default 500)")
    bench.add_argument("--hold-rate", type=float, default=20.0, help="viewers: holds per second (default 20)")
    bench.add_argument("--no-baseline", action="store_true", help="skip the pgbench baseline")
    bench.add_argument("--json-out", metavar="FILE", help="also write the JSON report to FILE")
    bench.set_defaults(func=_bench)

    drill = commands.add_parser(
        "drill", help="a failover drill against the running HA stack, under its own purchase load, audited",
        description="Drives buyers (reserve -> order -> pay -> finalized) through the public ports while it "
        "injects a fault, then reports the time to detect, the client-visible write gap, the recovery time, "
        "the errors clients saw and a Jepsen-style audit (acknowledged purchases lost, duplicated, seats sold "
        "twice; unknown outcomes resolved). It refuses a stack it does not recognise or that is unhealthy, "
        "and puts back what it broke. Exit 0: no anomaly and the stack healthy again; 1: not; 2: refused. "
        "pg-failover: SIGKILL the PostgreSQL leader's postmaster and Patroni (restarted as a replica); "
        "pg-switchover: planned, through Patroni's REST API; pg-replica-loss: SIGKILL the synchronous "
        "standby (restarted); lb-replica: SIGKILL a reservation replica then a billing replica; kill DAEMON: "
        "SIGKILL a daemon, `run all` restarts it; seed-concurrency: N simultaneous holds of one seat; "
        "mariadb-writer: SIGKILL the Galera node HAProxy's writer port routes to (restarted, rejoins by IST); "
        "mariadb-node: SIGKILL a Galera node that is not the writer (restarted, rejoins); rabbitmq-node: SIGKILL "
        "the RabbitMQ node leading the portal's quorum queue (restarted, rejoins), with the publishing stall; "
        "chaos: every daemon, the PostgreSQL primary, the MariaDB writer and a RabbitMQ node killed in turn "
        "under one load, each recovered before the next, one audit, every link's lag 0 and no dead letters.")
    drill.add_argument("name", choices=["pg-failover", "pg-switchover", "pg-replica-loss", "lb-replica", "kill",
                                        "seed-concurrency", "mariadb-writer", "mariadb-node", "rabbitmq-node",
                                        "chaos"])
    drill.add_argument("daemon", nargs="?", help="kill: which daemon (" + ", ".join(sorted(BY_NAME)) + ") or "
                       "replica (reservation-1, ...: `ticketflow status` lists them)")
    drill.add_argument("--duration", type=float, default=None,
                       help="seconds of load after the fault (longer if recovery takes longer; default 15); "
                       "chaos: after each fault, at least (default 5)")
    drill.add_argument("--steps", help="chaos: a subset of the faults, in turn, e.g. kill:billing,pg-failover "
                       "(default: kill: each of the four daemons, pg-failover, mariadb-writer, rabbitmq-node)")
    drill.add_argument("--buyers", type=int, default=6, help="concurrent buyers (default 6)")
    drill.add_argument("--timeout", type=float, default=3.0,
                       help="per-request timeout in seconds; a request without an answer is an unknown outcome")
    drill.add_argument("--n", type=int, default=10, help="seed-concurrency: simultaneous holds (default 10)")
    drill.add_argument("--topology", choices=sorted(TOPOLOGIES), default="ha",
                       help="whose servers the daemons use (default ha; kill and seed-concurrency also run "
                       "on local)")
    drill.add_argument("--json-out", metavar="FILE", help="also write the JSON report to FILE")
    drill.set_defaults(func=_drill)

    migrate = commands.add_parser(
        "migrate", help="apply pending schema migrations and exit (daemons also do this at start-up)",
        description="Apply pending versioned SQL migrations. Safe to run while daemons start: a "
        "database lock makes concurrent runs wait and then find nothing to do.",
    )
    migrate.set_defaults(func=_migrate)

    users = commands.add_parser(
        "users", help="create staff accounts: organizers, door staff, operators (buyers sign up over HTTP)",
        description="Create an account directly in billing's database (TICKETFLOW_MARIADB_DSN). Organizers "
        "create events and see and refund their orders; door staff check tickets in; operators use the "
        "portal's operators' console (/ops on :8086). The account then logs "
        "in with POST /api/sessions like anyone else.")
    users.add_argument("action", choices=["create"])
    users.add_argument("--role", choices=["organizer", "door", "operator", "buyer"], required=True)
    users.add_argument("--email", required=True)
    users.add_argument("--name", required=True)
    users.add_argument("--password", help="(asked for when omitted; at least 10 characters)")
    users.add_argument("--topology", choices=sorted(TOPOLOGIES), default=_default_topology(),
                       help="the topology whose billing database gets the account: ha writes to the Galera "
                       "cluster the HA daemons use (default: $TICKETFLOW_TOPOLOGY or local)")
    users.set_defaults(func=_users)

    keys = commands.add_parser(
        "keys", help="the token keys the stack provisions (ensure, rotate)",
        description="ensure: create the development signing key and service tokens if missing (stack up does "
        "it). rotate: make a new signing key current; verifiers accept its public key on first sight and "
        "keep the old one, so issued tokens keep working until they expire.")
    keys.add_argument("action", choices=["ensure", "rotate"])
    keys.set_defaults(func=_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Probes expect "connection refused" while servers start; the clients' own logs of it are noise,
    # and so are the shared plumbing's warnings when status reads a store whose server is down
    # (a daemon run in the foreground configures its own logging).
    logging.basicConfig(level=logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ticketflow: bad configuration: {exc}", file=sys.stderr)
        return 2
    except StackError as exc:
        print(f"ticketflow: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
