"""All of the billing daemon's SQL (MariaDB). Handlers call these methods, never the database.

Payments are two short transactions around the gateway call, never one long
one holding locks while the network is slow:

1. ``begin_payment`` claims the Idempotency-Key, checks the order is payable
   and records a ``charging`` attempt on it. Only one attempt may be charging
   per order, so two concurrent payments charge once.
2. the gateway charges, keyed by the attempt id;
3. ``finish_payment`` records the answer: paid + tickets + ``payment.succeeded``
   in the outbox, or declined + ``payment.failed``, or (the hold went away
   during the charge) the gateway's refund + ``payment.refunded``; and stores
   the response under every Idempotency-Key waiting on the attempt.

A crash between 1 and 3 leaves the attempt ``charging``. The attempt names the
process that started it (``owner``, alive while it holds a MariaDB named lock),
so a retry with the same key, or the resolver (``billing_daemon.payments``),
can tell an abandoned attempt from a running one, ask the gateway what became
of it and record that, once: the money moves once and is recorded once.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiomysql
import pymysql

from billing_daemon.gateway import ChargeResult
from deploy.runtime.ids import uuid7
from deploy.runtime.migrations import migrate_mariadb
from deploy.runtime.mysql import MariaDB, execute, executemany, fetchall, fetchone, fetchval
from protocol.messages import Event

OUT_STREAM = "payments"
SOURCE = "ticketflow/billing"
PAYABLE = ("pending", "failed")
SYSTEM_ACTOR = "billing"  # the actor of refunds billing makes on its own (a hold lost during a charge)
PROCESS_LOCK_PREFIX = "tf_billing_proc_"
# Whether the process that started an attempt is alive: it holds a MariaDB named lock for
# its whole life, and a killed process's session (and lock) ends with it.
_OWNER_ALIVE = "(owner IS NOT NULL AND IS_USED_LOCK(CONCAT('" + PROCESS_LOCK_PREFIX + "', owner)) IS NOT NULL)"


def process_lock_name(owner: str) -> str:
    """The MariaDB lock a billing process holds while alive; ``owner`` is recorded on its attempts."""
    return PROCESS_LOCK_PREFIX + owner


def abandoned(attempt: dict[str, Any], owner: str | None, in_flight: Collection[str], resume_after: float) -> bool:
    """Whether a ``charging`` attempt's request is over, so it may be resumed (by asking the gateway) now.

    Not if this process is charging it right now. Yes if this process started it (its
    request ended, with an error, since it is not in flight), if the process that started
    it is gone (its lock is free: killed, or cut off from the database), or if it is older
    than ``resume_after`` (a request stuck that long in a live process elsewhere). Resuming
    an attempt whose request is in fact still running is safe, only wasteful: the gateway
    answers the same for one attempt id and recording happens once under a row lock.
    """
    if attempt["status"] != "charging" or attempt["id"] in in_flight:
        return False
    return ((owner is not None and attempt["owner"] == owner) or not attempt["owner_alive"]
            or float(attempt["age"]) >= resume_after)


@dataclass(frozen=True)
class Settled:
    """What recording an attempt's outcome came to: the answer, or a refund to make first."""

    status: int
    body: dict[str, Any]
    refund_due: bool = False


class StreamGap(Exception):
    """A batch does not start right after the stream's applied position; nothing was applied."""


class BillingError(Exception):
    """A refusal with an HTTP status and a stable code (mapped to the error envelope by the API)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    """An RFC 3339 string → naive UTC, as MariaDB DATETIME stores it."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc).replace(tzinfo=None)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


async def emit(conn: aiomysql.Connection, kind: str, data: dict[str, Any]) -> int:
    """Append to the outbound stream in the caller's transaction; the row lock keeps seqs gap-free.

    Call it LAST, just before commit: the stream_heads row lock it takes serialises every
    writer of the stream until commit, so anything after it is time all of them wait.
    """
    await execute(conn, "UPDATE stream_heads SET last_seq = LAST_INSERT_ID(last_seq + 1) WHERE stream = %s",
                  (OUT_STREAM,))
    seq = await fetchval(conn, "SELECT LAST_INSERT_ID()")
    await execute(conn, "INSERT INTO outbox (stream, seq, event_id, type, data, created_at)"
                        " VALUES (%s, %s, %s, %s, %s, NOW(6))",
                  (OUT_STREAM, seq, str(uuid7()), kind, json.dumps(data)))
    return seq


class BillingStore:
    def __init__(self, db: MariaDB) -> None:
        self.db = db
        self.on_emit: list = []  # callbacks run after a commit that wrote outbox rows (wakes the relay)

    def _emitted(self) -> None:
        for callback in self.on_emit:
            callback()

    async def migrate(self) -> list[str]:
        return await self.db.run(lambda c: migrate_mariadb(c, "billing_daemon.migrations"), idempotent=True)

    # --- the reservation stream (inbox) --------------------------------------------

    async def stream_position(self, stream: str) -> int:
        value = await self.db.run(lambda c: fetchval(
            c, "SELECT position FROM stream_positions WHERE stream = %s", (stream,)), idempotent=True)
        return int(value or 0)

    async def advance_stream_position(self, stream: str, expected: int, to: int) -> bool:
        """Operator repair (``ticketflow link advance``): move ``stream``'s position from exactly
        ``expected`` forward to ``to``, skipping events the sender no longer retains.

        Locks the row as ``apply`` does; False (nothing changed) if the position is no longer
        ``expected`` — a batch got through or another operator was quicker.
        """
        if to <= expected:
            raise ValueError("a stream position only moves forward")

        async def advance(conn: aiomysql.Connection) -> bool:
            await execute(conn, "INSERT IGNORE INTO stream_positions (stream, position) VALUES (%s, 0)", (stream,))
            position = await fetchval(conn, "SELECT position FROM stream_positions WHERE stream = %s FOR UPDATE",
                                      (stream,))
            if position != expected:
                return False
            await execute(conn, "UPDATE stream_positions SET position = %s WHERE stream = %s", (to, stream))
            return True

        return await self.db.transaction(advance, idempotent=False)

    async def apply_reservation_events(self, stream: str, events: Sequence[Event]) -> None:
        """Apply a batch and record the stream position in ONE transaction.

        Idempotent by event id: ids already in ``inbox_events`` are skipped, so a
        re-sent event changes nothing. The stream's position row is locked first,
        so two replicas receiving the stream at once (a relay failing over while
        its old connection lingers) apply one after the other, and the position
        only ever moves forward.
        """
        async def apply(conn: aiomysql.Connection) -> None:
            lock = "SELECT position FROM stream_positions WHERE stream = %s FOR UPDATE"
            position = await fetchval(conn, lock, (stream,))
            if position is None:  # the stream's first batch ever: make the row to lock
                await execute(conn, "INSERT IGNORE INTO stream_positions (stream, position) VALUES (%s, 0)",
                              (stream,))
                position = await fetchval(conn, lock, (stream,))
            batch = [e for e in events if e.seq > position]
            if not batch:
                return
            if batch[0].seq != position + 1:
                # Only if the position was moved back under a live connection (a replay):
                # refuse, and the reconnect's welcome starts the sender at the right place.
                raise StreamGap(f"{stream}: applied up to {position}, batch starts at {batch[0].seq}")
            ids = [e.id for e in batch]
            marks = ",".join(["%s"] * len(ids))
            known = {r["event_id"] for r in await fetchall(
                conn, f"SELECT event_id FROM inbox_events WHERE event_id IN ({marks})", ids)}
            fresh = [e for e in batch if e.id not in known]
            outcomes: dict[str, str] = {}
            created = [e for e in fresh if e.type == "reservation.created"]
            await executemany(conn, """
                INSERT IGNORE INTO orders (id, user_id, event_id, organizer_id, status, amount_minor, currency, seats,
                                           expires_at, created_at, updated_at)
                VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s, %s, NOW(6), NOW(6))""", [
                (e.data["id"], e.data["user_id"], e.data["event_id"], e.data.get("organizer_id"),
                 e.data["amount_minor"], e.data["currency"], json.dumps(e.data["seats"]),
                 parse_time(e.data["expires_at"])) for e in created])
            outcomes.update({e.id: "order_opened" for e in created})
            if created:
                # Holds released before their order arrived (release_check answered for an unknown
                # order): the order opens cancelled, so no payment can ever start on it.
                ids = [e.data["id"] for e in created]
                marks = ",".join(["%s"] * len(ids))
                released = {r["order_id"] for r in await fetchall(
                    conn, f"SELECT order_id FROM released_holds WHERE order_id IN ({marks}) FOR UPDATE", ids)}
                if released:
                    gone = sorted(released)
                    gone_marks = ",".join(["%s"] * len(gone))
                    await execute(conn, "UPDATE orders SET status = 'cancelled', updated_at = NOW(6)"
                                        f" WHERE status = 'pending' AND id IN ({gone_marks})", gone)
                    await execute(conn, f"DELETE FROM released_holds WHERE order_id IN ({gone_marks})", gone)
                    outcomes.update({e.id: "order_opened_released" for e in created if e.data["id"] in released})
            for e in fresh:
                if e.type in ("reservation.cancelled", "reservation.expired"):
                    changed = await execute(conn, "UPDATE orders SET status = 'cancelled', updated_at = NOW(6)"
                                                  " WHERE id = %s AND status IN ('pending', 'failed')",
                                            (e.data["reservation_id"],))
                    if changed:
                        outcomes[e.id] = "order_cancelled"
                    else:
                        exists = await fetchval(conn, "SELECT status FROM orders WHERE id = %s",
                                                (e.data["reservation_id"],))
                        outcomes[e.id] = f"order_{exists}_kept" if exists else "unknown_order"
                elif e.type != "reservation.created":
                    outcomes[e.id] = "noted"
            await executemany(conn, "INSERT INTO inbox_events (event_id, stream, seq, type, outcome, received_at)"
                                    " VALUES (%s, %s, %s, %s, %s, NOW(6))",
                              [(e.id, stream, e.seq, e.type, outcomes[e.id]) for e in fresh])
            await execute(conn, "UPDATE stream_positions SET position = %s WHERE stream = %s",
                          (batch[-1].seq, stream))

        await self.db.transaction(apply, idempotent=False)

    # --- releasing holds (the reservation daemon asks first) ------------------------

    async def release_check(self, order_ids: Sequence[str]) -> dict[str, str]:
        """Billing's word on releasing each hold: ``released``, ``paid`` or ``charging``.

        Each order is decided in its own transaction with its row locked, so the answer and
        its effect are atomic against a payment starting (``begin_payment`` locks the same row):

        - no attempt charging or succeeded: the order is cancelled (no payment can start
          from now on) and the hold may be released;
        - ``paid``: the money is taken; the reservation daemon confirms the hold instead;
        - ``charging``: a payment is in flight; keep the hold and ask again later;
        - no order yet (the reservation stream is behind, so no payment can exist): the
          release is recorded and the order opens cancelled when it arrives.
        Cancelled and refunded orders answer ``released`` (no money is held for them).
        """
        async def decide(conn: aiomysql.Connection, order_id: str) -> str:
            lookup = "SELECT status, charging_attempt FROM orders WHERE id = %s FOR UPDATE"
            order = await fetchone(conn, lookup, (order_id,))
            if order is None:
                await execute(conn, "INSERT IGNORE INTO released_holds (order_id, released_at) VALUES (%s, NOW(6))",
                              (order_id,))
                # Read again, locking: an order inserted meanwhile (not yet committed) is waited for.
                order = await fetchone(conn, lookup, (order_id,))
                if order is None:
                    return "released"
                await execute(conn, "DELETE FROM released_holds WHERE order_id = %s", (order_id,))
            if order["status"] == "paid":
                return "paid"
            if order["status"] not in PAYABLE:
                return "released"  # cancelled already, or refunded: no money is held
            if order["charging_attempt"] is not None and await fetchval(
                    conn, "SELECT status FROM payment_attempts WHERE id = %s",
                    (order["charging_attempt"],)) == "charging":
                return "charging"
            await execute(conn, "UPDATE orders SET status = 'cancelled', updated_at = NOW(6) WHERE id = %s",
                          (order_id,))
            return "released"

        answers: dict[str, str] = {}
        for order_id in order_ids:
            answers[order_id] = await self.db.transaction(lambda c, o=order_id: decide(c, o), idempotent=True)
        return answers

    # --- users --------------------------------------------------------------------

    async def create_user(self, email: str, name: str, key: tuple[str, str, str] | None = None,
                          password_hash: str | None = None, role: str = "buyer") -> tuple[int, dict[str, Any]]:
        """(201, user), or with ``key`` used before, the first answer given under it."""
        user_id = str(uuid7())

        async def create(conn: aiomysql.Connection) -> tuple[int, dict[str, Any]]:
            if key is not None:
                prior = await self._claim_key(conn, key)
                if prior is not None:
                    if not prior["status"]:  # cannot outlive its one transaction; never answer it half-done
                        raise BillingError(409, "REQUEST_IN_PROGRESS", "a request with this Idempotency-Key is running")
                    return prior["status"], json.loads(prior["body"])
            try:
                await execute(conn, "INSERT INTO users (id, email, name, role, password_hash, created_at)"
                                    " VALUES (%s, %s, %s, %s, %s, NOW(6))", (user_id, email, name, role, password_hash))
            except pymysql.err.IntegrityError:
                raise BillingError(409, "EMAIL_TAKEN", "a user with this email exists") from None
            user = await self._user(conn, user_id)
            if key is not None:
                await self._answer(conn, key, 201, user)
            return 201, user

        # With a key a retry after a lost connection is safe: it finds the first answer.
        return await self.db.transaction(create, idempotent=key is not None)

    async def _claim_key(self, conn: aiomysql.Connection, key: tuple[str, str, str]) -> dict[str, Any] | None:
        """Claim an Idempotency-Key in the caller's transaction: None if it is ours now, else its row.

        A concurrent claim of the same key waits on the row lock until the first
        transaction ends, then finds its row (or, if it rolled back, claims it).
        """
        scope, idem_key, request_hash = key
        claimed = await execute(conn, "INSERT IGNORE INTO idempotency_keys (scope, idem_key, request_hash, status,"
                                      " created_at) VALUES (%s, %s, %s, 0, NOW(6))", (scope, idem_key, request_hash))
        if claimed:
            return None
        prior = await fetchone(conn, "SELECT request_hash, status, body, attempt_id FROM idempotency_keys"
                                     " WHERE scope = %s AND idem_key = %s FOR UPDATE", (scope, idem_key))
        if prior["request_hash"] != request_hash:
            raise BillingError(422, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different request")
        return prior

    async def _user(self, conn: aiomysql.Connection, user_id: str) -> dict[str, Any] | None:
        row = await fetchone(conn, "SELECT id, email, name, role, created_at FROM users WHERE id = %s", (user_id,))
        return None if row is None else {**row, "created_at": rfc3339(row["created_at"])}

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda c: self._user(c, user_id), idempotent=True)

    async def user_orders(self, user_id: str) -> list[dict[str, Any]] | None:
        async def fetch(conn: aiomysql.Connection) -> list[dict[str, Any]] | None:
            if await self._user(conn, user_id) is None:
                return None
            ids = [r["id"] for r in await fetchall(
                conn, "SELECT id FROM orders WHERE user_id = %s ORDER BY created_at", (user_id,))]
            return [await self._order(conn, order_id) for order_id in ids]

        return await self.db.run(fetch, idempotent=True)

    # --- orders -------------------------------------------------------------------

    async def _order(self, conn: aiomysql.Connection, order_id: str) -> dict[str, Any] | None:
        row = await fetchone(conn, "SELECT * FROM orders WHERE id = %s", (order_id,))
        if row is None:
            return None
        tickets = await fetchall(conn, "SELECT id, seat_id, seat_label, code, status, checked_in_at FROM tickets"
                                       " WHERE order_id = %s ORDER BY seat_label", (order_id,))
        attempts = await fetchall(conn, "SELECT id, status, decline_reason, created_at FROM payment_attempts"
                                        " WHERE order_id = %s ORDER BY created_at", (order_id,))
        refunds = await fetchall(conn, "SELECT id, amount_minor, currency, reason, created_at FROM refunds"
                                       " WHERE order_id = %s ORDER BY created_at", (order_id,))
        return {
            "id": row["id"], "reservation_id": row["id"], "user_id": row["user_id"], "event_id": row["event_id"],
            "status": row["status"], "amount_minor": row["amount_minor"], "currency": row["currency"],
            "seats": json.loads(row["seats"]), "expires_at": rfc3339(row["expires_at"]),
            "created_at": rfc3339(row["created_at"]), "paid_at": rfc3339(row["paid_at"]),
            "tickets": [{**t, "checked_in_at": rfc3339(t["checked_in_at"])} for t in tickets],
            "payments": [{"id": a["id"], "status": a["status"], "decline_reason": a["decline_reason"],
                          "created_at": rfc3339(a["created_at"])} for a in attempts],
            "refunds": [{**r, "created_at": rfc3339(r["created_at"])} for r in refunds],
        }

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda c: self._order(c, order_id), idempotent=True)

    async def order_parties(self, order_id: str) -> dict[str, Any] | None:
        """Who may see an order: its buyer (user_id) and its event's organizer (organizer_id, may be None)."""
        return await self.db.run(lambda c: fetchone(
            c, "SELECT user_id, organizer_id FROM orders WHERE id = %s", (order_id,)), idempotent=True)

    async def event_orders(self, event_id: str, organizer_id: str | None,
                           limit: int = 1000) -> list[dict[str, Any]]:
        """The orders of an event (those whose event ``organizer_id`` organizes, unless None: every one)."""
        async def fetch(conn: aiomysql.Connection) -> list[dict[str, Any]]:
            ids = [r["id"] for r in await fetchall(
                conn, "SELECT id FROM orders WHERE event_id = %s AND (%s IS NULL OR organizer_id = %s)"
                      " ORDER BY created_at LIMIT %s", (event_id, organizer_id, organizer_id, limit))]
            return [await self._order(conn, order_id) for order_id in ids]

        return await self.db.run(fetch, idempotent=True)

    # --- payments -----------------------------------------------------------------

    async def begin_payment(self, order_id: str, key: tuple[str, str, str], margin_seconds: float,
                            resume_after: float = 30.0, *, owner: str | None = None,
                            in_flight: Collection[str] = (), attempt_id: str | None = None,
                            ) -> tuple[str, dict[str, Any]] | tuple[None, tuple[int, dict[str, Any]]]:
        """Phase 1. Returns ("charge", attempt) to go on, or (None, (status, body)) to answer now.

        ``owner`` is the calling process (see :func:`process_lock_name`), ``in_flight`` the
        attempts it is charging right now, ``attempt_id`` the id to give a new attempt (the
        caller marks it in flight before it exists, so its own resolver never mistakes it for
        an abandoned one). An attempt left ``charging`` is resumed at once when its request
        is known to be over (see :func:`abandoned`); otherwise the retry gets 409 until it is.
        """
        scope, idem_key, _ = key

        async def begin(conn: aiomysql.Connection):
            prior = await self._claim_key(conn, key)
            if prior is not None:
                if prior["status"]:
                    return None, (prior["status"], json.loads(prior["body"]))
                attempt = prior["attempt_id"] and await self._attempt(conn, prior["attempt_id"])
                if attempt and abandoned(attempt, owner, in_flight, resume_after):
                    return "charge", attempt  # the request that started it is over: resume it
                raise BillingError(409, "REQUEST_IN_PROGRESS", "a request with this Idempotency-Key is running")
            order = await fetchone(conn, "SELECT id, status, amount_minor, currency, expires_at, charging_attempt,"
                                         " TIMESTAMPDIFF(MICROSECOND, NOW(6), expires_at) / 1e6 AS remaining"
                                         " FROM orders WHERE id = %s FOR UPDATE", (order_id,))
            refusal = None
            if order is None:
                refusal = BillingError(404, "ORDER_NOT_FOUND", "no such order")
            elif order["status"] not in PAYABLE:
                refusal = BillingError(409, "ORDER_NOT_PAYABLE", f"the order is {order['status']}",
                                       {"status": order["status"]})
            elif float(order["remaining"]) <= margin_seconds:
                refusal = BillingError(409, "HOLD_EXPIRED", "the seat hold has expired or is about to",
                                       {"expires_at": rfc3339(order["expires_at"])})
            elif order["charging_attempt"] is not None:
                current = await self._attempt(conn, order["charging_attempt"])
                if current and current["status"] == "charging":
                    if not abandoned(current, owner, in_flight, resume_after):
                        refusal = BillingError(409, "PAYMENT_IN_PROGRESS", "another payment of this order is running")
                    else:
                        await execute(conn, "UPDATE idempotency_keys SET attempt_id = %s WHERE scope = %s"
                                            " AND idem_key = %s", (current["id"], scope, idem_key))
                        return "charge", current
            if refusal is not None:
                # Refusals are answers too: the same key gets the same answer.
                await self._answer(conn, key, refusal.status, refusal.body())
                return None, (refusal.status, refusal.body())
            new_id = attempt_id or str(uuid7())
            await execute(conn, "INSERT INTO payment_attempts (id, order_id, status, amount_minor, currency, owner,"
                                " created_at) VALUES (%s, %s, 'charging', %s, %s, %s, NOW(6))",
                          (new_id, order_id, order["amount_minor"], order["currency"], owner))
            await execute(conn, "UPDATE orders SET charging_attempt = %s, updated_at = NOW(6) WHERE id = %s",
                          (new_id, order_id))
            await execute(conn, "UPDATE idempotency_keys SET attempt_id = %s WHERE scope = %s AND idem_key = %s",
                          (new_id, scope, idem_key))
            return "charge", await self._attempt(conn, new_id)

        return await self.db.transaction(begin, idempotent=True)

    async def _attempt(self, conn: aiomysql.Connection, attempt_id: str, lock: bool = False) -> dict[str, Any] | None:
        return await fetchone(conn, "SELECT id, order_id, status, amount_minor, currency, owner,"
                                    " TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) / 1e6 AS age,"
                                    f" {_OWNER_ALIVE} AS owner_alive"
                                    " FROM payment_attempts WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                              (attempt_id,))

    async def charging_attempts(self, older_than: float, owner: str, limit: int = 100) -> list[dict[str, Any]]:
        """Attempts still ``charging`` that the resolver may look at: older than ``older_than``
        seconds, or started by this process, or by a process that is gone. The caller still
        leaves out the ones it is charging right now (see :func:`abandoned`)."""
        return await self.db.run(lambda c: fetchall(
            c, "SELECT id, order_id, status, amount_minor, currency, owner,"
               " TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) / 1e6 AS age,"
               f" {_OWNER_ALIVE} AS owner_alive FROM payment_attempts WHERE status = 'charging'"
               " AND (created_at < NOW(6) - INTERVAL %s MICROSECOND OR owner = %s OR NOT " + _OWNER_ALIVE + ")"
               " ORDER BY created_at LIMIT %s", (int(older_than * 1e6), owner, limit)), idempotent=True)

    async def finish_payment(self, attempt: dict[str, Any], result: ChargeResult | None,
                             key: tuple[str, str, str] | None = None, refund_ref: str | None = None,
                             ) -> Settled:
        """Phase 3: record what the gateway said about the attempt, once, whoever asks.

        ``result`` is the gateway's answer (None: the charge never reached it, so nothing
        was taken). Paid: tickets + ``payment.succeeded``. Declined or never charged:
        ``payment.failed`` and the order is payable again. Charged although the hold is
        gone (released while the card was being charged), or charged after the attempt was
        already given up as failed: the money must go back, and that takes a gateway call,
        which is never made inside a transaction. So the first call answers
        ``refund_due`` without changing anything; the caller refunds at the gateway (keyed
        by the attempt, so twice is once) and calls again with ``refund_ref``, which
        records the refund row and ``payment.refunded``. A hold that is gone stays gone
        (``cancelled`` is final), so the second call finds the same state.

        The attempt row is locked and must still be ``charging``: of two replicas (or a
        retry and the resolver) finishing one attempt, the second finds it done and only
        reads the answer. Every Idempotency-Key waiting on the attempt gets the answer.
        """
        async def finish(conn: aiomysql.Connection) -> Settled:
            order = await fetchone(conn, "SELECT * FROM orders WHERE id = %s FOR UPDATE", (attempt["order_id"],))
            current = await fetchone(conn, "SELECT id, status, gateway_ref FROM payment_attempts WHERE id = %s"
                                           " FOR UPDATE", (attempt["id"],))
            base = {"order_id": order["id"], "reservation_id": order["id"], "user_id": order["user_id"],
                    "event_id": order["event_id"], "amount_minor": attempt["amount_minor"],
                    "currency": attempt["currency"], "payment_id": attempt["id"]}
            charged = result is not None and result.approved
            if current["status"] != "charging":  # finished already (another replica, the resolver, a retry)
                if charged and current["status"] == "failed":
                    # Given up as never charged, yet the charge landed: give the money back.
                    if refund_ref is None:
                        return Settled(0, {}, refund_due=True)
                    await self._refund_attempt(conn, order, base, refund_ref, "charge_completed_after_failure")
                return await self._settled(conn, order, attempt["id"], key)
            if result is None:
                await self._fail(conn, order, attempt["id"], "failed", None, "charge_not_completed")
                await emit(conn, "payment.failed", {**base, "reason": "charge_not_completed"})
            elif not result.approved:
                await self._fail(conn, order, attempt["id"], "declined", result.reference, result.reason)
                await emit(conn, "payment.failed", {**base, "reason": result.reason})
            elif order["status"] not in PAYABLE:
                # The hold was released while the card was being charged: give the money back.
                if refund_ref is None:
                    return Settled(0, {}, refund_due=True)
                await execute(conn, "UPDATE payment_attempts SET gateway_ref = %s WHERE id = %s",
                              (result.reference, attempt["id"]))
                await execute(conn, "UPDATE orders SET charging_attempt = NULL WHERE id = %s", (order["id"],))
                await self._refund_attempt(conn, order, base, refund_ref, "hold_released_during_payment")
            else:
                seats = json.loads(order["seats"])
                tickets = [(str(uuid7()), order["id"], order["event_id"], seat["id"], seat["label"],
                            secrets.token_urlsafe(32)) for seat in seats]  # 256 random bits per code
                await executemany(conn, "INSERT INTO tickets (id, order_id, event_id, seat_id, seat_label, code,"
                                        " status, created_at) VALUES (%s, %s, %s, %s, %s, %s, 'valid', NOW(6))",
                                  tickets)
                await execute(conn, "UPDATE payment_attempts SET status = 'succeeded', gateway_ref = %s,"
                                    " finished_at = NOW(6) WHERE id = %s", (result.reference, attempt["id"]))
                await execute(conn, "UPDATE orders SET status = 'paid', charging_attempt = NULL, paid_at = NOW(6),"
                                    " updated_at = NOW(6) WHERE id = %s", (order["id"],))
                await emit(conn, "payment.succeeded", {
                    **base, "seats": seats,
                    # Ticket ids only: codes admit at the door, and reach only their owner and the door.
                    "tickets": [{"id": t[0], "seat_id": t[3], "seat_label": t[4]} for t in tickets]})
            return await self._settled(conn, order, attempt["id"], key)

        answer = await self.db.transaction(finish, idempotent=True)
        self._emitted()
        return answer

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
            await emit(conn, "payment.refunded", {**base, "reason": reason, "refund_id": refund_id})

    async def _insert_refund(self, conn: aiomysql.Connection, order_id: str, attempt_id: str, amount_minor: int,
                             currency: str, reason: str, actor: str | None, gateway_ref: str | None) -> str | None:
        """The new refund's id, or None if this attempt was refunded (and recorded) before."""
        refund_id = str(uuid7())
        inserted = await execute(conn, "INSERT IGNORE INTO refunds (id, order_id, attempt_id, amount_minor, currency,"
                                       " reason, actor, created_at, gateway_ref)"
                                       " VALUES (%s, %s, %s, %s, %s, %s, %s, NOW(6), %s)",
                                 (refund_id, order_id, attempt_id, amount_minor, currency, reason, actor, gateway_ref))
        return refund_id if inserted else None

    async def _settled(self, conn: aiomysql.Connection, order: dict[str, Any], attempt_id: str,
                       key: tuple[str, str, str] | None) -> Settled:
        """The answer to a pay request for this attempt, stored under every key still waiting on it.

        A key answered earlier keeps its first answer (one key, one answer)."""
        status = await fetchval(conn, "SELECT status FROM payment_attempts WHERE id = %s", (attempt_id,))
        view = await self._order(conn, order["id"])
        if status == "succeeded":
            answer = 200, view
        elif status == "declined":
            answer = 402, _declined(view)
        elif status == "refunded" and view["status"] not in PAYABLE:
            refund_id = await fetchval(conn, "SELECT id FROM refunds WHERE attempt_id = %s", (attempt_id,))
            answer = 409, BillingError(409, "ORDER_NOT_PAYABLE", "the hold was released during the payment; "
                                       "the charge was refunded", {"status": view["status"],
                                                                   "refund_id": refund_id}).body()
        else:  # failed: nothing was taken (or what was taken went back)
            answer = 402, BillingError(402, "PAYMENT_FAILED", "the charge did not complete and nothing was taken; "
                                       "you may retry with a new Idempotency-Key until the hold expires",
                                       {"order_id": view["id"]}).body()
        await execute(conn, "UPDATE idempotency_keys SET status = %s, body = %s WHERE attempt_id = %s AND status = 0",
                      (answer[0], json.dumps(answer[1]), attempt_id))
        if key is not None:
            prior = await fetchone(conn, "SELECT status, body FROM idempotency_keys WHERE scope = %s"
                                         " AND idem_key = %s", (key[0], key[1]))
            if prior is not None and prior["status"]:
                answer = prior["status"], json.loads(prior["body"])
        return Settled(*answer)

    async def _answer(self, conn: aiomysql.Connection, key: tuple[str, str, str], status: int,
                      body: dict[str, Any]) -> None:
        await execute(conn, "UPDATE idempotency_keys SET status = %s, body = %s WHERE scope = %s AND idem_key = %s",
                      (status, json.dumps(body), key[0], key[1]))

    async def paid_attempt(self, order_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda c: fetchone(
            c, "SELECT id, amount_minor, currency FROM payment_attempts WHERE order_id = %s AND status = 'succeeded'",
            (order_id,)), idempotent=True)

    async def refund(self, order_id: str, reason: str, actor: str | None = None, *,
                     attempt: dict[str, Any] | None = None, gateway_ref: str | None = None,
                     ) -> tuple[int, dict[str, Any]]:
        """Mark a paid order refunded, void its tickets and record the refund (after the gateway refunded).

        ``attempt`` is the paid attempt the gateway refunded (from :meth:`paid_attempt`),
        ``gateway_ref`` the gateway's refund reference, ``actor`` who asked (the audit trail,
        with ``reason``). Refunding twice is harmless: the second call finds the order
        refunded and answers it, with the one refund row.
        """
        async def refund(conn: aiomysql.Connection) -> tuple[int, dict[str, Any]]:
            order = await fetchone(conn, "SELECT * FROM orders WHERE id = %s FOR UPDATE", (order_id,))
            if order is None:
                raise BillingError(404, "ORDER_NOT_FOUND", "no such order")
            if order["status"] == "refunded":
                return 200, await self._order(conn, order_id)  # refunding twice is harmless
            if order["status"] != "paid":
                raise BillingError(409, "ORDER_NOT_REFUNDABLE", f"the order is {order['status']}",
                                   {"status": order["status"]})
            await execute(conn, "UPDATE orders SET status = 'refunded', updated_at = NOW(6) WHERE id = %s",
                          (order_id,))
            await execute(conn, "UPDATE tickets SET status = 'void' WHERE order_id = %s", (order_id,))
            paid = attempt or await fetchone(conn, "SELECT id FROM payment_attempts WHERE order_id = %s"
                                                   " AND status = 'succeeded'", (order_id,))
            refund_id = await self._insert_refund(conn, order_id, paid["id"], order["amount_minor"], order["currency"],
                                                  reason, actor, gateway_ref) or await fetchval(
                conn, "SELECT id FROM refunds WHERE attempt_id = %s", (paid["id"],))
            seats = json.loads(order["seats"])
            view = await self._order(conn, order_id)
            await emit(conn, "payment.refunded", {
                "order_id": order_id, "reservation_id": order_id, "user_id": order["user_id"],
                "event_id": order["event_id"], "amount_minor": order["amount_minor"], "currency": order["currency"],
                "payment_id": paid["id"], "seat_ids": [s["id"] for s in seats], "reason": reason,
                "refund_id": refund_id})
            return 200, view

        answer = await self.db.transaction(refund, idempotent=True)
        self._emitted()
        return answer

    # --- check-in -------------------------------------------------------------------

    async def check_in(self, code: str) -> dict[str, Any]:
        """First scan wins: the conditional UPDATE lets exactly one of two simultaneous scans through."""
        async def scan(conn: aiomysql.Connection) -> dict[str, Any]:
            first = await execute(conn, "UPDATE tickets SET checked_in_at = NOW(6) WHERE code = %s"
                                        " AND status = 'valid' AND checked_in_at IS NULL", (code,))
            ticket = await fetchone(conn, "SELECT id, order_id, event_id, seat_id, seat_label, status, checked_in_at"
                                          " FROM tickets WHERE code = %s", (code,))
            if ticket is None or ticket["status"] != "valid":
                raise BillingError(404, "TICKET_NOT_FOUND", "no valid ticket has this code")
            view = {**ticket, "checked_in_at": rfc3339(ticket["checked_in_at"])}
            if not first:
                raise BillingError(409, "ALREADY_CHECKED_IN", "this ticket was already scanned",
                                   {"checked_in_at": view["checked_in_at"], "seat_label": ticket["seat_label"]})
            await emit(conn, "ticket.checked_in", {k: view[k] for k in (
                "id", "order_id", "event_id", "seat_id", "seat_label", "checked_in_at")})
            return view

        view = await self.db.transaction(scan, idempotent=False)
        self._emitted()
        return view

    # --- the payments stream (outbox) ---------------------------------------------------

    async def read_outbox(self, after: int, limit: int) -> list[Event]:
        rows = await self.db.run(lambda c: fetchall(
            c, "SELECT seq, event_id, type, data, created_at FROM outbox WHERE stream = %s AND seq > %s"
               " ORDER BY seq LIMIT %s", (OUT_STREAM, after, limit)), idempotent=True)
        return [Event(r["seq"], r["event_id"], r["type"], SOURCE, rfc3339(r["created_at"]), json.loads(r["data"]))
                for r in rows]

    async def outbox_head(self) -> int:
        return int(await self.db.run(lambda c: fetchval(
            c, "SELECT last_seq FROM stream_heads WHERE stream = %s", (OUT_STREAM,)), idempotent=True))

    async def record_ack(self, seq: int) -> None:
        async def record(conn: aiomysql.Connection) -> None:
            await execute(conn, "UPDATE stream_heads SET acked_seq = GREATEST(acked_seq, %s), acked_at = NOW(6)"
                                " WHERE stream = %s", (seq, OUT_STREAM))
            await conn.commit()

        await self.db.run(record, idempotent=True)

    async def stream_state(self) -> dict[str, Any]:
        row = await self.db.run(lambda c: fetchone(
            c, "SELECT last_seq, acked_seq FROM stream_heads WHERE stream = %s", (OUT_STREAM,)), idempotent=True)
        return {"stream": OUT_STREAM, "last_seq": row["last_seq"], "acked_seq": row["acked_seq"],
                "lag": row["last_seq"] - row["acked_seq"]}

    async def prune(self, retention_hours: float, idempotency_hours: float) -> tuple[int, int]:
        async def prune(conn: aiomysql.Connection) -> tuple[int, int]:
            outbox = await execute(conn, "DELETE o FROM outbox o JOIN stream_heads h ON h.stream = o.stream"
                                         " WHERE o.seq <= h.acked_seq AND o.created_at < NOW(6) - INTERVAL %s SECOND",
                                   (int(retention_hours * 3600),))
            keys = await execute(conn, "DELETE FROM idempotency_keys WHERE status <> 0"
                                       " AND created_at < NOW(6) - INTERVAL %s SECOND", (int(idempotency_hours * 3600),))
            await conn.commit()
            return outbox, keys

        return await self.db.run(prune, idempotent=True)


def _declined(order: dict[str, Any]) -> dict[str, Any]:
    reason = order["payments"][-1]["decline_reason"] if order["payments"] else None
    return BillingError(402, "PAYMENT_DECLINED", "the payment was declined; you may retry with a new "
                        "Idempotency-Key until the hold expires", {"reason": reason, "order_id": order["id"]}).body()
