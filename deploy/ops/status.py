"""``ticketflow status``: every server and daemon up or down, each link's lag, the portal's stuck messages.

Under ``--topology ha``: every daemon replica (state, pid, restarts, the instance that
answers on its port), the HA servers, and the cluster report (PostgreSQL roles and lag,
etcd members, each HAProxy backend's state) that ``stack status --topology ha`` prints.

Lag is "written but not yet acknowledged downstream": for the two TCP links
the producer's last sequence minus the receiver's acknowledged one, for the
broker hop the portal queue's depth (ready plus unacknowledged).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from deploy.ops.daemons import BY_NAME, DAEMONS, SENDS, TOPOLOGY_ENV, replicas
from deploy.ops.restarts import read_restarts
from deploy.ops.stack import process
from deploy.ops.stack.settings import StackSettings
from deploy.ops.stack.topology import TOPOLOGIES, format_report, report_problems
from deploy.ops.supervisor import daemon_dirs, daemon_env, restarts_file
from deploy.runtime.amqp import Names


def probe(url: str) -> tuple[str, dict[str, Any]]:
    """A daemon's ``/ready``: its state (up, not ready, down, http N) and the checks it reported."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return ("up" if response.status == 200 else f"http {response.status}"), _checks(response.read())
    except urllib.error.HTTPError as exc:
        return ("not ready" if exc.code == 503 else f"http {exc.code}"), _checks(exc.read())
    except OSError:
        return "down", {}


def instance(url: str) -> str | None:
    """Who answers ``GET /api/instance`` at ``url`` (a replica's own port, or a frontend's)."""
    try:
        with urllib.request.urlopen(url + "/api/instance", timeout=2) as response:
            return json.loads(response.read()).get("instance")
    except (OSError, ValueError, AttributeError):
        return None


def _checks(body: bytes) -> dict[str, Any]:
    try:
        checks = json.loads(body).get("checks", {})
    except (ValueError, AttributeError):
        return {}
    return checks if isinstance(checks, dict) else {}


def describe_problem(link: str, problem: dict[str, Any]) -> str:
    """One line for an operator: what is wrong with ``link`` and the command that resolves it."""
    if problem.get("error") == "POSITION_BEHIND_RETENTION":
        return (f"RECEIVER BEHIND RETENTION by {problem['missing']} events: the receiver is at "
                f"{problem['receiver_position']}, the sender keeps events from {problem['oldest_retained']} on; "
                f"after reconciling run: ticketflow link advance --link {link} --to {problem['advance_to']} "
                f"--confirm")
    return f"{problem.get('error')}: {problem}"


async def _stream_lag(db: Any, store: Callable[[Any], Any]) -> int | str:
    """``last_seq - acked_seq`` from the producing daemon's own ``store.stream_state()``, or why not known."""
    try:
        await db.start()
        return (await asyncio.wait_for(store(db).stream_state(), 5))["lag"]
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"
    finally:
        await db.close()


async def _lags(env: dict[str, str]) -> dict[str, Any]:
    import aio_pika

    from billing_daemon.config import Settings as BillingSettings
    from billing_daemon.store import BillingStore
    from deploy.runtime.config import load
    from deploy.runtime.mysql import MariaDB
    from deploy.runtime.pg import Database
    from reservation_daemon.config import Settings as ReservationSettings
    from reservation_daemon.store import ReservationStore

    # Each producer's lag through its own store; short timeouts and one connection, so that
    # status answers at once while a server is down.
    limits = {"max_size": 1, "connect_timeout": 3, "command_timeout": 3}
    lags: dict[str, Any] = {
        SENDS["reservation"].title: await _stream_lag(
            Database(load(ReservationSettings, env).pg_dsn, **limits), ReservationStore),
        SENDS["billing"].title: await _stream_lag(
            MariaDB(load(BillingSettings, env).mariadb_dsn, **limits), BillingStore),
    }
    try:
        connection = await aio_pika.connect(env["TICKETFLOW_AMQP_URL"], timeout=3)
        try:
            channel = await connection.channel()
            names = Names(env.get("TICKETFLOW_AMQP_PREFIX", "ticketflow"))
            queue = await channel.declare_queue(names.portal_queue, passive=True)
            lags["bridge -> portal (queue)"] = queue.declaration_result.message_count
            dlq = await channel.declare_queue(names.dead_letter_queue, passive=True)
            lags["dead letters"] = dlq.declaration_result.message_count
        finally:
            await connection.close()
    except Exception as exc:
        lags["bridge -> portal (queue)"] = f"unknown ({type(exc).__name__})"
    return lags


# --- stuck messages (the portal retries a message whose peer is down or answers unexpectedly) ---


def stuck_messages(portal_url: str) -> dict[str, Any] | str:
    """The portal's stuck-message summary from its /ready ({"count", "oldest_seconds"}), or why not known."""
    try:
        with urllib.request.urlopen(portal_url + "/ready", timeout=2) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # 503 still carries the checks
        try:
            body = json.load(exc)
        except ValueError:
            return f"unknown (http {exc.code})"
    except (OSError, ValueError):
        return "unknown (portal down)"
    stuck = body.get("checks", {}).get("stuck") if isinstance(body, dict) else None
    return stuck if isinstance(stuck, dict) else "unknown (portal does not say)"


def render_stuck(stuck: dict[str, Any] | str) -> list[str]:
    if isinstance(stuck, str):
        line = stuck
    elif not stuck.get("count"):
        line = "none"
    else:
        line = (f"{stuck['count']} message(s) retrying, oldest for {stuck['oldest_seconds']:.0f} s"
                " (the portal's GET /api/stuck lists them; its log says why)")
    return ["portal messages stuck (a peer down or answering unexpectedly; never dead-lettered for it):",
            f"  {line}"]


def collect(settings: StackSettings) -> dict[str, Any]:
    env = daemon_env(settings)
    topology_name = env.get(TOPOLOGY_ENV, "local")
    pids, _ = daemon_dirs(settings)
    daemons = {}
    problems = {}
    restarts = read_restarts(restarts_file(settings))
    for replica in replicas(env):
        pid = process.running_pid(replica.pidfile(pids))
        state, checks = probe(replica.url + "/ready")
        restarted = restarts.get(replica.name, {})
        daemons[replica.name] = {"daemon": replica.daemon, "state": state, "pid": pid, "url": replica.url,
                                 "instance": instance(replica.url) if state != "down" else None,
                                 "restarts": restarted.get("count", 0), "last_exit": restarted.get("last_exit"),
                                 "last_restart_at": restarted.get("last_at")}
        if replica.daemon in SENDS and isinstance(checks.get("link"), dict):
            problems[SENDS[replica.daemon].name] = checks["link"]
    topology = TOPOLOGIES[topology_name](settings) if topology_name == "local" else TOPOLOGIES[topology_name]()
    report = {"topology": topology_name, "servers": topology.status(), "daemons": daemons}
    if hasattr(topology, "report"):
        cluster = topology.report()
        report["cluster"] = {**cluster, "problems": report_problems(cluster)}
        report["frontends"] = {spec.name: {"url": spec.url(env), "state": probe(spec.url(env) + "/ready")[0]}
                               for spec in DAEMONS if spec.ha_ports(env)}
    return {**report, "lag": asyncio.run(_lags(env)), "link_problems": problems,
            "stuck": stuck_messages(BY_NAME["portal"].url(env))}


def render(report: dict[str, Any]) -> str:
    lines = ["servers:" if report.get("topology", "local") == "local" else f"servers ({report['topology']}):"]
    lines += [f"  {name:<12} {state}" for name, state in report["servers"].items()]
    lines.append("daemons:")
    lines += [f"  {name:<14} {d['state']}" + (f" (pid {d['pid']})" if d["pid"] else "")
              + (f" at {d['url']}, answers as {d['instance']}" if "cluster" in report and d.get("instance") else "")
              + (f", restarted {d['restarts']}x by run all, last after {d['last_exit']} at {d['last_restart_at']}"
                 if d.get("restarts") else "")
              for name, d in report["daemons"].items()]
    lines.append("links (events written, not yet acknowledged downstream):")
    lines += [f"  {name:<26} {lag}" for name, lag in report["lag"].items()]
    lines += render_stuck(report["stuck"])
    if "frontends" in report:
        lines.append("frontends (HAProxy, checked on each replica's /ready):")
        lines += [f"  {name:<12} {f['state']} at {f['url']}" for name, f in report["frontends"].items()]
    if "cluster" in report:
        cluster = report["cluster"]
        lines.append(f"{report['topology']} cluster:")
        lines += ["  " + line for line in format_report(cluster).splitlines()]
        lines += ["  problems:", *(f"    {p}" for p in cluster["problems"])] if cluster["problems"] \
            else ["  cluster healthy"]
    problems = report.get("link_problems", {})
    if problems:
        lines.append("link problems (the sender's /ready is false until resolved):")
        titles = {link.name: link.title for link in SENDS.values()}
        lines += [f"  {titles.get(link, link):<26} {describe_problem(link, p)}" for link, p in problems.items()]
    return "\n".join(lines)


def main(as_json: bool, settings: StackSettings) -> int:
    report = collect(settings)
    print(json.dumps(report, indent=2) if as_json else render(report))
    healthy = all(s.startswith("up") for s in report["servers"].values()) and all(
        d["state"] == "up" for d in report["daemons"].values()) and not report["link_problems"] \
        and not report.get("cluster", {}).get("problems") \
        and all(f["state"] == "up" for f in report.get("frontends", {}).values())
    return 0 if healthy else 3


def watch_lag(every: float, settings: StackSettings) -> int:
    """One JSON line ``{"at": unix seconds, "lag": {...}}`` every ``every`` seconds, the lag read as
    ``status`` reads it (each producer's ``stream_state()``, the portal queue's and dead-letter queue's
    depth). Ends when stdout closes or the parent process goes away (the portal that started it)."""
    import os
    import time

    env = daemon_env(settings)
    parent = os.getppid()

    async def loop() -> None:
        while os.getppid() == parent:
            started = time.time()
            print(json.dumps({"at": round(started, 3), "lag": await _lags(env)}), flush=True)
            await asyncio.sleep(max(0.0, every - (time.time() - started)))

    try:
        asyncio.run(loop())
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0
