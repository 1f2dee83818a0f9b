"""Detached server processes tracked by pid files, stopped only by their recorded pid.

A pid file holds ``pid start_time`` (the start time from /proc, in clock
ticks since boot) so a recycled pid is never mistaken for our server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X"}:  # a zombie has exited; only its parent has not reaped it
        return None
    return fields[19]


def spawn(
    argv: Sequence[str],
    pidfile: Path,
    logfile: Path,
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the operator's terminal must not hit the servers
            user=user,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    record(pidfile, proc.pid)
    return proc.pid


def record(pidfile: Path, pid: int) -> None:
    """Write ``pid`` (with its start time) to ``pidfile``."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{pid} {_start_time(pid) or ''}\n")


def running_pid(pidfile: Path) -> int | None:
    """The recorded pid if that very process is still alive, else None."""
    try:
        pid_text, _, started = pidfile.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    current = _start_time(pid)
    if current is None or (started and current != started):
        return None
    return pid


def stop(pidfile: Path, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Signal the recorded process and wait for it to exit; SIGKILL after ``timeout``.

    Returns True if a process was stopped.
    """
    pid = running_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    os.kill(pid, sig)
    if not wait_exit(pidfile, timeout):
        os.kill(pid, signal.SIGKILL)
        wait_exit(pidfile, 10.0)
    pidfile.unlink(missing_ok=True)
    return True


def kill(pidfile: Path) -> bool:
    """SIGKILL the recorded process (crash drills); True if there was one."""
    pid = running_pid(pidfile)
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL)
    wait_exit(pidfile, 10.0)
    return True


def wait_exit(pidfile: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(pidfile) is None:
            return True
        time.sleep(0.05)
    return running_pid(pidfile) is None
