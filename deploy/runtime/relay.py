"""Outbox relays with exactly one active copy across replicas.

A relay runs only while it holds its stream's leader lock (:class:`LeaderLock`):
the reservation daemon's is a PostgreSQL advisory lock on a dedicated session
(a replica that dies loses its session and so its lock); billing's is a lease
row that holds across a Galera cluster (billing_daemon/store/lease.py), which a
dead holder loses at its expiry. A standby's next attempt takes over. Two relays
overlapping briefly (a holder cut off but not yet noticed) is harmless: the
receiver keeps one connection per stream and resumes from its durable position,
and a deposed relay's numbering is fenced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from deploy.runtime.aio import wait_event, within
from deploy.runtime.backoff import Backoff
from protocol.sender import Sender

log = structlog.get_logger("relay")


@dataclass
class RelayBackoff(Backoff):
    """The sender's reconnect backoff for a relay: PROTOCOL.md section 8's formula (full jitter,
    growing from ``base``, reset only after real progress), with transient failures capped at
    ``transient_cap`` (1 s) instead of the library's 5 s. While the receiver is down for long, each
    attempt waits a uniform draw below the cap, so the first attempt after it comes back waits
    cap/2 on average: 2.5 s of a restarted billing's catch-up at 5 s, 0.5 s here. A refused
    connection costs next to nothing. Permanent refusals still wait ``cap`` (5 s): they need an
    operator, and retrying them faster helps nobody."""

    transient_cap: float = 1.0

    def next_delay(self) -> float:
        ceiling = min(self.transient_cap, self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)


class LeaderLock(Protocol):
    """A lock held by one database session; losing the session loses the lock."""

    async def acquire(self, wake: Callable[[], None]) -> bool:
        """Open a session and try the lock once; ``wake`` is called when new rows may exist."""

    async def check(self) -> None:
        """Raise if the session (and so the lock) is gone."""

    async def release(self) -> None:
        """Close the session, releasing the lock."""


class OutboxRelay:
    def __init__(self, stream: str, make_lock: Callable[[], LeaderLock], make_sender: Callable[[], Sender],
                 lock_retry: float = 1.0, check_interval: float = 1.0, backoff: Backoff | None = None,
                 stable_after: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.make_lock = make_lock
        self.make_sender = make_sender
        self.lock_retry = lock_retry
        self.check_interval = check_interval
        self.active = False
        self.sender: Sender | None = None
        # Reset only after a lead that lasted ``stable_after``: taking the lock is not progress.
        self.backoff = backoff or Backoff(base=0.2, cap=5.0)
        self.stable_after = stable_after
        self.clock = clock
        self.leads = 0
        self._stopping = asyncio.Event()

    @property
    def problem(self) -> dict[str, Any] | None:
        """A condition on the active link that needs an operator (e.g. the receiver behind retention)."""
        return self.sender.problem if self.sender is not None else None

    def notify(self) -> None:
        """New outbox rows were written by this process."""
        if self.sender is not None:
            self.sender.notify()

    async def stop(self) -> None:
        self._stopping.set()
        if self.sender is not None:
            await self.sender.stop()

    async def run(self) -> None:
        backoff = self.backoff
        while not self._stopping.is_set():
            lock = self.make_lock()
            try:
                if await lock.acquire(self.notify):
                    started = self.clock()
                    try:
                        await self._lead(lock)
                    finally:
                        if self.clock() - started >= self.stable_after:
                            backoff.reset()
                else:
                    await lock.release()
                    await self._sleep(self.lock_retry)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay_interrupted", stream=self.stream, reason=repr(exc))
            finally:
                self.active = False
                await lock.release()
            await self._sleep(backoff.next_delay())

    async def _lead(self, lock: LeaderLock) -> None:
        sender = self.sender = self.make_sender()
        self.active = True
        self.leads += 1
        log.info("relay_active", stream=self.stream)
        sending = asyncio.create_task(sender.run())
        try:
            while not self._stopping.is_set() and not sending.done():
                await within(5, lock.check())
                await self._sleep(self.check_interval)
        finally:
            await sender.stop()
            sending.cancel()
            (result,) = await asyncio.gather(sending, return_exceptions=True)
            if isinstance(result, Exception):
                log.error("relay_sender_failed", stream=self.stream, reason=repr(result))
            self.sender = None
            log.info("relay_standby", stream=self.stream)

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)


def outbox_relay(stream: str, targets: list[tuple[str, int]], read: Callable[[int, int], Any],
                 head: Callable[[], Any], on_ack: Callable[[int], Any], link: Any,
                 make_lock: Callable[[], LeaderLock], *, poll_interval: float, lock_retry: float) -> OutboxRelay:
    """The one way a daemon relays its outbox: the lock holder sends the stream (``read`` rows in
    sequence after a position, its ``head``, ``on_ack`` recording the receiver's acks) to the first
    of ``targets`` — the rest are receiver replicas it fails over to — resuming where the receiver is."""
    first, *alternates = targets

    def make_sender() -> Sender:
        return Sender(*first, stream, read, link, head=head, on_ack=on_ack, poll_interval=poll_interval,
                      alternates=alternates, backoff=RelayBackoff())

    return OutboxRelay(stream, make_lock, make_sender, lock_retry=lock_retry)
