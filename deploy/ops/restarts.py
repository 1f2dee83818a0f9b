"""When the supervisor restarts a daemon that exited, and the record ``ticketflow status`` reads.

Pure policy, fed the current time: no processes, no sleeps (tests drive it with numbers).
A daemon that had been running for ``stable_after`` seconds is restarted at once — one
crash after a long run is an incident to recover from quickly (a SIGKILLed daemon serves
again within about a second). A daemon that keeps dying soon after each start waits a
growing, jittered delay (the project's one backoff rule, PROTOCOL.md section 8) so a
crash loop does not burn the machine or flood its log.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deploy.runtime.backoff import Backoff


def exit_reason(status: int | None) -> str:
    """A wait status in words: ``exit 1``, ``killed by SIGKILL``; ``exited`` when unknown
    (a daemon an earlier supervisor started is not our child, so its status is not ours to read)."""
    if status is None:
        return "exited"
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


@dataclass
class RestartPolicy:
    stable_after: float = 30.0
    base: float = 0.5
    cap: float = 15.0
    _started: dict[str, float] = field(default_factory=dict)
    _backoff: dict[str, Backoff] = field(default_factory=dict)

    def started(self, name: str, now: float) -> None:
        self._started[name] = now

    def exited(self, name: str, now: float) -> float:
        """The delay before restarting ``name``, which was found exited at ``now``."""
        backoff = self._backoff.setdefault(name, Backoff(base=self.base, cap=self.cap))
        if now - self._started.get(name, now) >= self.stable_after:
            backoff.reset()
        if backoff.attempt == 0:
            backoff.attempt = 1  # the next quick death waits
            return 0.0
        return backoff.next_delay()


@dataclass
class RestartLog:
    """Restarts per daemon in this ``run all``, kept in a file so ``ticketflow status`` can count them."""

    path: Path
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self) -> None:
        self.counts = {}
        self._write()

    def record(self, name: str, reason: str) -> int:
        entry = self.counts.setdefault(name, {"count": 0})
        entry.update(count=entry["count"] + 1, last_exit=reason,
                     last_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self._write()
        return entry["count"]

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.counts, indent=1) + "\n")
        tmp.replace(self.path)  # a reader never sees half a file


def read_restarts(path: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
