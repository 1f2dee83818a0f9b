"""`ticketflow run all`: daemons start, the printed walkthrough works when pasted, Ctrl-C stops them."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from deploy.ops.stack import process
from tests.support.stack import free_port, fresh_mariadb_database, fresh_pg_database

pytestmark = pytest.mark.stack


async def test_run_all_prints_a_walkthrough_that_works_when_pasted(tmp_path):
    async with fresh_pg_database("tf_runall") as pg, fresh_mariadb_database("tf_runall") as maria:
        # Its own pid/log directory, ports and databases; the shared stack's servers serve it.
        env = dict(os.environ, TICKETFLOW_STACK_DIR=str(tmp_path), TICKETFLOW_PG_DSN=pg,
                   TICKETFLOW_MARIADB_DSN=maria, TICKETFLOW_RESERVATION_PORT=str(free_port()),
                   TICKETFLOW_BILLING_PORT=str(free_port()), TICKETFLOW_BILLING_LINK_PORT=str(free_port()),
                   TICKETFLOW_BRIDGE_LINK_PORT=str(free_port()), TICKETFLOW_BRIDGE_PORT=str(free_port()),
                   TICKETFLOW_PORTAL_PORT=str(free_port()), TICKETFLOW_PORTAL_PG_DSN=pg,
                   TICKETFLOW_AMQP_PREFIX=f"tf-runall-{os.getpid()}")
        supervisor = subprocess.Popen([sys.executable, "-m", "deploy.ops.cli", "run", "all"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = []
            deadline = time.monotonic() + 60
            while not any("second says when" in line for line in lines):
                assert time.monotonic() < deadline, "no walkthrough printed:\n" + "".join(lines)
                line = supervisor.stdout.readline()
                assert line, "run all exited:\n" + "".join(lines)
                lines.append(line)
            lines += [supervisor.stdout.readline() for _ in range(4)]  # the two scans; step 9's comment and trace
            script = "".join(lines[next(i for i, l in enumerate(lines) if l.startswith("tf()")):])
            pasted = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)
            out = pasted.stdout.splitlines()
            assert out[0].startswith("user ") and out[1].startswith("reservation "), pasted.stdout + pasted.stderr
            assert json.loads(out[2])["error"]["code"] == "SEAT_UNAVAILABLE"
            assert json.loads(out[3])["error"]["code"] == "UNAUTHORIZED"  # no token, no hold
            assert out[4] == "pending"
            assert json.loads(out[5])["error"]["code"] == "ORDER_NOT_FOUND"  # Bob cannot see Alice's order
            assert out[6].startswith("ticket ") and len(out[6].split()[1]) == 43
            assert out[7] == "confirmed"
            assert out[8].startswith("seat ") and out[8].endswith(": sold")
            assert out[9] == "purchase_confirmed"
            assert json.loads(out[10])["seat_label"]
            assert json.loads(out[11])["error"]["code"] == "ALREADY_CHECKED_IN"
            # 9. ticketflow trace: the purchase's steps in all four daemons' logs
            traced = "\n".join(out[12:])
            assert traced.startswith("order "), pasted.stdout + pasted.stderr
            for daemon in ("reservation", "billing", "bridge", "portal"):
                assert f"  {daemon} " in traced, traced

            # ticketflow status: everything up, and every link drains to zero lag.
            deadline = time.monotonic() + 30
            while True:
                status = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "status", "--json"], env=env,
                                        capture_output=True, text=True, timeout=30)
                report = json.loads(status.stdout)
                if status.returncode == 0 and set(report["lag"].values()) == {0}:
                    break
                assert time.monotonic() < deadline, f"status never showed all up with zero lag: {report}"
                time.sleep(0.2)
            assert set(report["daemons"]) == {"reservation", "billing", "bridge", "portal"}
            assert report["stuck"] == {"count": 0, "oldest_seconds": 0.0}  # the portal retries nothing

            # ticketflow bench: every hop timed for every purchase, through the daemons' HTTP APIs.
            bench = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "bench", "--duration", "1",
                                    "--concurrency", "2", "--no-baseline", "--json-out", str(tmp_path / "bench.json")],
                                   env=env, capture_output=True, text=True, timeout=120)
            assert bench.returncode == 0, bench.stdout + bench.stderr
            figures = json.loads((tmp_path / "bench.json").read_text())
            purchases = figures["pay_latency_ms"]["n"]
            assert purchases > 0 and figures["errors"] == {}, figures
            for hop, timing in figures["propagation_ms"].items():
                assert timing["n"] == purchases and 0 <= timing["p50"] <= timing["p99"], (hop, figures)
        finally:
            supervisor.send_signal(signal.SIGINT)  # what Ctrl-C sends
            supervisor.wait(30)
        for name in ("reservation", "billing", "bridge", "portal"):
            assert process.running_pid(tmp_path / "daemons" / f"{name}.pid") is None


async def test_a_killed_daemon_is_restarted_and_stop_stops_everything(tmp_path):
    async with fresh_pg_database("tf_keep") as pg, fresh_mariadb_database("tf_keep") as maria:
        ports = {name: free_port() for name in ("RESERVATION", "BILLING", "BILLING_LINK", "BRIDGE_LINK", "BRIDGE",
                                                "PORTAL")}
        env = dict(os.environ, TICKETFLOW_STACK_DIR=str(tmp_path), TICKETFLOW_PG_DSN=pg,
                   TICKETFLOW_MARIADB_DSN=maria, TICKETFLOW_PORTAL_PG_DSN=pg,
                   TICKETFLOW_AMQP_PREFIX=f"tf-keep-{os.getpid()}",
                   **{f"TICKETFLOW_{name}_PORT": str(port) for name, port in ports.items()})
        supervisor = subprocess.Popen([sys.executable, "-m", "deploy.ops.cli", "run", "all"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        bridge_pid = tmp_path / "daemons" / "bridge.pid"
        bridge_ready = f"http://127.0.0.1:{ports['BRIDGE']}/ready"
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "daemons" / "restarts.json").exists():  # written once every daemon is ready
                assert supervisor.poll() is None and time.monotonic() < deadline, supervisor.stderr.read()
                time.sleep(0.1)
            killed = process.running_pid(bridge_pid)
            process.kill(bridge_pid)
            # One crashed daemon is no outage: it serves again, the others never stopped.
            deadline = time.monotonic() + 20
            while not (_ready(bridge_ready) and process.running_pid(bridge_pid) not in (None, killed)):
                assert supervisor.poll() is None and time.monotonic() < deadline, "bridge not restarted"
                time.sleep(0.05)
            status = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "status", "--json"], env=env,
                                    capture_output=True, text=True, timeout=30)
            daemons = json.loads(status.stdout)["daemons"]
            assert daemons["bridge"]["restarts"] == 1 and daemons["bridge"]["last_exit"] == "killed by SIGKILL"
            assert {d["restarts"] for name, d in daemons.items() if name != "bridge"} == {0}
            assert all(d["state"] == "up" for d in daemons.values()), daemons
            # The restart count reaches the daemon's metrics; the stack's Prometheus token may scrape them.
            scraper = (tmp_path / "keys" / "services" / "prometheus.token").read_text().strip()
            assert _restarts_metric(ports["BRIDGE"], scraper) == 1
            assert _restarts_metric(ports["RESERVATION"], scraper) == 0

            # `ticketflow stop` (make stop) stops the supervisor first, so nothing comes back.
            stop = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "stop", "--daemons-only"], env=env,
                                  capture_output=True, text=True, timeout=120)
            assert stop.returncode == 0, stop.stdout + stop.stderr
            assert supervisor.wait(30) == 0
            for name in ("reservation", "billing", "bridge", "portal"):
                assert process.running_pid(tmp_path / "daemons" / f"{name}.pid") is None, name
        finally:
            if supervisor.poll() is None:
                supervisor.send_signal(signal.SIGINT)
                supervisor.wait(30)
        assert "bridge killed by SIGKILL" in supervisor.stderr.read()


def _restarts_metric(port: int, token: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        families = text_string_to_metric_families(reply.read().decode())
    return next(f.samples[0].value for f in families if f.name == "ticketflow_process_restarts")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
