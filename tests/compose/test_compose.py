"""docker-compose.yml for real, with podman: the seed's checks and a drill against the containerised HA topology.

``make test-compose`` builds the images (deploy/docker/build.sh) and runs this module with ``-m compose``. The
module brings the compose file up under its own project name on host ports 19100-19199, waits until every
container is healthy, and takes everything down again (containers, network, volumes), also on failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from deploy.ops.drill.audit import audit, write_gaps
from deploy.ops.drill.cluster_faults import state_transfer
from deploy.ops.drill.load import Load
from deploy.runtime.amqp import Names

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("TICKETFLOW_COMPOSE_PROJECT", "tfcompose-test")
PORTS = {"reservation": 19183, "billing": 19184, "bridge": 19185, "portal": 19186, "stats": 19104}
UP_TIMEOUT = 600  # podman-compose up hangs instead of failing without a working runtime: bounded
HEALTHY_TIMEOUT = 420
SERVICES = ["etcd1", "etcd2", "etcd3", "pg1", "pg2", "pg3", "galera1", "galera2", "galera3", "rabbit1", "rabbit2",
            "rabbit3", "haproxy", "reservation-1", "reservation-2", "billing-1", "billing-2", "bridge", "portal"]


def compose_cmd() -> list[str]:
    found = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    return [found, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")]


def podman(*args: str, timeout: float = 60, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def containers() -> dict[str, str]:
    """service -> container name, for this project's containers."""
    out = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "json")
    return {c["Labels"]["com.docker.compose.service"]: c["Names"][0] for c in json.loads(out or "[]")}


def state(name: str) -> dict:
    return json.loads(podman("inspect", name))[0]["State"]


def healthy(name: str) -> bool:
    """Runs the image's HEALTHCHECK now (podman schedules it with systemd timers, which this machine lacks)."""
    return subprocess.run(["podman", "healthcheck", "run", name], capture_output=True, timeout=30).returncode == 0


def wait_for(what: str, condition, timeout: float, pause: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def get_json(url: str, timeout: float = 3.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def url(name: str) -> str:
    return f"http://127.0.0.1:{PORTS[name]}"


def patroni_cluster(names: dict[str, str]) -> dict:
    for service in ("pg1", "pg2", "pg3"):
        out = podman("exec", names[service], "curl", "-fsS", "--max-time", "2", "http://127.0.0.1:8008/cluster",
                     check=False)
        if out:
            return json.loads(out)
    return {"members": []}


def leader(names: dict[str, str]) -> str | None:
    members = patroni_cluster(names)["members"]
    return next((m["name"] for m in members if m["role"] == "leader" and m["state"] == "running"), None)


def down() -> None:
    subprocess.run([*compose_cmd(), "down", "-v", "-t", "5"], capture_output=True, timeout=300)
    leftovers = containers()
    if leftovers:
        podman("rm", "-f", "-v", *leftovers.values(), check=False, timeout=120)
    for volume in podman("volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={PROJECT}",
                         check=False).split():
        podman("volume", "rm", "-f", volume, check=False)


def dump_logs(names: dict[str, str]) -> None:
    for service, name in sorted(names.items()):
        log = subprocess.run(["podman", "logs", "--tail", "15", name], capture_output=True, text=True, timeout=30)
        print(f"--- {service} ({state(name).get('Status')})\n{log.stdout[-3000:]}{log.stderr[-3000:]}")


@pytest.fixture(scope="module")
def stack():
    if os.environ.get("TICKETFLOW_COMPOSE_REUSE") == "1":  # a stack already up under PROJECT: use it, leave it up
        names = containers()
        assert set(SERVICES) <= set(names), f"TICKETFLOW_COMPOSE_REUSE=1 but not up: {set(SERVICES) - set(names)}"
        yield names
        return
    env = dict(os.environ, TICKETFLOW_DB_PASSWORD=secrets.token_hex(12),
               TICKETFLOW_ERLANG_COOKIE=secrets.token_hex(16).upper(), TICKETFLOW_COMPOSE_BIND="127.0.0.1",
               **{f"TICKETFLOW_COMPOSE_{name.upper()}_PORT": str(port) for name, port in PORTS.items()})
    down()  # a previous run killed before its teardown
    started = time.monotonic()
    try:
        # --no-deps: podman 4.3 cannot start a container whose --requires chain is longer than one ("not found
        # in input list"), and ignores health conditions anyway; the containers wait for what they need themselves.
        up = subprocess.run([*compose_cmd(), "up", "-d", "--no-build", "--no-deps"], env=env, capture_output=True, text=True,
                            timeout=UP_TIMEOUT)
        assert up.returncode == 0, f"podman-compose up failed: {up.stdout[-3000:]}{up.stderr[-3000:]}"
        names = containers()
        assert set(SERVICES) | {"init"} <= set(names), f"containers missing: {set(SERVICES) - set(names)}"
        try:
            pending = list(SERVICES)

            def all_healthy() -> bool:
                pending[:] = [s for s in pending if not (state(names[s]).get("Running") and healthy(names[s]))]
                return not pending

            wait_for(f"every container healthy (still waiting: {pending})", all_healthy, HEALTHY_TIMEOUT, 2)
            init = state(names["init"])
            assert init.get("Status") == "exited" and init.get("ExitCode") == 0, f"init: {init}"
        except AssertionError:
            dump_logs(names)
            raise
        print(f"compose stack healthy after {time.monotonic() - started:.0f}s")
        yield names
    finally:
        down()


def operator_token(names: dict[str, str]) -> str:
    return podman("exec", names["reservation-1"], "cat", "/var/lib/ticketflow/keys/services/operator.token").strip()


def test_instance_alternates_between_the_replicas(stack):
    for daemon in ("reservation", "billing"):
        seen = [get_json(f"{url(daemon)}/api/instance")["instance"] for _ in range(6)]
        assert set(seen) == {f"{daemon}-1", f"{daemon}-2"}, f"{daemon} answered from {seen}"


def test_a_purchase_end_to_end(stack):
    async def buy() -> tuple[dict, dict]:
        load = Load({"reservation": url("reservation"), "billing": url("billing")}, operator_token(stack),
                    buyers=1, probers=0, timeout=10, purchase_deadline=60)
        async with load.open():
            event_id, seats = await load.create_event(100)
            await load.purchase(seats[0], f"compose-{load.run_id}")
            final = await load.final_state(event_id)
        return load.history.as_dicts()[1][0], final

    purchase, final = asyncio.run(buy())
    assert purchase["hold"] == "ok" and purchase["pay"] == "ok", purchase
    assert purchase["finalized"], "the portal never finalized the sale (reservation not confirmed)"
    assert final["seats"][purchase["seat_id"]] == "sold"
    # The portal consumed the sale from the RabbitMQ cluster's quorum queue.
    ready = get_json(f"{url('portal')}/ready")
    assert ready, ready


def test_primary_stopped_writes_continue(stack):
    """The seed's check: stop the PostgreSQL primary's container; holds succeed again on a new primary."""
    old = wait_for("a Patroni leader", lambda: leader(stack), 60)
    podman("stop", "-t", "10", stack[old], timeout=60)
    try:
        new = wait_for("a new Patroni leader", lambda: (lambda n: n if n and n != old else None)(leader(stack)), 60)

        async def hold() -> dict:
            load = Load({"reservation": url("reservation"), "billing": url("billing")}, operator_token(stack),
                        buyers=1, probers=0, timeout=5, purchase_deadline=60)
            async with load.open():
                # The first write after the stop may meet a pool still on the old primary (503): retry it, bounded.
                deadline = time.monotonic() + 30
                while True:
                    try:
                        _, seats = await load.create_event(100)
                        break
                    except RuntimeError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.5)
                await load.purchase(seats[0], f"compose-stop-{load.run_id}")
            return load.history.as_dicts()[1][0]

        purchase = asyncio.run(hold())
        assert purchase["hold"] == "ok" and purchase["pay"] == "ok" and purchase["finalized"], (new, purchase)
    finally:
        podman("start", stack[old], timeout=60)
    wait_for(f"{old} streaming again", lambda: any(m["name"] == old and m["state"] in ("running", "streaming")
                                                   for m in patroni_cluster(stack)["members"]), 120)


def kill_under_load(stack, container: str, took_over, what: str, probers: int = 1) -> dict:
    """SIGKILL ``container`` 3 s into a purchase load (deploy/ops/drill/load.py), wait until ``took_over()`` names
    what replaced it (``what`` if it never does), keep the load on 5 s more, let the paid sales settle and audit.
    Facts: ``fault_at`` (the load's clock), ``killed_at`` (unix time), ``took_over``, ``took_over_after_s``,
    ``settled``, ``audit``, ``gaps`` (write_gaps since the kill), ``ops`` (the load's writes)."""
    facts: dict = {}

    async def drill() -> None:
        load = Load({"reservation": url("reservation"), "billing": url("billing")}, operator_token(stack),
                    buyers=4, probers=probers, timeout=3)
        async with load.open():
            event_id, seats = await load.create_event(1000)
            buying = asyncio.create_task(load.run(seats))
            await asyncio.sleep(3)  # load under way before the fault (a duration, not a synchronisation)
            facts["fault_at"], facts["killed_at"] = load.history.now(), time.time()
            await asyncio.to_thread(podman, "kill", "-s", "KILL", container)
            facts["took_over"] = await asyncio.to_thread(wait_for, what, took_over, 60, 0.25)
            facts["took_over_after_s"] = round(time.time() - facts["killed_at"], 2)
            await asyncio.sleep(5)  # the load keeps going on what took over for a while
            load.stop()
            await asyncio.wait_for(buying, 180)
            facts["settled"] = await load.settle(90)
            final = await load.final_state(event_id)
        ops, purchases = load.history.as_dicts()
        facts.update(audit=audit(purchases, final), gaps=write_gaps(ops, since=facts["fault_at"]), ops=ops)

    asyncio.run(drill())
    return facts


def test_drill_primary_killed_under_purchase_load(stack):
    """SIGKILL the Patroni leader's container under purchase load: nothing lost, duplicated or double-sold."""
    old = wait_for("a Patroni leader", lambda: leader(stack), 60)
    facts = kill_under_load(stack, stack[old], lambda: (lambda n: n if n and n != old else None)(leader(stack)),
                            "a new Patroni leader")
    assert facts["settled"], "paid sales not finalized after the failover"
    result, gaps = facts["audit"], facts["gaps"]
    print(json.dumps({"drill": "compose pg primary kill", "audit": result, **gaps}, indent=1))
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["double_sold"] == 0, result["details"]
    assert result["acknowledged_purchases"] > 0, result
    podman("start", stack[old], timeout=60)
    wait_for(f"{old} back in the cluster", lambda: any(m["name"] == old and m["state"] in ("running", "streaming")
                                                       for m in patroni_cluster(stack)["members"]), 180)


# --- Galera: status, the writer killed under load, the relay lease through it ---------------------------
# Both billing replicas reach Galera through HAProxy's writer port here (one node at a time), so the relay lease
# below is exercised through a writer change, not across two nodes at once: tests/ha/test_galera_lease.py (make
# test) is the proof with two replicas on two different Galera nodes.

GALERA = ["galera1", "galera2", "galera3"]
RABBITS = ["rabbit1", "rabbit2", "rabbit3"]
WSREP = ("wsrep_local_state", "wsrep_local_state_comment", "wsrep_cluster_status", "wsrep_cluster_size")


def mariadb(container: str, client_cnf: str, sql: str) -> str | None:
    """One statement with the mariadb client inside ``container`` (its port 3306), or None if it failed."""
    result = subprocess.run(["podman", "exec", container, "mariadb", f"--defaults-extra-file={client_cnf}",
                             "--protocol=tcp", "-h", "127.0.0.1", "-P", "3306", "--connect-timeout=2", "-N", "-B",
                             "-e", sql], capture_output=True, text=True, timeout=15)
    return result.stdout if result.returncode == 0 else None


def galera_status(names: dict[str, str], node: str) -> dict[str, str]:
    """The node's wsrep status ({} when it does not answer), asked inside its container."""
    wanted = ", ".join(f"'{v}'" for v in WSREP)
    out = mariadb(names[node], "/run/mysqld/galera-client.cnf",
                  f"SHOW GLOBAL STATUS WHERE Variable_name IN ({wanted})")
    return dict(line.split("\t", 1) for line in (out or "").splitlines() if "\t" in line)


def synced_in_full_cluster(status: dict[str, str]) -> bool:
    return (status.get("wsrep_local_state") == "4" and status.get("wsrep_cluster_status") == "Primary"
            and status.get("wsrep_cluster_size") == str(len(GALERA)))


def galera_writer(names: dict[str, str]) -> str | None:
    """The node HAProxy's Galera writer port sends to now (asked through that port, inside the haproxy container)."""
    out = mariadb(names["haproxy"], "/run/haproxy-tf/galera-client.cnf", "SELECT @@wsrep_node_name")
    return (out or "").strip() or None


def other_writer(names: dict[str, str], old: str) -> str | None:
    new = galera_writer(names)
    return new if new and new != old else None


def logs_since(name: str, since: float) -> str:
    """The container's output (stdout and stderr interleaved) since the unix time ``since``."""
    return subprocess.run(["podman", "logs", "--since", str(int(since) - 1), name], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=30).stdout


def ensure_started(name: str) -> bool:
    """Starts a killed container (unless its restart policy already did); True if this call started it."""
    if state(name).get("Running"):
        return False
    podman("start", name, timeout=120)
    return True


# Runs inside billing-1 (python is the image's): both replicas' /ready at the same moment every 0.1 s, one JSON
# line [unix time, billing-1's relay, billing-2's relay] each (None: no answer), until stdin closes or the deadline.
RELAY_SAMPLER = r"""
import json, sys, threading, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
hosts, deadline = sys.argv[2:], time.time() + float(sys.argv[1])
closed = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
def relay(host):
    try:
        with urllib.request.urlopen(f"http://{host}:8080/ready", timeout=0.5) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        body = e.read()  # 503 while the database is away: the checks still say what the relay does
    except Exception:
        return None
    try:
        return json.loads(body)["checks"]["relay"]
    except Exception:
        return None
pool = ThreadPoolExecutor(len(hosts))
while time.time() < deadline and not closed.is_set():
    print(json.dumps([time.time(), *pool.map(relay, hosts)]), flush=True)
    closed.wait(0.1)
"""


class RelaySampler:
    """Both billing replicas' relay state (their /ready checks, as tests/support/lease_scenario.py reads them),
    sampled in pairs from inside billing-1 over the compose network while a fault runs."""

    def __init__(self, names: dict[str, str], limit_s: float = 600) -> None:
        self.proc = subprocess.Popen(["podman", "exec", "-i", names["billing-1"], "python", "-u", "-c",
                                      RELAY_SAMPLER, str(limit_s), "billing-1", "billing-2"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.samples: list[list] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.samples.append(json.loads(line))
            except ValueError:
                pass

    def latest(self) -> list | None:
        return self.samples[-1] if self.samples else None

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(5)


def one_relay_active(sample: list | None) -> bool:
    return bool(sample) and sorted(sample[1:]) == ["active", "standby"]


def relay_summary(samples: list[list], since: float) -> dict:
    """Who relayed before and after ``since`` (unix time); the span of the samples after it in which none did."""
    def holders(rows: list[list]) -> list[str]:
        return sorted({name for row in rows for name, s in zip(("billing-1", "billing-2"), row[1:]) if s == "active"})

    after = [row for row in samples if row[0] >= since]
    idle = [row[0] for row in after if "active" not in row[1:]]
    return {"samples": len(samples), "active_before": holders([r for r in samples if r[0] < since]),
            "active_after": holders(after), "no_relay_span_s": round(idle[-1] - idle[0], 2) if idle else 0.0}


def test_galera_cluster_primary_with_three_synced_nodes(stack):
    statuses = {n: galera_status(stack, n) for n in GALERA}
    assert all(synced_in_full_cluster(s) for s in statuses.values()), statuses
    assert galera_writer(stack) in GALERA


@pytest.fixture(scope="module")
def galera_writer_killed(stack) -> dict:
    """SIGKILL the container HAProxy's Galera writer port routes to under purchase load, the relay states sampled
    throughout; restart it and wait for it to rejoin. The facts, for the tests below to judge."""
    old = wait_for("HAProxy routing to a Galera writer", lambda: galera_writer(stack), 60)
    sampler = RelaySampler(stack)
    facts: dict = {"old_writer": old}
    try:
        wait_for("the relay sampler's first pair", sampler.latest, 30, 0.2)

        facts.update(kill_under_load(stack, stack[old], lambda: other_writer(stack, old),
                                     "HAProxy routing the writes to another Galera node"))
        facts["new_writer"] = facts["took_over"]
        facts["payments_after_kill"] = sum(1 for o in facts.pop("ops") if o["kind"] == "pay"
                                           and o["outcome"] == "ok" and o["t0"] > facts["fault_at"])
        facts["restarted_by_test"] = ensure_started(stack[old])
        facts["rejoined"] = True
        try:
            wait_for(f"{old} Synced in a cluster of {len(GALERA)} again",
                     lambda: synced_in_full_cluster(galera_status(stack, old)), 180)
        except AssertionError:
            facts["rejoined"] = False
        facts["rejoin_s"] = round(time.time() - facts["killed_at"], 1)
        facts["status_after"] = {n: galera_status(stack, n) for n in GALERA}
        log = logs_since(stack[old], facts["killed_at"])
        facts["transfer"] = state_transfer(log)
        joined = re.findall(r"galera: \S+ joins the cluster \(writer (\S+); SST donors (\S*)\)", log)
        facts["joined_with"] = {"writer": joined[-1][0], "donors": joined[-1][1]} if joined else None
        facts["log_tail"] = log[-2000:]
        try:
            wait_for("one billing replica relaying again", lambda: one_relay_active(sampler.latest()), 60, 0.2)
        except AssertionError:
            pass  # judged by the relay test
    finally:
        sampler.stop()
    facts["relay_samples"] = sampler.samples
    print(json.dumps({"drill": "compose galera writer kill",
                      **{k: v for k, v in facts.items() if k not in ("relay_samples", "log_tail", "status_after")},
                      "relay": relay_summary(sampler.samples, facts["killed_at"])}, indent=1, default=str))
    return facts


def test_galera_writer_killed_under_purchase_load_loses_nothing(galera_writer_killed):
    facts = galera_writer_killed
    result = facts["audit"]
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["double_sold"] == 0, result["details"]
    assert result["acknowledged_purchases"] > 0, result
    assert facts["settled"], "paid sales not finalized after the writer kill"
    # Writes continue on another node: HAProxy moved the writer, and payments (MariaDB writes) succeeded after it.
    assert facts["new_writer"] in GALERA and facts["new_writer"] != facts["old_writer"], facts
    assert facts["payments_after_kill"] > 0, f"no payment succeeded after the kill: {facts['gaps']}"
    assert facts["gaps"]["by_kind"]["pay"]["write_gap_s"] is not None, f"payments never recovered: {facts['gaps']}"


def test_galera_killed_writer_rejoins(galera_writer_killed):
    facts = galera_writer_killed
    assert facts["rejoined"], f"{facts['old_writer']} did not rejoin: {facts['status_after']}\n{facts['log_tail']}"
    assert all(synced_in_full_cluster(s) for s in facts["status_after"].values()), facts["status_after"]
    # How it caught up (IST after --wsrep-recover's position, SST otherwise): read from its log, reported.
    assert facts["transfer"]["by"] in ("IST", "SST"), f"no state transfer in its log:\n{facts['log_tail']}"
    # deploy/docker/galera.sh asked HAProxy for the writer, and left it out of the SST donors (a blocked rsync
    # donor would be marked down and take the writes away).
    assert facts["joined_with"] and facts["joined_with"]["writer"] == facts["new_writer"], facts["joined_with"]
    assert facts["new_writer"] not in facts["joined_with"]["donors"].split(","), facts["joined_with"]
    print(f"{facts['old_writer']} rejoined by {facts['transfer']['by']} from {facts['transfer']['donor']}")


def test_relay_lease_never_both_active_through_the_writer_kill(galera_writer_killed):
    samples = galera_writer_killed["relay_samples"]
    killed_at = galera_writer_killed["killed_at"]
    assert len(samples) > 50 and samples[0][0] < killed_at < samples[-1][0], f"{len(samples)} samples"
    both = [s for s in samples if s[1] == "active" and s[2] == "active"]
    assert not both, f"both billing replicas relaying at once: {both[:5]}"
    assert any("active" in s[1:] for s in samples if s[0] < killed_at), "no replica relaying before the kill"
    assert one_relay_active(samples[-1]), f"not exactly one replica relaying after the rejoin: {samples[-5:]}"


# --- RabbitMQ: the portal queue's leader killed under bridge/portal load ---------------------------------------


def rabbitmqctl(names: dict[str, str], *args: str, skip: str | None = None) -> object | None:
    """JSON output of a rabbitmqctl command, asked of the first running node that answers (not ``skip``)."""
    for node in RABBITS:
        if node == skip or not state(names[node]).get("Running"):
            continue
        result = subprocess.run(["podman", "exec", names[node], "rabbitmqctl", "-q", *args, "--formatter", "json"],
                                capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            try:
                return json.loads(result.stdout)
            except ValueError:
                continue
    return None


def queues(names: dict[str, str], skip: str | None = None) -> dict[str, dict]:
    rows = rabbitmqctl(names, "list_queues", "name", "type", "leader", "members", "online", "messages", skip=skip)
    return {r["name"]: r for r in rows or []}


def test_rabbitmq_cluster_runs_the_quorum_queues_on_three_nodes(stack):
    status = rabbitmqctl(stack, "cluster_status") or {}
    assert sorted(status.get("running_nodes", [])) == [f"rabbit@{n}" for n in RABBITS], status
    portal = queues(stack).get(Names().portal_queue)
    assert portal and portal["type"] == "quorum" and len(portal["online"]) == len(RABBITS), portal


def test_rabbitmq_portal_queue_leader_killed_under_load(stack):
    """SIGKILL the RabbitMQ node leading the portal's quorum queue while purchases flow through billing -> bridge
    -> RabbitMQ -> portal: nothing lost or duplicated (audit), no dead letters, the node rejoins, all members
    online."""
    names = Names()
    leader = wait_for("the portal queue's leader", lambda: (queues(stack).get(names.portal_queue) or {})
                      .get("leader"), 60)
    victim = leader.split("@", 1)[1]
    facts: dict = {"victim": victim}

    def new_leader() -> str | None:
        found = (queues(stack, skip=victim).get(names.portal_queue) or {}).get("leader")
        return found if found and found != leader else None

    facts.update(kill_under_load(stack, stack[victim], new_leader, "a new portal queue leader", probers=0))
    facts["new_leader"] = facts.pop("took_over")
    facts.pop("ops")
    facts["restarted_by_test"] = ensure_started(stack[victim])

    def rejoined() -> dict | None:
        portal = queues(stack).get(names.portal_queue) or {}
        return portal if leader in portal.get("online", []) and portal["online"] == portal["members"] else None

    portal = wait_for(f"{leader} back online in the portal queue", rejoined, 180, 2)
    running = (rabbitmqctl(stack, "cluster_status") or {}).get("running_nodes", [])
    dead = (queues(stack).get(names.dead_letter_queue) or {}).get("messages")
    print(json.dumps({"drill": "compose rabbitmq portal leader kill", **facts, "running_nodes": running,
                      "dead_letters": dead, "rejoined_s": round(time.time() - facts["killed_at"], 1)},
                     indent=1, default=str))
    result = facts["audit"]
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["double_sold"] == 0, result["details"]
    assert result["acknowledged_purchases"] > 0 and facts["settled"], result
    assert dead == 0, f"{dead} dead letters"
    assert sorted(running) == [f"rabbit@{n}" for n in RABBITS], running
    assert sorted(portal["online"]) == sorted(portal["members"]) and len(portal["members"]) == len(RABBITS), portal
