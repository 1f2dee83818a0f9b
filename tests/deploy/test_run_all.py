"""`ticketflow run all`: daemons start, the printed walkthrough works when pasted, Ctrl-C stops them."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from deploy.stack import process
from tests.support.stack import free_port

pytestmark = pytest.mark.stack


def test_run_all_prints_a_walkthrough_that_works_when_pasted(tmp_path):
    # Its own pid/log directory and HTTP port; the shared stack's servers (same ports) serve it.
    env = dict(os.environ, TICKETFLOW_STACK_DIR=str(tmp_path), TICKETFLOW_RESERVATION_PORT=str(free_port()),
               TICKETFLOW_BILLING_LINK_PORT=str(free_port()))
    supervisor = subprocess.Popen([sys.executable, "-m", "deploy.cli", "run", "all"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not any("DELETE" in line for line in lines):
            assert time.monotonic() < deadline, "no walkthrough printed:\n" + "".join(lines)
            line = supervisor.stdout.readline()
            assert line, "run all exited:\n" + "".join(lines)
            lines.append(line)
        commands = [line.strip() for line in lines if line.strip().startswith("curl")]
        assert len(commands) == 5
        pasted = subprocess.run(["bash", "-c", "\n".join(commands[:4])], capture_output=True, text=True, timeout=30)
        event, held, refused, seats = [json.loads(out) for out in pasted.stdout.splitlines()]
        assert event["seats"]["total"] == 260
        assert held["status"] == "held" and held["user_id"] == "alice"
        assert refused["error"]["code"] == "SEAT_UNAVAILABLE"
        assert held["seats"][0]["id"] in {s["id"] for s in seats["seats"]}
        release = subprocess.run(["bash", "-c", commands[4].replace("RESERVATION_ID", held["id"])],
                                 capture_output=True, text=True, timeout=30)
        assert json.loads(release.stdout)["status"] == "cancelled"
    finally:
        supervisor.send_signal(signal.SIGINT)  # what Ctrl-C sends
        supervisor.wait(30)
    assert process.running_pid(tmp_path / "daemons" / "reservation.pid") is None
