"""`ticketflow run all --topology ha`: two reservation and two billing replicas behind HAProxy, kept running.

One module-scoped setup (an HA stack in a private directory on the fixed HA ports, then
`run all --topology ha` on free ports: HAProxy's daemon frontends included, so a running
`make run` is never in the way); the tests then share it, in file order.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from deploy.ops.stack import process
from tests.ha.test_drill_failover import assert_clean
from tests.ha.test_ha_stack import HA_PORTS, listening
from tests.support.stack import free_port, fresh_mariadb_database
from tests.support.supervised_ha import cli, supervised_ha

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PORTS = ("RESERVATION", "BILLING", "BRIDGE", "PORTAL", "BRIDGE_LINK")


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def wait_for(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} never happened within {timeout:.0f}s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    busy = [p for p in HA_PORTS if listening(p)]
    assert not busy, f"another HA stack (or something else) listens on the HA ports {busy}; stop it first"
    root = tmp_path_factory.mktemp("replicas")
    maria = fresh_mariadb_database("tf_ha_replicas")
    loop = asyncio.new_event_loop()  # one loop for the whole module: asyncio.run would finalize the database's generator
    ports = {name: free_port() for name in PORTS}
    env = dict(os.environ, TICKETFLOW_STACK_DIR=str(root), TICKETFLOW_HA_STACK_DIR=str(root / "ha"),
               TICKETFLOW_MARIADB_DSN=loop.run_until_complete(maria.__aenter__()),
               TICKETFLOW_AMQP_PREFIX=f"tf-ha-replicas-{os.getpid()}",
               TICKETFLOW_RESERVATION_REPLICA_PORTS=f"{free_port()},{free_port()}",
               TICKETFLOW_BILLING_REPLICA_PORTS=f"{free_port()},{free_port()}",
               TICKETFLOW_BILLING_LINK_REPLICA_PORTS=f"{free_port()},{free_port()}",
               **{f"TICKETFLOW_{name}_PORT": str(port) for name, port in ports.items()})
    env.pop("TICKETFLOW_PG_DSN", None)
    env.pop("TICKETFLOW_PORTAL_PG_DSN", None)

    try:
        with supervised_ha(env, root, extra_lines=2) as lines:
            yield {"env": env, "root": root, "ports": ports, "lines": lines, "ticketflow": cli(env)}
    finally:
        loop.run_until_complete(maria.__aexit__(None, None, None))
        loop.close()


def frontend(running, daemon: str) -> str:
    return f"http://127.0.0.1:{running['ports'][daemon.upper()]}"


def test_both_replicas_of_each_daemon_answer_through_its_haproxy_frontend(running):
    for daemon in ("reservation", "billing"):
        answered = [get(frontend(running, daemon) + "/api/instance")[1]["instance"] for _ in range(6)]
        assert set(answered) == {f"{daemon}-1", f"{daemon}-2"}, (daemon, answered)
    # Only one relay per stream is active, whichever replica holds the lock.
    relays = [get(f"http://127.0.0.1:{port}/ready")[1]["checks"]["relay"]
              for port in running["env"]["TICKETFLOW_RESERVATION_REPLICA_PORTS"].split(",")]
    assert sorted(relays) == ["active", "standby"], relays


def test_a_purchase_goes_through_end_to_end_through_the_frontends(running):
    lines = running["lines"]
    script = "".join(lines[next(i for i, line in enumerate(lines) if line.startswith("tf()")):])
    pasted = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, env=running["env"], check=False)
    out = pasted.stdout.splitlines()
    assert out[0].startswith("user ") and out[1].startswith("reservation "), pasted.stdout + pasted.stderr
    assert json.loads(out[2])["error"]["code"] == "SEAT_UNAVAILABLE"
    assert out[4] == "pending"  # the hold crossed to a billing replica over the link
    assert out[6].startswith("ticket ")
    assert out[7] == "confirmed"  # billing -> bridge -> RabbitMQ -> portal -> reservation
    assert out[8].endswith(": sold")
    assert out[9] == "purchase_confirmed"


def test_sigkill_of_a_reservation_replica_costs_at_most_one_retried_request_and_it_is_restarted(running):
    pidfile = running["root"] / "daemons" / "reservation-1.pid"
    killed = process.running_pid(pidfile)
    assert killed is not None
    url = frontend(running, "reservation") + "/api/instance"
    failures, answered, retried_ok = 0, [], 0
    process.kill(pidfile)
    deadline = time.monotonic() + 20
    # Requests keep going through the frontend while the replica is dead and until it is back.
    while not (process.running_pid(pidfile) not in (None, killed) and "reservation-1" in answered[-4:]):
        assert time.monotonic() < deadline, f"reservation-1 was not restarted and back behind HAProxy: {answered}"
        try:
            answered.append(get(url)[1]["instance"])
        except (OSError, KeyError):
            failures += 1
            answered.append(get(url)[1]["instance"])  # the one retry a client makes: it must succeed
            retried_ok += 1
    assert failures <= 1, f"{failures} requests failed through the frontend"
    assert "reservation-2" in answered
    status = json.loads(running["ticketflow"]("status", "--topology", "ha", "--json").stdout)
    assert status["daemons"]["reservation-1"]["restarts"] == 1, status["daemons"]
    assert status["daemons"]["reservation-1"]["last_exit"] == "killed by SIGKILL"
    assert status["daemons"]["reservation-2"]["restarts"] == 0


def test_status_lists_every_replica_the_frontends_and_the_cluster_roles(running):
    result = wait_for(lambda: (r := running["ticketflow"]("status", "--topology", "ha", "--json")).returncode == 0
                      and r, "status --topology ha exiting 0 (everything up)")
    report = json.loads(result.stdout)
    daemons = report["daemons"]
    assert sorted(daemons) == ["billing-1", "billing-2", "bridge", "portal", "reservation-1", "reservation-2"]
    assert all(d["state"] == "up" and d["pid"] and d["instance"] == name for name, d in daemons.items()), daemons
    assert report["frontends"]["reservation"]["state"] == report["frontends"]["billing"]["state"] == "up"
    roles = sorted(m["role"] for m in report["cluster"]["postgres"])
    assert roles == ["leader", "replica", "sync_standby"], report["cluster"]["postgres"]
    assert len(report["cluster"]["etcd"]) == 3 and report["cluster"]["problems"] == []
    backends = {(b["proxy"], b["server"]): b["status"] for b in report["cluster"]["haproxy"]}
    assert {backends[("reservation", f"reservation{n}")] for n in (1, 2)} == {"UP"}, backends
    assert {backends[("billing", f"billing{n}")] for n in (1, 2)} == {"UP"}, backends
    assert {"pg1", "etcd1", "haproxy", "mariadb"} <= set(report["servers"])

    text = running["ticketflow"]("status", "--topology", "ha").stdout
    assert "reservation-2" in text and "sync_standby" in text and "reservation/reservation1" in text, text


# --- the drills against this supervised stack (`ticketflow drill ... --topology ha`, as an operator runs them) ---


def drill(running, *args: str) -> dict:
    """Run ``ticketflow drill`` against the running stack; its JSON report (the table is printed for -s)."""
    out = running["root"] / f"drill-{'-'.join(args)}.json"
    result = running["ticketflow"]("drill", *args, "--topology", "ha", "--duration", "3", "--buyers", "4",
                                   "--json-out", str(out), timeout=240)
    print(result.stdout.split("\n\n")[0])
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


def every_replica_up(running) -> dict:
    report = json.loads(running["ticketflow"]("status", "--topology", "ha", "--json").stdout)
    assert all(d["state"] == "up" for d in report["daemons"].values()), report["daemons"]
    assert report["cluster"]["problems"] == [], report["cluster"]["problems"]
    return report["daemons"]


def test_lb_replica_drill_costs_at_most_one_retried_write_per_killed_replica_and_loses_nothing(running):
    before = every_replica_up(running)
    report = drill(running, "lb-replica")

    assert_clean(report)
    victims = report["victims"]
    assert [v["name"].rsplit("-", 1)[0] for v in victims] == ["reservation", "billing"], victims
    for v in victims:
        assert v["restarted"] and v["up_in_haproxy_s"] is not None, v  # restarted and UP in HAProxy again
        assert v["failed_writes"] <= 1 and v["failed_then_retried_ok"] == v["failed_writes"], v
    assert report["writes"]["failed"] + report["writes"]["unknown"] <= len(victims), report["errors"]
    after = every_replica_up(running)
    for v in victims:
        assert after[v["name"]]["restarts"] == before[v["name"]]["restarts"] + 1, (v["name"], after)
        assert after[v["name"]]["pid"] != v["pid"]


def test_kill_drill_restarts_a_killed_daemon_and_loses_nothing(running):
    before = every_replica_up(running)
    report = drill(running, "kill", "bridge")

    assert_clean(report)
    [victim] = report["victims"]
    assert victim["name"] == "bridge" and victim["restarted"] and victim["serving_again_s"] is not None, victim
    after = every_replica_up(running)
    assert after["bridge"]["restarts"] == before["bridge"]["restarts"] + 1 and after["bridge"]["pid"] != victim["pid"]
