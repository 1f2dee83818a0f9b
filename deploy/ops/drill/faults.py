"""The faults a drill injects, and what "healthy" means for the stack they are injected into.

Each fault is a coroutine ``run(target, clock)`` that injects the fault, waits for the milestones that
show the system noticed and recovered (recording when each was first seen on ``clock``), and puts back
what it broke (a killed Patroni node is restarted and must rejoin as a replica). Everything blocking
(Patroni's REST API, HAProxy's stats, pid files) runs in a thread so the drill's load keeps going.

The daemon faults read the one list of daemon processes, ``deploy.ops.daemons.replicas`` (name, port,
pid file): a killed process is found by its pid file and watched on its own ``/ready``; a load-balanced
replica also on the HAProxy backend that routes to it. The restarting supervisor (``ticketflow run all``)
restarts what they kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.ops.daemons import Replica
from deploy.ops.stack import process
from deploy.ops.stack.topology import HATopology, report_problems

SYNC_ROLES = ("sync_standby", "synchronous_standby")
STANDBY_ROLES = ("replica", *SYNC_ROLES)
RUNNING_STATES = ("running", "streaming")


class DrillRefused(RuntimeError):
    """The drill will not run: the stack is not one it recognises, or not healthy to begin with."""


@dataclass
class Target:
    """What a drill drives and checks: the public URLs, a service token, the HA topology, the daemons."""

    urls: dict[str, str]
    token: str
    env: dict[str, str]  # the daemons' settings: stores and broker, for link lag
    topology: HATopology | None = None
    replicas: list[Replica] = field(default_factory=list)  # every daemon process: ``daemons.replicas``
    pids: Path = Path(".")  # where ``run all`` keeps their pid files (``<name>.pid``)
    supervised: bool = False  # a `run all` supervisor restarts killed daemons

    def pidfile(self, replica: Replica) -> Path:
        return replica.pidfile(self.pids)


class Clock:
    """Seconds since the fault was injected; the first time each milestone was seen."""

    def __init__(self) -> None:
        self.zero = time.monotonic()
        self.marks: dict[str, float] = {}

    def now(self) -> float:
        return time.monotonic() - self.zero

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, round(self.now(), 3))

    async def wait_for(self, name: str, condition: Callable[[], bool], timeout: float) -> bool:
        """Poll ``condition`` (in a thread) every 0.1 s; mark ``name`` when it first holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ok = await condition() if asyncio.iscoroutinefunction(condition) else await asyncio.to_thread(condition)
                assert not asyncio.iscoroutine(ok), f"{name}: pass the coroutine function, not a lambda"
            except Exception:  # an API that is itself down right now just means "not yet"
                ok = False
            if ok:
                self.mark(name)
                return True
            await asyncio.sleep(0.1)
        return False


# --- reading the HA stack ------------------------------------------------------------------


def members(topology: HATopology) -> list[dict[str, Any]]:
    from deploy.ops.stack.patroni import cluster

    return cluster(topology.nodes).get("members", [])


def leader(topology: HATopology) -> str | None:
    return next((m["name"] for m in members(topology) if m.get("role") == "leader"), None)


def backend_status(topology: HATopology, proxy: str, server: str) -> str | None:
    return next((b["status"] for b in topology.proxy.backends() if b["proxy"] == proxy and b["server"] == server),
                None)


def _rw_server(topology: HATopology) -> str | None:
    """The node HAProxy's read-write port routes to now (the one postgres_rw server UP), if any."""
    return next((b["server"] for b in topology.proxy.backends() if b["proxy"] == "postgres_rw"
                 and b["status"] == "UP"), None)


def _sync_standby(topology: HATopology) -> str | None:
    return next((m["name"] for m in members(topology) if m.get("role") in SYNC_ROLES
                 and m.get("state") in RUNNING_STATES), None)


def rejoined(topology: HATopology, name: str) -> bool:
    """``name`` follows the current leader again: a standby, running, on the leader's timeline."""
    cluster = members(topology)
    lead = next((m for m in cluster if m.get("role") == "leader"), None)
    me = next((m for m in cluster if m.get("name") == name), None)
    return bool(lead and me and me.get("role") in STANDBY_ROLES and me.get("state") in RUNNING_STATES
                and me.get("timeline") == lead.get("timeline"))


def cluster_problems(topology: HATopology) -> list[str]:
    """Patroni leader + sync standby, every node running, etcd quorum, every HAProxy backend where it belongs."""
    report = topology.report()
    problems = report_problems(report)
    lead = next((m["name"] for m in report["postgres"] if m.get("role") == "leader"), None)
    for m in report["postgres"]:
        if "error" not in m and m.get("state") not in RUNNING_STATES:
            problems.append(f"{m['name']} is {m.get('state')}")
    names = {n.name for n in topology.nodes}
    if {m.get("name") for m in report["postgres"]} != names:
        problems.append(f"Patroni members {sorted(m.get('name') for m in report['postgres'])}, want {sorted(names)}")
    for b in report["haproxy"]:
        if "error" in b:
            problems.append(b["error"])
        elif b["proxy"] == "postgres_ro" and b["server"] != lead and b["status"] != "UP":
            problems.append(f"HAProxy postgres_ro/{b['server']} is {b['status']}")
        elif not b["proxy"].startswith("postgres_") and b["status"] != "UP":  # incl. every Galera node
            problems.append(f"HAProxy {b['proxy']}/{b['server']} is {b['status']}")
    # Galera (every node Synced in one Primary component of all, a writer) is in report_problems; so are the
    # RabbitMQ nodes and quorum queue leaders. A rejoined node must also be back as a member of each queue.
    for q in (report.get("rabbitmq") or {}).get("quorum_queues", []):
        if q["online"] != q["members"]:
            problems.append(f"quorum queue {q['name']}: {len(q['online'])} of {len(q['members'])} members online")
    return problems


def ready(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def postmaster_pid(node) -> int | None:
    try:
        return int((node.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _sigkill(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def _node(topology: HATopology, name: str):
    return next(n for n in topology.nodes if n.name == name)


async def _kill_node(topology: HATopology, name: str) -> dict[str, Any]:
    """SIGKILL a node's Patroni and its postmaster (Patroni first, so it cannot restart PostgreSQL)."""
    node = _node(topology, name)
    patroni, postmaster = node.pid(), postmaster_pid(node)
    killed = {"patroni": _sigkill(patroni), "postmaster": _sigkill(postmaster)}
    await asyncio.to_thread(process.wait_exit, node.pidfile, 10.0)
    return {"victim": name, "patroni_pid": patroni, "postmaster_pid": postmaster, "killed": killed}


async def _restart_node(topology: HATopology, name: str) -> None:
    node = _node(topology, name)
    await asyncio.to_thread(node.start)  # Patroni: pg_rewind (use_pg_rewind) if the node diverged


# --- the faults ----------------------------------------------------------------------------------


class Fault:
    name = ""
    needs_ha = True
    what = ""

    def check(self, target: Target) -> None:
        """Raise DrillRefused if this fault cannot run against ``target``."""

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        raise NotImplementedError


class PgFailover(Fault):
    name, what = "pg-failover", "SIGKILL the PostgreSQL leader's postmaster and its Patroni; restart it as a replica"

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        topo = target.topology
        victim = await asyncio.to_thread(leader, topo)
        facts = await _kill_node(topo, victim)
        await clock.wait_for("detect", lambda: backend_status(topo, "postgres_rw", victim) != "UP", 30)
        await clock.wait_for("new_leader", lambda: leader(topo) not in (None, victim), 90)
        # The rest of the write gap's timeline: HAProxy routes writes to the new leader (after Patroni promoted
        # it and answers OPTIONS /primary); the first successful write is in the load's history.
        # and, under strict synchronous mode, its commits wait until a standby streams from it again.
        async def restart() -> None:
            await _restart_node(topo, victim)
            clock.mark("restarted_old_leader")

        await asyncio.gather(
            clock.wait_for("rw_routed", lambda: _rw_server(topo) not in (None, victim), 30),
            clock.wait_for("new_sync_standby", lambda: _sync_standby(topo) not in (None, victim), 60),
            restart())
        facts["rejoined"] = await clock.wait_for("old_leader_rejoined", lambda: rejoined(topo, victim), 120)
        facts["new_leader"] = await asyncio.to_thread(leader, topo)
        return facts


class PgSwitchover(Fault):
    name, what = "pg-switchover", "planned switchover to the synchronous standby through Patroni's REST API"

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        topo = target.topology
        cluster = await asyncio.to_thread(members, topo)
        old = next(m["name"] for m in cluster if m.get("role") == "leader")
        candidate = next(m["name"] for m in cluster if m.get("role") in SYNC_ROLES)
        port = _node(topo, old).rest_port
        # Patroni answers the POST only once the switchover is done (about 3 s): the milestones are watched
        # meanwhile, so they say when things happened, not when the call returned.
        request = asyncio.ensure_future(asyncio.to_thread(_post_json, port, "/switchover",
                                                          {"leader": old, "candidate": candidate}))

        async def watch(name: str, condition: Callable[[], bool], timeout: float) -> None:
            waiting = asyncio.ensure_future(clock.wait_for(name, condition, timeout))
            await asyncio.wait([request, waiting], return_when=asyncio.FIRST_COMPLETED)
            if request.done() and request.result()[0] != 200:
                waiting.cancel()
                raise RuntimeError(f"Patroni refused the switchover: {request.result()[0]} {request.result()[1]}")
            await waiting

        await watch("detect", lambda: leader(topo) == candidate, 60)
        await watch("rw_routed", lambda: backend_status(topo, "postgres_rw", candidate) == "UP", 30)
        status, answer = await request
        clock.mark("switchover_answered")
        if status != 200:
            raise RuntimeError(f"Patroni refused the switchover: {status} {answer}")
        rejoin = await clock.wait_for("old_leader_rejoined", lambda: rejoined(topo, old), 120)
        return {"old_leader": old, "new_leader": candidate, "rejoined": rejoin}


def _post_json(port: int, path: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class PgReplicaLoss(Fault):
    name, what = "pg-replica-loss", "SIGKILL the synchronous standby's postmaster and Patroni; restart it"

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        topo = target.topology
        victim = next(m["name"] for m in await asyncio.to_thread(members, topo) if m.get("role") in SYNC_ROLES)
        facts = await _kill_node(topo, victim)
        await clock.wait_for("detect", lambda: backend_status(topo, "postgres_ro", victim) != "UP", 30)
        await clock.wait_for("new_sync_standby", lambda: any(
            m.get("role") in SYNC_ROLES and m["name"] != victim for m in members(topo)), 60)
        await _restart_node(topo, victim)
        clock.mark("restarted_replica")
        facts["rejoined"] = await clock.wait_for("replica_rejoined", lambda: rejoined(topo, victim), 120)
        return facts


class KillDaemon(Fault):
    """SIGKILL one daemon process (a replica's name, or a daemon's: its first replica); the supervisor
    restarts it. Measured: when it serves its own ``/ready`` again, and behind HAProxy when it is UP there."""

    needs_ha = False

    def __init__(self, daemon: str) -> None:
        self.daemon = daemon
        self.name, self.what = f"kill {daemon}", f"SIGKILL the {daemon} daemon; the supervisor restarts it"

    def victim(self, target: Target) -> Replica | None:
        named = [r for r in target.replicas if r.name == self.daemon] or \
            [r for r in target.replicas if r.daemon == self.daemon]
        return named[0] if named else None

    def check(self, target: Target) -> None:
        victim = self.victim(target)
        if victim is None or process.running_pid(target.pidfile(victim)) is None:
            names = ", ".join(r.name for r in target.replicas) or "none"
            raise DrillRefused(f"no running {self.daemon} recorded in a pid file (daemons of this topology: "
                               f"{names}; start them with `ticketflow run all`)")
        if not target.supervised:
            raise DrillRefused("no `ticketflow run all` supervisor is running: nothing would restart the daemon")

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        victim = self.victim(target)
        # A replica behind HAProxy (under --topology ha) is also watched there: out, then UP again.
        backend = next(((proxy, server) for r, proxy, server in behind_haproxy(target) if r == victim), None)
        facts = await kill_and_wait(target, victim, clock, backend if target.topology is not None else None)
        if f"{victim.name}_respawned" in clock.marks:  # the supervisor noticed and started a new process
            clock.marks.setdefault("detect", clock.marks[f"{victim.name}_respawned"])
        return {"victims": [facts]}


def behind_haproxy(target: Target) -> list[tuple[Replica, str, str]]:
    """(replica, HAProxy proxy, server) of every daemon with several replicas: its frontend is a ``listen``
    section named after the daemon whose servers are ``<daemon><n>``, n counting the replicas in order
    (``deploy/ops/stack/haproxy.py`` renders them from the same ``ha_ports`` list ``daemons.replicas`` reads)."""
    by_daemon: dict[str, list[Replica]] = {}
    for replica in target.replicas:
        by_daemon.setdefault(replica.daemon, []).append(replica)
    return [(r, daemon, f"{daemon}{n}") for daemon, group in by_daemon.items() if len(group) > 1
            for n, r in enumerate(group, 1)]


def _ready_checks(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + "/ready", timeout=2) as response:
            return json.loads(response.read()).get("checks", {})
    except (OSError, ValueError):
        return {}


async def kill_and_wait(target: Target, victim: Replica, clock: Clock, backend: tuple[str, str] | None = None,
                        timeout: float = 60.0) -> dict[str, Any]:
    """SIGKILL ``victim``; wait until the supervisor's new process serves its own ``/ready`` again and, behind
    HAProxy (``backend`` = proxy, server), until HAProxy has it UP. Milestones ``<name>_...`` on ``clock``."""
    name, pidfile = victim.name, target.pidfile(victim)
    pid = process.running_pid(pidfile)
    killed_at = clock.now()
    _sigkill(pid)
    respawned, serving, down, up = (f"{name}_respawned", f"{name}_serving_again", f"{name}_down_in_haproxy",
                                    f"{name}_up_in_haproxy")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(process.running_pid, pidfile) not in (None, pid):
            clock.mark(respawned)
        if respawned in clock.marks and await asyncio.to_thread(ready, victim.url + "/ready", 1.0):
            clock.mark(serving)
        if backend is not None:
            try:
                status = await asyncio.to_thread(backend_status, target.topology, *backend) or ""
            except OSError:
                status = ""
            if not status.startswith("UP"):  # HAProxy no longer routes to it ("DOWN", "DOWN 1/2", ...)
                clock.mark(down)
            elif status == "UP" and serving in clock.marks:
                clock.mark(up)
        if serving in clock.marks and (backend is None or up in clock.marks):
            break
        await asyncio.sleep(0.05)

    def since_kill(mark: str) -> float | None:
        return round(clock.marks[mark] - killed_at, 3) if mark in clock.marks else None

    facts = {"name": name, "pid": pid, "killed_at_s": round(killed_at, 3), "restarted": serving in clock.marks,
             "serving_again_s": since_kill(serving)}
    if backend is not None:
        facts.update(haproxy=f"{backend[0]}/{backend[1]}", down_in_haproxy_s=since_kill(down),
                     up_in_haproxy_s=since_kill(up))
    return facts


class LbReplica(Fault):
    name, what = "lb-replica", "SIGKILL one reservation replica, then one billing replica, behind HAProxy"

    def check(self, target: Target) -> None:
        daemons = {r.daemon for r, _, _ in behind_haproxy(target)}
        if not {"reservation", "billing"} <= daemons:
            raise DrillRefused("no reservation and billing replicas behind HAProxy are registered (run "
                               "`ticketflow run all --topology ha` with replicas)")
        if not target.supervised:
            raise DrillRefused("no `ticketflow run all` supervisor is running: nothing would restart the replica")
        down = [r.name for r, _, _ in behind_haproxy(target) if process.running_pid(target.pidfile(r)) is None]
        if down:
            raise DrillRefused(f"replicas not running: {', '.join(down)}")

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        victims = []
        for daemon in ("reservation", "billing"):
            group = [(r, proxy, server) for r, proxy, server in behind_haproxy(target) if r.daemon == daemon]
            # The replica whose relay is active, if one is: its kill also hands the outbox relay over.
            checks = {r.name: await asyncio.to_thread(_ready_checks, r.url) for r, _, _ in group}
            replica, proxy, server = next((g for g in group if checks[g[0].name].get("relay") == "active"), group[0])
            facts = await kill_and_wait(target, replica, clock, (proxy, server))
            facts["relay_was_active"] = checks[replica.name].get("relay") == "active"
            victims.append(facts)
            seen = [clock.marks[m] for m in (f"{replica.name}_down_in_haproxy", f"{replica.name}_respawned")
                    if m in clock.marks]
            if seen:  # HAProxy took it out or (sooner, within HAProxy's two failed checks) the supervisor replaced it
                clock.marks.setdefault("detect", min(seen))
        return {"victims": victims}


FAULTS: dict[str, Callable[[], Fault]] = {
    "pg-failover": PgFailover, "pg-switchover": PgSwitchover, "pg-replica-loss": PgReplicaLoss,
    "lb-replica": LbReplica,
}

# The Galera and RabbitMQ faults register themselves here (FAULTS["mariadb-writer"], ...); imported last, so the
# names it takes from this module exist whichever of the two is imported first.
import deploy.ops.drill.cluster_faults  # noqa: E402,F401
