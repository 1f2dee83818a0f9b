"""An HA stack brought up with ``ticketflow stack up --topology ha`` and its daemons supervised by ``ticketflow
run all --topology ha``, for a test module's fixture: the module chooses the environment (private ports, its
own directories, which servers), this starts and stops them the way an operator does."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def cli(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """``ticketflow ARGS`` under ``env``, its output captured."""
    def ticketflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.ops.cli", *args], env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    return ticketflow


@contextlib.contextmanager
def supervised_ha(env: dict[str, str], root: Path, extra_lines: int = 0) -> Iterator[list[str]]:
    """Up until ``run all`` has printed its walkthrough (every daemon ready, the demo event made); yields the
    lines it printed (plus ``extra_lines`` more). Afterwards: Ctrl-C to the supervisor, the stack down, and the
    stack's private data directories removed."""
    ticketflow = cli(env)
    supervisor = None
    try:
        up = ticketflow("stack", "up", "--topology", "ha", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        supervisor = subprocess.Popen([sys.executable, "-m", "deploy.ops.cli", "run", "all", "--topology", "ha"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not any("second says when" in line for line in lines):
            assert time.monotonic() < deadline, "no walkthrough printed:\n" + "".join(lines)
            line = supervisor.stdout.readline()
            assert line, "run all --topology ha exited:\n" + "".join(lines)
            lines.append(line)
        lines += [supervisor.stdout.readline() for _ in range(extra_lines)]
        yield lines
    finally:
        if supervisor is not None:
            supervisor.send_signal(signal.SIGINT)  # what Ctrl-C sends
            supervisor.wait(60)
        ticketflow("stack", "down", "--topology", "ha", timeout=180)
        for link in (root / "ha").glob("*/private"):
            shutil.rmtree(link.resolve().parent, ignore_errors=True)
