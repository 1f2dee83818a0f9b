"""Pid files: a recycled pid is never mistaken for the server we started."""

import os
import sys

from deploy.ops.stack import process


def test_a_live_recorded_process_is_found_and_stopped(tmp_path):
    pidfile = tmp_path / "p.pid"
    pid = process.spawn([sys.executable, "-c", "import time; time.sleep(60)"], pidfile, tmp_path / "log")
    assert process.running_pid(pidfile) == pid
    assert process.stop(pidfile, timeout=5)
    assert process.running_pid(pidfile) is None and not pidfile.exists()


def test_a_pid_with_another_start_time_is_not_ours(tmp_path):
    pidfile = tmp_path / "p.pid"
    pidfile.write_text(f"{os.getpid()} 1\n")  # our pid, but not the start time recorded
    assert process.running_pid(pidfile) is None
    assert process.stop(pidfile) is False  # and so it is never signalled


def test_garbage_in_a_pid_file_means_not_running(tmp_path):
    pidfile = tmp_path / "p.pid"
    pidfile.write_text("not a pid")
    assert process.running_pid(pidfile) is None
