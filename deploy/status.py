"""``ticketflow status``: every server and daemon up or down, each link's lag, the portal's stuck messages.

Lag is "written but not yet acknowledged downstream": for the two TCP links
the producer's last sequence minus the receiver's acknowledged one, for the
broker hop the portal queue's depth (ready plus unacknowledged).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from deploy.runtime.amqp import Names
from deploy.stack import process
from deploy.stack.settings import StackSettings
from deploy.stack.topology import local
from deploy.supervisor import DAEMONS, daemon_dirs, daemon_env, daemon_port


def _probe(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return "up" if response.status == 200 else f"http {response.status}"
    except urllib.error.HTTPError as exc:
        return "not ready" if exc.code == 503 else f"http {exc.code}"
    except OSError:
        return "down"


async def _lags(env: dict[str, str]) -> dict[str, Any]:
    import aio_pika
    import asyncpg

    from deploy.runtime.mysql import MariaDsn, fetchone

    lags: dict[str, Any] = {}
    try:
        conn = await asyncpg.connect(env["TICKETFLOW_PG_DSN"], timeout=3)
        try:
            row = await conn.fetchrow("SELECT last_seq, acked_seq FROM stream_heads WHERE stream = 'reservations'")
            lags["reservation -> billing"] = row["last_seq"] - row["acked_seq"] if row else "no stream yet"
        finally:
            await conn.close()
    except Exception as exc:
        lags["reservation -> billing"] = f"unknown ({type(exc).__name__})"
    try:
        import aiomysql

        dsn = MariaDsn.parse(env["TICKETFLOW_MARIADB_DSN"])
        conn = await aiomysql.connect(host=dsn.hosts[0][0], port=dsn.hosts[0][1], user=dsn.user,
                                      password=dsn.password, db=dsn.database, connect_timeout=3)
        try:
            row = await fetchone(conn, "SELECT last_seq, acked_seq FROM stream_heads WHERE stream = 'payments'")
            lags["billing -> bridge"] = row["last_seq"] - row["acked_seq"] if row else "no stream yet"
        finally:
            conn.close()
    except Exception as exc:
        lags["billing -> bridge"] = f"unknown ({type(exc).__name__})"
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
    pids, _ = daemon_dirs(settings)
    daemons = {}
    for spec in DAEMONS:
        pid = process.running_pid(pids / f"{spec.name}.pid")
        state = _probe(f"http://127.0.0.1:{daemon_port(spec, env)}/ready")
        daemons[spec.name] = {"state": state, "pid": pid}
    portal = next(spec for spec in DAEMONS if spec.name == "portal")
    return {"servers": local(settings).status(), "daemons": daemons, "lag": asyncio.run(_lags(env)),
            "stuck": stuck_messages(f"http://127.0.0.1:{daemon_port(portal, env)}")}


def render(report: dict[str, Any]) -> str:
    lines = ["servers:"]
    lines += [f"  {name:<12} {state}" for name, state in report["servers"].items()]
    lines.append("daemons:")
    lines += [f"  {name:<12} {d['state']}" + (f" (pid {d['pid']})" if d["pid"] else "")
              for name, d in report["daemons"].items()]
    lines.append("links (events written, not yet acknowledged downstream):")
    lines += [f"  {name:<26} {lag}" for name, lag in report["lag"].items()]
    lines += render_stuck(report["stuck"])
    return "\n".join(lines)


def main(as_json: bool, settings: StackSettings) -> int:
    report = collect(settings)
    print(json.dumps(report, indent=2) if as_json else render(report))
    healthy = all(s.startswith("up") for s in report["servers"].values()) and all(
        d["state"] == "up" for d in report["daemons"].values())
    return 0 if healthy else 3

