"""Coalesced actions: however often something is asked for, run it at most once per interval.

Used for cross-process wake-ups (a PostgreSQL NOTIFY costs a global lock at commit, so
one per committed transaction would serialise writers): the first request runs the action
at once, requests arriving while it runs or within ``interval`` after it are merged into
one more run at the end of that interval. Nothing asked for is ever dropped: every
request is followed by a run that starts after it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("coalesce")


class Coalesced:
    def __init__(self, name: str, action: Callable[[], Awaitable[object]], interval: float = 0.005) -> None:
        self.name = name
        self.action = action
        self.interval = interval
        self.runs = 0  # actions started, for tests and status
        self.failures = 0  # consecutive failed actions
        self._pending = False
        self._task: asyncio.Task | None = None

    def request(self) -> None:
        """Ask for the action (from the event loop's thread); returns at once."""
        self._pending = True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"coalesced-{self.name}")

    async def _drain(self) -> None:
        try:
            while self._pending:
                self._pending = False
                self.runs += 1
                try:
                    await self.action()
                    self.failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Best effort (the receiving side has its own fallback): one line per 1, 10, 100... in a row.
                    self.failures += 1
                    if math.log10(self.failures).is_integer():
                        log.warning(f"{self.name}_failed", reason=repr(exc), failures=self.failures)
                await asyncio.sleep(self.interval)  # requests meanwhile: one more run after this
        finally:
            self._task = None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
