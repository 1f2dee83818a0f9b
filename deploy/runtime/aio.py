"""asyncio helpers of the daemons: loops that survive their own crashes.

``wait_event`` and ``within`` (3.11-safe waits on ``asyncio.timeout``) are the
link protocol's own helpers, re-exported here so daemon code has one import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from deploy.runtime.backoff import Backoff
from protocol.aio import wait_event, within

__all__ = ["Background", "every", "keep_running", "prune_step", "wait_event", "within"]

log = structlog.get_logger("aio")


async def keep_running(name: str, run: Callable[[], Awaitable[None]], backoff: Backoff | None = None) -> None:
    """Run ``run()`` for the life of the daemon, restarting it if it ever raises.

    A daemon's loops (relay, sweeper, consumer, ...) handle the failures they
    expect themselves; an exception reaching here is one they did not expect.
    Left alone it would end the task silently and leave a daemon that answers
    /health but no longer does its job, so it is logged with its traceback and
    the loop is started again after a backoff.
    """
    backoff = backoff or Backoff(base=0.5, cap=30.0)
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = backoff.next_delay()
            log.error("task_crashed", task=name, restart_in=round(delay, 2), exc_info=True)
            await asyncio.sleep(delay)


class Background:
    """A daemon's long-running loops: each runs under :func:`keep_running`; all stop together."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task] = []

    def spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(keep_running(name, run), name=name))

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


async def every(interval: float, name: str, step: Callable[[], Awaitable[None]], *, first_wait: bool = False,
                jitter: float = 0.2) -> None:
    """Run ``step`` every ``interval`` seconds (± ``jitter``, so replicas do not act in lock-step), forever.

    A failing step is logged as ``<name>_failed`` and tried again next round: housekeeping
    (pruning, settling counts) must never end because the database blinked.
    """
    import random

    if first_wait:
        await asyncio.sleep(interval * random.uniform(1 - jitter, 1 + jitter))
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(f"{name}_failed", reason=repr(exc))
        await asyncio.sleep(interval * random.uniform(1 - jitter, 1 + jitter))


async def prune_step(store, retention_hours: float, idempotency_hours: float) -> None:
    """One round of pruning a daemon's store: acknowledged outbox rows past retention, old Idempotency-Keys."""
    outbox, keys = await store.prune(retention_hours, idempotency_hours)
    if outbox or keys:
        log.info("pruned", outbox_rows=outbox, idempotency_keys=keys)
