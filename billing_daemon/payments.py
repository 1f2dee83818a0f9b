"""Payments: the gateway calls around the store's short transactions, and the resolver.

A payment's money moves at the gateway and its record lives in MariaDB; no
transaction spans both, so a crash, a lost database connection or a client
that gives up can leave an attempt ``charging``: charged (or not) at the
gateway, not recorded in billing. Three things make sure every such attempt
ends recorded, once, with the money either captured with tickets or given back:

- **Who is charging what.** Each billing process has an id (``owner``) and
  holds the MariaDB named lock :func:`~billing_daemon.store.payments.process_lock_name`
  on a session of its own for as long as it lives; a SIGKILLed process's
  session ends and frees the lock. Each attempt records its owner, and each
  process knows which attempts it is charging right now (:class:`InFlight`).
  An attempt whose owner is gone, or is this process but not in flight here
  (its request ended with an error), is abandoned and can be resumed at once.
- **A retry resumes.** The same Idempotency-Key on an abandoned attempt charges
  it again under the same attempt id: the gateway answers what it answered the
  first time, and the answer is recorded. A live, in-flight attempt still gets
  409 ``REQUEST_IN_PROGRESS``.
- **The resolver** (:meth:`Payments.run_resolver`, every replica) finds abandoned
  attempts, and any attempt ``charging`` longer than
  ``TICKETFLOW_PAY_RESOLVE_AFTER_SECONDS``, asks the gateway ``status`` and
  records the answer exactly as the request would have: paid with tickets,
  declined, refunded because the hold is gone, or, if the gateway never saw the
  charge, failed (nothing was taken; the order is payable again).

Several replicas resolving, or a retry racing the resolver, record once: the
store locks the attempt row and records only an attempt still ``charging``,
and the gateway charges and refunds once per attempt id.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiomysql
import structlog

from billing_daemon.config import Settings
from billing_daemon.gateway import ChargeResult, PaymentGateway
from billing_daemon.rules import Ok, abandoned
from billing_daemon.store import Key, Replayed, Result, Settled
from billing_daemon.store.payments import PaymentStore, process_lock_name
from deploy.runtime.aio import within
from deploy.runtime.auth import Principal
from deploy.runtime.http import DependencyUnavailable
from deploy.runtime.ids import uuid7
from deploy.runtime.mysql import MariaDsn, connect_session, fetchval

log = structlog.get_logger("billing")


class InFlight:
    """The attempts this process is charging or resolving right now (a multiset: two requests may share one)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def __contains__(self, attempt_id: object) -> bool:
        return self._counts[attempt_id] > 0 if isinstance(attempt_id, str) else False

    def __iter__(self) -> Iterator[str]:
        return iter([a for a, n in self._counts.items() if n > 0])

    def __len__(self) -> int:
        return sum(1 for n in self._counts.values() if n > 0)

    @contextmanager
    def track(self, *attempt_ids: str) -> Iterator[None]:
        for attempt_id in attempt_ids:
            self._counts[attempt_id] += 1
        try:
            yield
        finally:
            for attempt_id in attempt_ids:
                self._counts[attempt_id] -= 1
                if self._counts[attempt_id] <= 0:
                    del self._counts[attempt_id]


class ProcessLock:
    """This process's liveness as other billing processes see it: a named lock on a dedicated session.

    ``held`` is refreshed by :meth:`keep` once a second. While it is not held,
    this process starts no payment (503): other replicas would take its
    attempts for abandoned ones.

    Why a node-local ``GET_LOCK`` is enough under Galera (issue 12), unlike the relay's
    lease (billing_daemon/store/lease.py). This lock is not a single-runner guard: every
    process holds its own, and the only question asked of it is "is the owner of this
    attempt still alive?" (``IS_USED_LOCK``). Nothing relies on that answer for safety:
    an attempt is resumed anyway once older than ``resolve_after``, the gateway charges
    and refunds once per attempt id, :meth:`PaymentStore.finish` records once under the
    attempt's row lock, and a charge landing after an early resume recorded "failed" is
    refunded (``REFUND_LATE_CHARGE``). A wrong "gone" (the owner's lock is on another
    node) therefore costs an early resume: a wasted gateway look-up, at worst a payment
    whose charge had not reached the gateway yet ends failed and its late charge is
    refunded; money is never lost or kept. It is also not wrong in the
    deployed topology: billing reaches Galera through HAProxy's single-writer port,
    which sends every session to one node and cuts them all when that node is marked
    down (``on-marked-down shutdown-sessions``), so every process re-takes its lock on
    the new writer within one ``keep`` interval. Replicas pointed at different nodes
    directly (as tests/ha/test_galera_lease.py does for the relay) would see each
    other's in-flight attempts as abandoned (the early resumes above), so the daemons
    are not deployed that way (the outbox's numbering needs one writer node too).
    """

    def __init__(self, dsn: str, owner: str) -> None:
        self.dsn = MariaDsn.parse(dsn)
        self.name = process_lock_name(owner)
        self.conn: aiomysql.Connection | None = None
        self.held = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> bool:
        async with self._lock:
            try:
                if self.conn is None:
                    await self._acquire()
                else:
                    self.held = await within(3, fetchval(
                        self.conn, "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,))) == 1
                    if not self.held:
                        self._drop()
            except Exception as exc:
                if self.held or self.conn is not None:
                    log.warning("process_lock_lost", reason=repr(exc))
                self.held = False
                self._drop()
            return self.held

    async def _acquire(self) -> None:
        self.conn = await connect_session(self.dsn)
        self.held = await within(3, fetchval(self.conn, "SELECT GET_LOCK(%s, 0)", (self.name,))) == 1
        if not self.held:  # our previous session is not dead to the server yet; try again later
            self._drop()

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def keep(self, interval: float = 1.0) -> None:
        while True:
            await self.ensure()
            await asyncio.sleep(interval)

    def close(self) -> None:
        self._drop()
        self.held = False


class Payments:
    def __init__(self, settings: Settings, store: PaymentStore, gateway: PaymentGateway) -> None:
        self.settings = settings
        self.store = store
        self.gateway = gateway
        self.owner = uuid.uuid4().hex
        self.in_flight = InFlight()
        self.lock = ProcessLock(settings.mariadb_dsn, self.owner)

    # --- a buyer's request ---------------------------------------------------------

    async def pay(self, order_id: str, key: Key, actor: Principal | None = None) -> Result:
        """Begin (or resume) the attempt, charge it, record the answer.

        ``actor`` (the caller): every 200 answer is audited, in the transaction that records
        it (a replayed one in a transaction of its own)."""
        if not self.lock.held and not await self.lock.ensure():
            raise DependencyUnavailable("database unavailable; retry shortly")
        # Marked in flight before it exists, so this process's resolver never sees it abandoned.
        new_id = str(uuid7())
        with self.in_flight.track(new_id):
            attempt = await self.store.begin(
                order_id, key, self.settings.pay_margin, self.settings.resume_after, owner=self.owner,
                in_flight=self.in_flight, attempt_id=new_id)
            if not isinstance(attempt, dict):  # answered now (refused, or this key's earlier answer)
                if actor is not None and self._status(attempt) == 200:
                    await self.store.audit(actor, "pay", order_id)
                return attempt
            with self.in_flight.track(attempt["id"]):
                result = await self._gateway("charge", self.gateway.charge(
                    attempt["id"], attempt["amount_minor"], attempt["currency"]))
                return (await self.settle(attempt, result, key, actor)).result

    async def refund(self, order_id: str, reason: str, actor: str | None = None) -> Ok:
        """Refund a paid order at the gateway, then record it (refund row, tickets void, event)."""
        attempt = await self.store.paid_attempt(order_id)
        gateway_ref = None
        if attempt is not None:
            # The gateway refunds by attempt id: asking twice never refunds twice.
            gateway_ref = await self._gateway("refund", self.gateway.refund(
                attempt["id"], attempt["amount_minor"], attempt["currency"]))
        return await self.store.refund(order_id, reason, actor, attempt=attempt, gateway_ref=gateway_ref)

    async def settle(self, attempt: dict[str, Any], result: ChargeResult | None,
                      key: Key | None, actor: Principal | None = None) -> Settled:
        settled = await self.store.finish(attempt, result, key, actor=actor)
        if settled.refund_due:
            reference = await self._gateway("refund", self.gateway.refund(
                attempt["id"], attempt["amount_minor"], attempt["currency"]))
            log.info("payment_refunded_automatically", payment_id=attempt["id"], order_id=attempt["order_id"])
            settled = await self.store.finish(attempt, result, key, refund_ref=reference, actor=actor)
        return settled

    async def _gateway(self, what: str, call):
        try:
            return await call
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The attempt stays charging and this process's resolver picks it up (it is no
            # longer in flight), asking the gateway what became of it.
            log.warning("gateway_call_failed", call=what, reason=repr(exc))
            raise DependencyUnavailable("the payment gateway is unavailable; retry shortly") from None

    # --- the resolver ----------------------------------------------------------------

    async def resolve_once(self) -> int:
        """Resolve every abandoned or overdue ``charging`` attempt; returns how many were recorded."""
        resolved = 0
        for attempt in await self.store.charging_attempts(self.settings.resolve_after, self.owner):
            if not abandoned(attempt, self.owner, self.in_flight, self.settings.resolve_after):
                continue
            with self.in_flight.track(attempt["id"]):
                status = await self._gateway("status", self.gateway.status(attempt["id"]))
                settled = await self.settle(attempt, status.as_charge(), None)
            resolved += 1
            log.info("payment_resolved", payment_id=attempt["id"], order_id=attempt["order_id"],
                     gateway=status.state, answer=self._status(settled.result),
                     age_s=round(float(attempt["age"]), 1))
        return resolved

    def _status(self, result: Result | None) -> int | None:
        """The HTTP status a request would have got (the log's ``answer``)."""
        if result is None or isinstance(result, Replayed):
            return result and result.status
        return self.store.keys.respond(result)[0]

    async def run_resolver(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.settings.resolve_interval * random.uniform(0.8, 1.2))
            try:
                await self.resolve_once()
                failing = False
            except Exception as exc:
                if not failing:  # an outage logs once, not once a second
                    log.warning("payment_resolver_failed", reason=repr(exc))
                failing = True

