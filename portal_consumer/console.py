"""The operators' console's tools: status, the lag chart's samples, drills.

**One home for the status logic: the portal runs the ``ticketflow`` command, it does not
re-implement it.** ``ticketflow status`` (deploy/ops/status.py) knows the topology: which servers
and replicas exist, their pid files, Patroni/Galera/RabbitMQ cluster roles, HAProxy backends, and
how each link's lag is read through the producing daemon's own store. All of that is operator
tooling (``deploy.ops``), which no daemon may import (import-linter, pyproject). Moving it into
``deploy.runtime`` would drag the stack's layout (pid files, HA ports, patronictl) into the
plumbing every daemon shares; copying the pieces would give the status two homes that drift.
So the console runs the tool as a child process, the way an operator does:

- ``ticketflow status --json [--topology T]`` on demand (``GET /api/ops/status``): one run at a
  time (a lock; concurrent requests share its answer), at most one per ``CACHE_SECONDS`` (a fresh
  answer is reused), a timeout, no shell. Cost: one Python start-up and the status reads, about
  0.5 s of CPU in the local topology (more under HA: patronictl and the cluster queries), only
  when an operator looks.
- ``ticketflow status --watch-lag S``: ONE long-lived child that prints each link's lag as a JSON
  line every ``S`` seconds (default 5) into a ring buffer (default 120 samples: 10 minutes). Each
  sample is the same cheap reads ``status`` makes: one ``stream_state()`` query on PostgreSQL and
  one on MariaDB (the heads' rows) and two passive queue declarations on RabbitMQ, over short-lived
  connections: a few ms of database work and ~10-20 ms of the child's CPU per sample (under 0.5 %
  of a core at 5 s). It starts at the console's first request and stops
  ``TICKETFLOW_PORTAL_OPS_IDLE_SECONDS`` after its last one, so a portal nobody operates runs none.
- ``ticketflow drill NAME --json-out F`` for the names in :data:`DRILLS` only (the HA drills; no
  ``kill``, which would also run against a local stack), one at a time (409 ``DRILL_RUNNING``).
  Whether the stack is HA is the drill's own check (it refuses a stack it does not recognise, in a
  clear sentence, exit 2): the console streams that sentence rather than guessing the topology a
  second way. Output and exit code are kept in ``TICKETFLOW_DRILL_REPORTS_DIR`` beside the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from deploy.runtime.times import rfc3339

log = structlog.get_logger("portal.console")

DRILLS = ("pg-failover", "pg-switchover", "pg-replica-loss", "lb-replica", "mariadb-writer", "mariadb-node",
          "rabbitmq-node", "chaos")
CACHE_SECONDS = 3.0
RECENT_DRILLS = 20
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[a-z-]+$")
OUTPUT_LINES = 5000  # kept in memory per drill run (the log file has all of it)


class StatusUnavailable(Exception):
    """``ticketflow status`` did not answer (timed out, or printed no JSON)."""


class DrillBusy(Exception):
    """A drill is already running."""


@dataclass
class DrillRun:
    """One drill started from the console: its output lines so far and, when done, its exit code."""

    id: str
    name: str
    started_at: str
    by: str
    lines: list[str] = field(default_factory=list)
    exit_code: int | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, line: str) -> None:
        if len(self.lines) < OUTPUT_LINES:
            self.lines.append(line)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Console:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.command = shlex.split(settings.ops_command) or [sys.executable, "-m", "deploy.ops.cli"]
        self.topology = settings.ops_topology if settings.ops_topology in ("local", "ha") else "local"
        self.drill_dir = Path(settings.drill_dir)
        self.samples: deque[dict[str, Any]] = deque(maxlen=settings.ops_history)
        self._status_lock = asyncio.Lock()
        self._status: tuple[float, dict[str, Any]] | None = None
        self._sampler: asyncio.Task | None = None
        self._last_used = 0.0
        self._stopping = False
        self.drill: DrillRun | None = None
        self._drill_task: asyncio.Task | None = None

    # --- status -------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The report of ``ticketflow status --json``, with when it was read and the command's exit code."""
        self.used()
        async with self._status_lock:
            if self._status is not None and time.monotonic() - self._status[0] < CACHE_SECONDS:
                return self._status[1]
            proc = await self._spawn("status", "--json", "--topology", self.topology)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), self.settings.status_timeout)
            except asyncio.TimeoutError:
                await _end(proc)
                raise StatusUnavailable(f"ticketflow status took longer than {self.settings.status_timeout:g} s")
            try:
                report = json.loads(out)
            except ValueError:
                raise StatusUnavailable("ticketflow status printed no report: "
                                        + err.decode(errors="replace").strip()[-300:]) from None
            answer = {"read_at": rfc3339(time.time()), "healthy": proc.returncode == 0, "report": report}
            self._status = (time.monotonic(), answer)
            return answer

    # --- the lag chart's samples ------------------------------------------------------

    def used(self) -> None:
        """A console request: (re)start the lag sampler if it is not running."""
        self._last_used = time.monotonic()
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.create_task(self._sample())

    def lag(self) -> dict[str, Any]:
        self.used()
        return {"interval_seconds": self.settings.ops_sample_seconds, "samples": list(self.samples)}

    async def _sample(self) -> None:
        """Run ``status --watch-lag`` while the console is in use; restart it (with a pause) if it ends."""
        log.info("lag_sampler_started", every_seconds=self.settings.ops_sample_seconds)
        try:
            # stop() also sets _stopping: 3.11's wait_for (in _end) can swallow a cancellation that arrives
            # just as the child exits, and the loop must end all the same.
            while not self._stopping and time.monotonic() - self._last_used < self.settings.ops_idle_seconds:
                proc = await self._spawn("status", "--topology", self.topology,
                                         "--watch-lag", str(self.settings.ops_sample_seconds), stderr="null")
                try:
                    await self._read_samples(proc)
                finally:
                    await _end(proc)
                await asyncio.sleep(self.settings.ops_sample_seconds)
        finally:
            log.info("lag_sampler_stopped")

    async def _read_samples(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while time.monotonic() - self._last_used < self.settings.ops_idle_seconds:
            try:  # a child that hangs (a server that never answers) is ended and started again
                line = await asyncio.wait_for(proc.stdout.readline(), 3 * self.settings.ops_sample_seconds + 30)
            except (asyncio.TimeoutError, ValueError):  # ValueError: a line longer than the stream's limit
                log.warning("lag_sampler_stalled")
                return
            if not line:
                return
            try:
                sample = json.loads(line)
                lag = {name: value if isinstance(value, int) else None for name, value in sample["lag"].items()}
                self.samples.append({"at": rfc3339(float(sample["at"])), "lag": lag})
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not a sample (a warning line): skip it

    # --- drills ------------------------------------------------------------------------

    def start_drill(self, name: str, by: str) -> DrillRun:
        self.used()
        if name not in DRILLS:
            raise ValueError(name)
        if self.drill is not None and self.drill.exit_code is None:
            raise DrillBusy(f"the drill {self.drill.name} started at {self.drill.started_at} is still running")
        now = time.time()
        run = DrillRun(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{name}", name, rfc3339(now), by)
        self.drill = run
        self._drill_task = asyncio.create_task(self._run_drill(run))
        return run

    async def _run_drill(self, run: DrillRun) -> None:
        """Run one drill to its end. Whatever goes wrong here (an unwritable reports directory, an output line
        too long to read), the run ends with an exit code and wakes its readers: a lost run must never leave
        the console refusing every later drill, nor a streaming request waiting for ever."""
        report = self.drill_dir / f"{run.id}.json"
        log.info("drill_started", drill=run.name, run_id=run.id, actor=run.by)
        proc: asyncio.subprocess.Process | None = None
        try:
            self.drill_dir.mkdir(parents=True, exist_ok=True)
            with open(self.drill_dir / f"{run.id}.log", "w", encoding="utf-8") as output:
                try:
                    proc = await self._spawn("drill", run.name, "--json-out", str(report), stderr="stdout")
                except OSError as exc:
                    run.add(f"the drill could not be started: {exc}")
                    run.exit_code = 127
                else:
                    try:
                        await asyncio.wait_for(self._follow(proc, run, output), self.settings.drill_timeout)
                        run.exit_code = await proc.wait()
                    except asyncio.TimeoutError:
                        run.add(f"stopped: the drill ran longer than {self.settings.drill_timeout:g} s")
                        await _end(proc)
                        run.exit_code = proc.returncode if proc.returncode is not None else -1
                output.write(f"exit code {run.exit_code}\n")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- reported on the run and logged; the console carries on
            run.add(f"the console lost this drill: {type(exc).__name__}: {exc}")
            log.exception("drill_console_error", drill=run.name, run_id=run.id)
        finally:
            if proc is not None and proc.returncode is None:
                await _end(proc)  # never a drill the console no longer follows
            if run.exit_code is None:
                run.exit_code = proc.returncode if proc is not None and proc.returncode is not None else -1
            with contextlib.suppress(OSError):
                (self.drill_dir / f"{run.id}.meta.json").write_text(json.dumps(
                    {"name": run.name, "started_at": run.started_at, "finished_at": rfc3339(time.time()),
                     "exit_code": run.exit_code, "by": run.by}))
            log.info("drill_finished", drill=run.name, run_id=run.id, exit_code=run.exit_code, actor=run.by)
            run._wake()

    async def _follow(self, proc: asyncio.subprocess.Process, run: DrillRun, output) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            output.write(line + "\n")
            output.flush()
            run.add(line)

    def recent_drills(self) -> list[dict[str, Any]]:
        """The newest drills in the reports directory (run here or from a terminal), newest first."""
        if not self.drill_dir.is_dir():
            return []
        ids = sorted({p.name.split(".")[0] for p in self.drill_dir.iterdir() if RUN_ID.match(p.name.split(".")[0])},
                     reverse=True)[:RECENT_DRILLS]
        return [self.drill_summary(run_id) for run_id in ids]

    def drill_summary(self, run_id: str) -> dict[str, Any]:
        meta = _read_json(self.drill_dir / f"{run_id}.meta.json") or {}
        report = self.drill_dir / f"{run_id}.json"
        running = self.drill is not None and self.drill.id == run_id and self.drill.exit_code is None
        stamp = run_id.split("-", 1)[0]
        started = f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"
        return {"id": run_id, "name": run_id.split("-", 1)[1], "started_at": meta.get("started_at", started),
                "state": "running" if running else "finished", "exit_code": meta.get("exit_code"),
                "has_report": report.is_file(), "has_output": (self.drill_dir / f"{run_id}.log").is_file()}

    def drill_detail(self, run_id: str) -> dict[str, Any] | None:
        if not RUN_ID.match(run_id):
            return None
        summary = self.drill_summary(run_id)
        if not summary["has_report"] and not summary["has_output"]:
            return None
        output = ""
        if summary["has_output"]:
            output = (self.drill_dir / f"{run_id}.log").read_text(encoding="utf-8", errors="replace")[-100_000:]
        return {**summary, "report": _read_json(self.drill_dir / f"{run_id}.json"), "output": output}

    # --- children --------------------------------------------------------------------------

    async def _spawn(self, *args: str, stderr: str = "pipe") -> asyncio.subprocess.Process:
        """The ticketflow command with ``args``: no shell, its own session (so it can be ended whole)."""
        return await asyncio.create_subprocess_exec(
            *self.command, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr={"pipe": asyncio.subprocess.PIPE, "stdout": asyncio.subprocess.STDOUT,
                    "null": asyncio.subprocess.DEVNULL}[stderr],
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._sampler, self._drill_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Stop a child and what it started (its own session), SIGTERM then SIGKILL."""
    if proc.returncode is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), wait)
            return
        except asyncio.TimeoutError:
            continue


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
