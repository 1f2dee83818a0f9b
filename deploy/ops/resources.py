"""Per-daemon memory and CPU over a benchmark run, read from ``/proc`` (Linux).

A :class:`Sampler` is given the pids to watch (``{"billing": 1234, ...}``) and, while it
runs, reads each one's ``/proc/PID/status`` (``VmRSS``) and ``/proc/PID/stat`` (``utime`` +
``stime``) every ``interval`` seconds in a thread of its own, so a busy event loop in the
bench cannot make it miss the peaks. The report per daemon: peak and last RSS in MB and the
CPU used over the run as a percentage of one core (100 = one core busy all the time).
A process that exits during the run keeps the figures of its last sample.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RSS_LIMIT_MB = 150.0  # issue 13: each daemon's RSS stays under this under load


def rss_kb(pid: int) -> int | None:
    """Resident set size in kB (``VmRSS``), None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return 0  # a zombie has no VmRSS line


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


class Sampler:
    def __init__(self, pids: Mapping[str, int | None], interval: float = 0.1) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.interval = interval
        self.peak_kb: dict[str, int] = {}
        self.last_kb: dict[str, int] = {}
        self.cpu_start: dict[str, float] = {}
        self.cpu_last: dict[str, float] = {}
        self.samples = 0
        self.started = self.stopped = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        for name, pid in self.pids.items():
            rss, cpu = rss_kb(pid), cpu_seconds(pid)
            if rss is not None:
                self.last_kb[name] = rss
                self.peak_kb[name] = max(rss, self.peak_kb.get(name, 0))
            if cpu is not None:
                self.cpu_start.setdefault(name, cpu)
                self.cpu_last[name] = cpu
        self.samples += 1

    def restart_cpu(self) -> None:
        """Count CPU (and wall time) from now on; peak RSS keeps counting from the start."""
        self.started = time.monotonic()
        self.cpu_start = dict(self.cpu_last)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> Sampler:
        self.started = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, Any]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sample()
        self.stopped = time.monotonic()
        return self.report()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def report(self) -> dict[str, dict[str, Any]]:
        wall = max((self.stopped or time.monotonic()) - self.started, 1e-9)
        out: dict[str, dict[str, Any]] = {}
        for name, pid in self.pids.items():
            peak = self.peak_kb.get(name)
            used = self.cpu_last.get(name, 0.0) - self.cpu_start.get(name, 0.0)
            out[name] = {"pid": pid, "peak_rss_mb": round(peak / 1024, 1) if peak is not None else None,
                         "last_rss_mb": round(self.last_kb[name] / 1024, 1) if name in self.last_kb else None,
                         "cpu_percent": round(100 * used / wall, 1) if name in self.cpu_last else None,
                         "cpu_seconds": round(used, 2)}
        return out


def render(resources: dict[str, dict[str, Any]] | None) -> list[str]:
    """Table lines for a report's ``resources`` (empty when nothing was watched)."""
    if not resources:
        return []
    lines = ["", f"  {'daemon (over the run)':<24} {'pid':>8} {'peak RSS MB':>12} {'CPU % of a core':>16}"]
    for name, r in resources.items():
        over = "  (over the 150 MB goal)" if (r["peak_rss_mb"] or 0) >= RSS_LIMIT_MB else ""
        lines.append(f"  {name:<24} {r['pid']:>8} {r['peak_rss_mb']!s:>12} {r['cpu_percent']!s:>16}{over}")
    return lines


def daemon_pids(settings: Any) -> dict[str, int | None]:
    """The pids of the daemons ``ticketflow run all`` started (its pid files), None for one not running."""
    from deploy.ops.daemons import DAEMONS
    from deploy.ops.stack import process
    from deploy.ops.supervisor import daemon_dirs

    pids, _ = daemon_dirs(settings)
    return {spec.name: process.running_pid(pids / f"{spec.name}.pid") for spec in DAEMONS}
