"""The SQL of payments: attempts, their outcome, tickets and refunds (no gateway calls here).

Payments are two short transactions around the gateway call, never one long
one holding locks while the network is slow (the calls themselves, and the
resolver, are ``billing_daemon.payments``):

1. :meth:`PaymentStore.begin` claims the Idempotency-Key, checks the order is payable
   and records a ``charging`` attempt on it. Only one attempt may be charging
   per order, so two concurrent payments charge once.
2. the gateway charges, keyed by the attempt id;
3. :meth:`PaymentStore.finish` records what the answer means
   (:func:`billing_daemon.rules.payment_outcome`): paid + tickets +
   ``payment.succeeded`` in the outbox, or declined + ``payment.failed``, or (the
   hold went away during the charge) the gateway's refund + ``payment.refunded``;
   and records the response under every Idempotency-Key waiting on the attempt.

A crash between 1 and 3 leaves the attempt ``charging``. The attempt names the
process that started it (``owner``, alive while it holds a MariaDB named lock),
so a retry with the same key, or the resolver, can tell an abandoned attempt
from a running one (:func:`billing_daemon.rules.abandoned`), ask the gateway
what became of it and record that, once: the money moves once and is recorded once.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import aiomysql

from billing_daemon.accounts import audit
from billing_daemon.gateway import ChargeResult
from billing_daemon.rules import (Ok, Outcome, abandoned, payment_in_progress, payment_outcome, payment_refusal,
                                  refund_refusal, request_in_progress, settled_answer)
from billing_daemon.store.idempotency import IdempotencyKeys, Key, Replayed, Result
from billing_daemon.store.orders import order_view
from billing_daemon.store.outbox import Outbox
from deploy.runtime.auth import Principal
from deploy.runtime.ids import uuid7
from deploy.runtime.mysql import MariaDB, execute, executemany, fetchall, fetchone, fetchval
from deploy.runtime.times import rfc3339

SYSTEM_ACTOR = "billing"  # the actor of refunds billing makes on its own (a hold lost during a charge)
PROCESS_LOCK_PREFIX = "tf_billing_proc_"
# Whether the process that started an attempt is alive: it holds a MariaDB named lock for
# its whole life, and a killed process's session (and lock) ends with it.
_OWNER_ALIVE = "(owner IS NOT NULL AND IS_USED_LOCK(CONCAT('" + PROCESS_LOCK_PREFIX + "', owner)) IS NOT NULL)"
_ATTEMPT = ("SELECT id, order_id, status, amount_minor, currency, owner,"
            " TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) / 1e6 AS age,"
            f" {_OWNER_ALIVE} AS owner_alive FROM payment_attempts")


def process_lock_name(owner: str) -> str:
    """The MariaDB lock a billing process holds while alive; ``owner`` is recorded on its attempts."""
    return PROCESS_LOCK_PREFIX + owner


# The attempt's status once an outcome is recorded (FAILED and DECLINED are their own values).
_RECORDED_STATUS = {Outcome.PAID: "succeeded", Outcome.REFUND_HOLD_GONE: "refunded",
                    Outcome.REFUND_LATE_CHARGE: "refunded"}


@dataclass(frozen=True)
class Settled:
    """What recording an attempt's outcome came to: the answer, or a refund to make first."""

    result: Result | None
    refund_due: bool = False


class PaymentStore:
    def __init__(self, db: MariaDB, keys: IdempotencyKeys, outbox: Outbox) -> None:
        self.db = db
        self.keys = keys
        self.outbox = outbox

    # --- phase 1 --------------------------------------------------------------------

    async def begin(self, order_id: str, key: Key, margin_seconds: float, resume_after: float = 30.0, *,
                    owner: str | None = None, in_flight: Collection[str] = (), attempt_id: str | None = None,
                    ) -> dict[str, Any] | Result:
        """Phase 1. Returns the attempt (a dict) to charge, or the request's answer now.

        ``owner`` is the calling process (see :func:`process_lock_name`), ``in_flight`` the
        attempts it is charging right now, ``attempt_id`` the id to give a new attempt (the
        caller marks it in flight before it exists, so its own resolver never mistakes it for
        an abandoned one). An attempt left ``charging`` is resumed at once when its request
        is known to be over (see :func:`~billing_daemon.rules.abandoned`); otherwise the retry
        is refused REQUEST_IN_PROGRESS until it is.
        """
        new_id = attempt_id or str(uuid7())

        async def begin(conn: aiomysql.Connection) -> dict[str, Any] | Result:
            # A key claimed now already names the attempt it will wait on (one round trip, not two).
            prior = await self.keys.claim(conn, key, new_id)
            if prior is not None:
                if prior["status"]:
                    return self.keys.replay(prior)
                attempt = prior["attempt_id"] and await self._attempt(conn, prior["attempt_id"])
                if attempt and abandoned(attempt, owner, in_flight, resume_after):
                    return attempt  # the request that started it is over: resume it
                raise request_in_progress()
            order = await fetchone(conn, "SELECT id, status, amount_minor, currency, expires_at, charging_attempt,"
                                         " TIMESTAMPDIFF(MICROSECOND, NOW(6), expires_at) / 1e6 AS remaining"
                                         " FROM orders WHERE id = %s FOR UPDATE", (order_id,))
            refusal = payment_refusal(order, margin_seconds, order and rfc3339(order["expires_at"]))
            if refusal is None and order["charging_attempt"] is not None:
                current = await self._attempt(conn, order["charging_attempt"])
                if current and current["status"] == "charging":
                    if not abandoned(current, owner, in_flight, resume_after):
                        refusal = payment_in_progress()
                    else:
                        await self.keys.wait_on(conn, key, current["id"])
                        return current
            if refusal is not None:
                # Refusals are answers too: the same key gets the same answer.
                return await self.keys.answer(conn, key, refusal)
            await execute(conn, "INSERT INTO payment_attempts (id, order_id, status, amount_minor, currency, owner,"
                                " created_at) VALUES (%s, %s, 'charging', %s, %s, %s, NOW(6))",
                          (new_id, order_id, order["amount_minor"], order["currency"], owner))
            await execute(conn, "UPDATE orders SET charging_attempt = %s, updated_at = NOW(6) WHERE id = %s",
                          (new_id, order_id))
            # The attempt as just written, not read back: new, charging, started by ``owner``
            # (who holds its process lock while it runs), and the key claimed above waits on it.
            return {"id": new_id, "order_id": order_id, "status": "charging", "amount_minor": order["amount_minor"],
                    "currency": order["currency"], "owner": owner, "age": 0.0, "owner_alive": owner is not None}

        return await self.db.transaction(begin, idempotent=True)

    async def _attempt(self, conn: aiomysql.Connection, attempt_id: str) -> dict[str, Any] | None:
        return await fetchone(conn, _ATTEMPT + " WHERE id = %s", (attempt_id,))

    async def charging_attempts(self, older_than: float, owner: str, limit: int = 100) -> list[dict[str, Any]]:
        """Attempts still ``charging`` that the resolver may look at: older than ``older_than``
        seconds, or started by this process, or by a process that is gone. The caller still
        leaves out the ones it is charging right now (see :func:`~billing_daemon.rules.abandoned`)."""
        return await self.db.run(lambda c: fetchall(
            c, _ATTEMPT + " WHERE status = 'charging'"
               " AND (created_at < NOW(6) - INTERVAL %s MICROSECOND OR owner = %s OR NOT " + _OWNER_ALIVE + ")"
               " ORDER BY created_at LIMIT %s", (int(older_than * 1e6), owner, limit)), idempotent=True)

    # --- phase 3 --------------------------------------------------------------------

    async def finish(self, attempt: dict[str, Any], result: ChargeResult | None, key: Key | None = None,
                     refund_ref: str | None = None, actor: Principal | None = None) -> Settled:
        """Phase 3: record what the gateway said about the attempt, once, whoever asks.

        ``result`` is the gateway's answer (None: the charge never reached it, so nothing
        was taken); what it means is :func:`~billing_daemon.rules.payment_outcome`'s call.
        A refunding outcome takes a gateway call, which is never made inside a transaction:
        the first call answers ``refund_due`` without changing anything; the caller refunds
        at the gateway (keyed by the attempt, so twice is once) and calls again with
        ``refund_ref``, which records the refund row and ``payment.refunded``. A hold that
        is gone stays gone (``cancelled`` is final), so the second call finds the same state.

        The attempt row is locked and must still be ``charging``: of two replicas (or a
        retry and the resolver) finishing one attempt, the second finds it done and only
        reads the answer. Every Idempotency-Key waiting on the attempt gets the answer.

        ``actor``: the caller of the pay request; a 200 answer is audited (``pay``, who, when)
        in this transaction, not in one of its own.
        """
        async def finish(conn: aiomysql.Connection) -> Settled:
            settled = await self._finish(conn, attempt, result, key, refund_ref)
            if actor is not None and settled.result is not None and self._status(settled.result) == 200:
                await audit(conn, actor, "pay", attempt["order_id"])
            return settled

        settled = await self.db.transaction(finish, idempotent=True)
        self.outbox.emitted()
        return settled

    def _status(self, result: Result) -> int:
        return result.status if isinstance(result, Replayed) else self.keys.respond(result)[0]

    async def audit(self, actor: Principal, action: str, order_id: str) -> None:
        """Audit an answer given without a transaction of ``finish`` (a replayed 200), in one of its own."""
        await self.db.transaction(lambda conn: audit(conn, actor, action, order_id), idempotent=False)

    async def _finish(self, conn: aiomysql.Connection, attempt: dict[str, Any], result: ChargeResult | None,
                      key: Key | None, refund_ref: str | None) -> Settled:
        # The order and the attempt locked in one round trip (the order's row first, as before:
        # STRAIGHT_JOIN), with the server's clock read once for the times it writes and shows.
        order = await fetchone(conn, "SELECT STRAIGHT_JOIN o.*, a.status AS attempt_status, NOW(6) AS now_"
                                     " FROM orders o JOIN payment_attempts a ON a.id = %s"
                                     " WHERE o.id = %s FOR UPDATE", (attempt["id"], attempt["order_id"]))
        now, current = order.pop("now_"), {"status": order.pop("attempt_status")}
        decision = payment_outcome(current["status"], order["status"], result, refund_ref)
        if decision.refund_due:
            return Settled(None, refund_due=True)
        base = {"order_id": order["id"], "reservation_id": order["id"], "user_id": order["user_id"],
                "event_id": order["event_id"], "amount_minor": attempt["amount_minor"],
                "currency": attempt["currency"], "payment_id": attempt["id"]}
        if decision.outcome in (Outcome.FAILED, Outcome.DECLINED):
            await self._fail(conn, order, attempt["id"], decision.outcome.value,
                             result and result.reference, decision.reason)
            await self.outbox.emit(conn, "payment.failed", {**base, "reason": decision.reason})
        elif decision.outcome is Outcome.REFUND_HOLD_GONE:
            await execute(conn, "UPDATE payment_attempts SET gateway_ref = %s WHERE id = %s",
                          (result.reference, attempt["id"]))
            await execute(conn, "UPDATE orders SET charging_attempt = NULL WHERE id = %s", (order["id"],))
            await self._refund_attempt(conn, order, base, refund_ref, decision.reason)
        elif decision.outcome is Outcome.REFUND_LATE_CHARGE:
            await self._refund_attempt(conn, order, base, refund_ref, decision.reason)
        elif decision.outcome is Outcome.PAID:
            order = await self._paid(conn, order, attempt["id"], result.reference, base, now)
        else:  # RECORDED: finished before; read what it came to
            return Settled(await self._settled(conn, order["id"], attempt["id"], key))
        # An attempt this transaction moved out of ``charging`` (its row is locked) has the status
        # just written, and no key waiting on it can have been answered before; a late charge's
        # refund (the attempt had failed, and was answered) reads what its keys were told.
        fresh = current["status"] == "charging"
        recorded = (_RECORDED_STATUS.get(decision.outcome) or decision.outcome.value) if fresh else None
        paid_row = order if decision.outcome is Outcome.PAID else None
        return Settled(await self._settled(conn, order["id"], attempt["id"], key, recorded, paid_row))

    async def _paid(self, conn: aiomysql.Connection, order: dict[str, Any], attempt_id: str, reference: str,
                    base: dict[str, Any], now: Any) -> dict[str, Any]:
        """Tickets for every seat, the order paid, ``payment.succeeded``; returns the order's row as written.

        ``now`` is the time read when the rows were locked: written as ``paid_at`` so the
        answer can show the row without reading it back. The tickets go in one multi-row
        INSERT (every value a parameter, so the driver batches them) and the attempt and the
        order in one UPDATE."""
        seats = json.loads(order["seats"])
        tickets = [(str(uuid7()), order["id"], order["event_id"], seat["id"], seat["label"],
                    secrets.token_urlsafe(32), "valid", now) for seat in seats]  # 256 random bits per code
        await executemany(conn, "INSERT INTO tickets (id, order_id, event_id, seat_id, seat_label, code,"
                                " status, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", tickets)
        await execute(conn, "UPDATE payment_attempts a JOIN orders o ON o.id = a.order_id"
                            " SET a.status = 'succeeded', a.gateway_ref = %s, a.finished_at = %s,"
                            " o.status = 'paid', o.charging_attempt = NULL, o.paid_at = %s, o.updated_at = %s"
                            " WHERE a.id = %s", (reference, now, now, now, attempt_id))
        await self.outbox.emit(conn, "payment.succeeded", {
            **base, "seats": seats,
            # Ticket ids only: codes admit at the door, and reach only their owner and the door.
            "tickets": [{"id": t[0], "seat_id": t[3], "seat_label": t[4]} for t in tickets]})
        return {**order, "status": "paid", "charging_attempt": None, "paid_at": now, "updated_at": now}

    async def _fail(self, conn: aiomysql.Connection, order: dict[str, Any], attempt_id: str, status: str,
                    reference: str | None, reason: str | None) -> None:
        """The attempt took no money: record why; the order is payable again unless its hold is gone."""
        await execute(conn, "UPDATE payment_attempts SET status = %s, gateway_ref = %s, decline_reason = %s,"
                            " finished_at = NOW(6) WHERE id = %s", (status, reference, reason, attempt_id))
        # A hold released during the charge stays released (cancelled is final): only a payable
        # order becomes 'failed', i.e. payable again.
        await execute(conn, "UPDATE orders SET status = IF(status IN ('pending', 'failed'), 'failed', status),"
                            " charging_attempt = NULL, updated_at = NOW(6) WHERE id = %s", (order["id"],))

    async def _refund_attempt(self, conn: aiomysql.Connection, order: dict[str, Any], base: dict[str, Any],
                              refund_ref: str, reason: str) -> None:
        """Record an automatic refund (the gateway has refunded already) and tell downstream, once."""
        await execute(conn, "UPDATE payment_attempts SET status = 'refunded', finished_at = NOW(6) WHERE id = %s",
                      (base["payment_id"],))
        refund_id = await self._insert_refund(conn, order["id"], base["payment_id"], base["amount_minor"],
                                              base["currency"], reason, SYSTEM_ACTOR, refund_ref)
        if refund_id is not None:
            await self.outbox.emit(conn, "payment.refunded", {**base, "reason": reason, "refund_id": refund_id})

    @staticmethod
    async def _insert_refund(conn: aiomysql.Connection, order_id: str, attempt_id: str, amount_minor: int,
                             currency: str, reason: str, actor: str | None, gateway_ref: str | None) -> str | None:
        """The new refund's id, or None if this attempt was refunded (and recorded) before."""
        refund_id = str(uuid7())
        inserted = await execute(conn, "INSERT IGNORE INTO refunds (id, order_id, attempt_id, amount_minor, currency,"
                                       " reason, actor, created_at, gateway_ref)"
                                       " VALUES (%s, %s, %s, %s, %s, %s, %s, NOW(6), %s)",
                                 (refund_id, order_id, attempt_id, amount_minor, currency, reason, actor, gateway_ref))
        return refund_id if inserted else None

    async def _settled(self, conn: aiomysql.Connection, order_id: str, attempt_id: str, key: Key | None,
                       recorded: str | None = None, row: dict[str, Any] | None = None) -> Result:
        """The answer to a pay request for this attempt, recorded under every key still waiting on it.

        A key answered earlier keeps its first answer (one key, one answer). ``recorded`` is the
        status this transaction just gave the attempt (it was ``charging`` under its row lock):
        then the status need not be read back, a refund row exists only if it is ``refunded``,
        and every key waiting on it (``key`` among them) is answered now for the first time.
        ``row``: the order's row as this transaction wrote it (not read back)."""
        status = recorded or await fetchval(conn, "SELECT status FROM payment_attempts WHERE id = %s",
                                            (attempt_id,))
        refund_id = None if status != "refunded" else await fetchval(
            conn, "SELECT id FROM refunds WHERE attempt_id = %s", (attempt_id,))
        answer = settled_answer(status, await order_view(conn, order_id, row), refund_id)
        await self.keys.answer_waiting(conn, attempt_id, answer)
        if recorded is not None:
            return answer
        earlier: Replayed | None = await self.keys.answered(conn, key) if key is not None else None
        return earlier or answer

    # --- refunds asked for ------------------------------------------------------------

    async def paid_attempt(self, order_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda c: fetchone(
            c, "SELECT id, amount_minor, currency FROM payment_attempts WHERE order_id = %s AND status = 'succeeded'",
            (order_id,)), idempotent=True)

    async def refund(self, order_id: str, reason: str, actor: str | None = None, *,
                     attempt: dict[str, Any] | None = None, gateway_ref: str | None = None) -> Ok:
        """Mark a paid order refunded, void its tickets and record the refund (after the gateway refunded).

        ``attempt`` is the paid attempt the gateway refunded (from :meth:`paid_attempt`),
        ``gateway_ref`` the gateway's refund reference, ``actor`` who asked (the audit trail,
        with ``reason``). Refunding twice is harmless: the second call finds the order
        refunded and answers it, with the one refund row. Raises
        :class:`~billing_daemon.rules.Refused` (ORDER_NOT_FOUND, ORDER_NOT_REFUNDABLE).
        """
        async def refund(conn: aiomysql.Connection) -> Ok:
            order = await fetchone(conn, "SELECT * FROM orders WHERE id = %s FOR UPDATE", (order_id,))
            refusal = refund_refusal(order and order["status"])
            if refusal is not None:
                raise refusal
            if order["status"] == "refunded":
                return Ok(await order_view(conn, order_id))  # refunding twice is harmless
            await execute(conn, "UPDATE orders SET status = 'refunded', updated_at = NOW(6) WHERE id = %s",
                          (order_id,))
            await execute(conn, "UPDATE tickets SET status = 'void' WHERE order_id = %s", (order_id,))
            paid = attempt or await fetchone(conn, "SELECT id FROM payment_attempts WHERE order_id = %s"
                                                   " AND status = 'succeeded'", (order_id,))
            refund_id = await self._insert_refund(conn, order_id, paid["id"], order["amount_minor"], order["currency"],
                                                  reason, actor, gateway_ref) or await fetchval(
                conn, "SELECT id FROM refunds WHERE attempt_id = %s", (paid["id"],))
            seats = json.loads(order["seats"])
            view = await order_view(conn, order_id)
            await self.outbox.emit(conn, "payment.refunded", {
                "order_id": order_id, "reservation_id": order_id, "user_id": order["user_id"],
                "event_id": order["event_id"], "amount_minor": order["amount_minor"], "currency": order["currency"],
                "payment_id": paid["id"], "seat_ids": [s["id"] for s in seats], "reason": reason,
                "refund_id": refund_id})
            return Ok(view)

        answer = await self.db.transaction(refund, idempotent=True)
        self.outbox.emitted()
        return answer
