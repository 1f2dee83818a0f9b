"""All of the billing daemon's SQL (MariaDB). Handlers call these methods, never the database.

Payments are two short transactions around the gateway call, never one long
one holding locks while the network is slow:

1. ``begin_payment`` claims the Idempotency-Key, checks the order is payable
   and records a ``charging`` attempt on it. Only one attempt may be charging
   per order, so two concurrent payments charge once.
2. the gateway charges, keyed by the attempt id;
3. ``finish_payment`` records the answer: paid + tickets + ``payment.succeeded``
   in the outbox, or declined + ``payment.failed``; and stores the response
   under the Idempotency-Key.

A crash between 1 and 3 leaves the attempt ``charging``; a retry with the
same key resumes that attempt (the gateway answers the same for the same
attempt id), so the money moves once and is recorded once.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
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
                INSERT IGNORE INTO orders (id, user_id, event_id, status, amount_minor, currency, seats,
                                           expires_at, created_at, updated_at)
                VALUES (%s, %s, %s, 'pending', %s, %s, %s, %s, NOW(6), NOW(6))""", [
                (e.data["id"], e.data["user_id"], e.data["event_id"], e.data["amount_minor"], e.data["currency"],
                 json.dumps(e.data["seats"]), parse_time(e.data["expires_at"])) for e in created])
            outcomes.update({e.id: "order_opened" for e in created})
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

    # --- users --------------------------------------------------------------------

    async def create_user(self, email: str, name: str, key: tuple[str, str, str] | None = None,
                          ) -> tuple[int, dict[str, Any]]:
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
                await execute(conn, "INSERT INTO users (id, email, name, created_at) VALUES (%s, %s, %s, NOW(6))",
                              (user_id, email, name))
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
        row = await fetchone(conn, "SELECT id, email, name, created_at FROM users WHERE id = %s", (user_id,))
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
        return {
            "id": row["id"], "reservation_id": row["id"], "user_id": row["user_id"], "event_id": row["event_id"],
            "status": row["status"], "amount_minor": row["amount_minor"], "currency": row["currency"],
            "seats": json.loads(row["seats"]), "expires_at": rfc3339(row["expires_at"]),
            "created_at": rfc3339(row["created_at"]), "paid_at": rfc3339(row["paid_at"]),
            "tickets": [{**t, "checked_in_at": rfc3339(t["checked_in_at"])} for t in tickets],
            "payments": [{"id": a["id"], "status": a["status"], "decline_reason": a["decline_reason"],
                          "created_at": rfc3339(a["created_at"])} for a in attempts],
        }

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda c: self._order(c, order_id), idempotent=True)

    # --- payments -----------------------------------------------------------------

    async def begin_payment(self, order_id: str, key: tuple[str, str, str], margin_seconds: float,
                            resume_after: float = 30.0,
                            ) -> tuple[str, dict[str, Any]] | tuple[None, tuple[int, dict[str, Any]]]:
        """Phase 1. Returns ("charge", attempt) to go on, or (None, (status, body)) to answer now.

        An attempt left ``charging`` for ``resume_after`` seconds belongs to a request that
        crashed; a retry resumes it (the gateway answers the same for the same attempt).
        """
        scope, idem_key, _ = key

        async def begin(conn: aiomysql.Connection):
            prior = await self._claim_key(conn, key)
            if prior is not None:
                if prior["status"]:
                    return None, (prior["status"], json.loads(prior["body"]))
                attempt = prior["attempt_id"] and await self._attempt(conn, prior["attempt_id"])
                if attempt and attempt["status"] == "charging" and attempt["age"] >= resume_after:
                    return "charge", attempt  # the request that started it crashed: resume it
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
                if current and current["status"] == "charging" and current["age"] < resume_after:
                    refusal = BillingError(409, "PAYMENT_IN_PROGRESS", "another payment of this order is running")
                elif current and current["status"] == "charging":
                    await execute(conn, "UPDATE idempotency_keys SET attempt_id = %s WHERE scope = %s"
                                        " AND idem_key = %s", (current["id"], scope, idem_key))
                    return "charge", current
            if refusal is not None:
                # Refusals are answers too: the same key gets the same answer.
                await self._answer(conn, key, refusal.status, refusal.body())
                return None, (refusal.status, refusal.body())
            attempt_id = str(uuid7())
            await execute(conn, "INSERT INTO payment_attempts (id, order_id, status, amount_minor, currency,"
                                " created_at) VALUES (%s, %s, 'charging', %s, %s, NOW(6))",
                          (attempt_id, order_id, order["amount_minor"], order["currency"]))
            await execute(conn, "UPDATE orders SET charging_attempt = %s, updated_at = NOW(6) WHERE id = %s",
                          (attempt_id, order_id))
            await execute(conn, "UPDATE idempotency_keys SET attempt_id = %s WHERE scope = %s AND idem_key = %s",
                          (attempt_id, scope, idem_key))
            return "charge", await self._attempt(conn, attempt_id)

        return await self.db.transaction(begin, idempotent=True)

    async def _attempt(self, conn: aiomysql.Connection, attempt_id: str) -> dict[str, Any] | None:
        return await fetchone(conn, "SELECT id, order_id, status, amount_minor, currency,"
                                    " TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) / 1e6 AS age"
                                    " FROM payment_attempts WHERE id = %s", (attempt_id,))

    async def finish_payment(self, attempt: dict[str, Any], result: ChargeResult,
                             key: tuple[str, str, str]) -> tuple[int, dict[str, Any]]:
        """Phase 3: record the gateway's answer, issue tickets, emit the event, store the response."""
        async def finish(conn: aiomysql.Connection) -> tuple[int, dict[str, Any]]:
            order = await fetchone(conn, "SELECT * FROM orders WHERE id = %s FOR UPDATE", (attempt["order_id"],))
            current = await fetchone(conn, "SELECT status FROM payment_attempts WHERE id = %s FOR UPDATE",
                                     (attempt["id"],))
            if current["status"] != "charging":  # another request finished this attempt already
                answer = await self._order(conn, order["id"])
                status, body = (200, answer) if current["status"] == "succeeded" else (402, _declined(answer))
                await self._answer(conn, key, status, body)
                return status, body
            await execute(conn, "UPDATE payment_attempts SET status = %s, gateway_ref = %s, decline_reason = %s,"
                                " finished_at = NOW(6) WHERE id = %s",
                          ("succeeded" if result.approved else "declined", result.reference, result.reason,
                           attempt["id"]))
            base = {"order_id": order["id"], "reservation_id": order["id"], "user_id": order["user_id"],
                    "event_id": order["event_id"], "amount_minor": order["amount_minor"],
                    "currency": order["currency"], "payment_id": attempt["id"]}
            if not result.approved:
                await execute(conn, "UPDATE orders SET status = 'failed', charging_attempt = NULL,"
                                    " updated_at = NOW(6) WHERE id = %s", (order["id"],))
                event = ("payment.failed", {**base, "reason": result.reason})
                status, body = 402, _declined(await self._order(conn, order["id"]))
            elif order["status"] not in PAYABLE:
                # The hold was released while the card was being charged: give the money back.
                await execute(conn, "UPDATE payment_attempts SET status = 'refunded' WHERE id = %s",
                              (attempt["id"],))
                await execute(conn, "UPDATE orders SET charging_attempt = NULL WHERE id = %s", (order["id"],))
                event = ("payment.refunded", {**base, "reason": "hold_released_during_payment"})
                status, body = 409, BillingError(409, "ORDER_NOT_PAYABLE", "the hold was released during the "
                                                 "payment; the charge was refunded",
                                                 {"status": order["status"]}).body()
            else:
                seats = json.loads(order["seats"])
                tickets = [(str(uuid7()), order["id"], order["event_id"], seat["id"], seat["label"],
                            secrets.token_urlsafe(32)) for seat in seats]  # 256 random bits per code
                await executemany(conn, "INSERT INTO tickets (id, order_id, event_id, seat_id, seat_label, code,"
                                        " status, created_at) VALUES (%s, %s, %s, %s, %s, %s, 'valid', NOW(6))",
                                  tickets)
                await execute(conn, "UPDATE orders SET status = 'paid', charging_attempt = NULL, paid_at = NOW(6),"
                                    " updated_at = NOW(6) WHERE id = %s", (order["id"],))
                event = ("payment.succeeded", {
                    **base, "seats": seats,
                    "tickets": [{"id": t[0], "seat_id": t[3], "seat_label": t[4], "code": t[5]} for t in tickets]})
                status, body = 200, await self._order(conn, order["id"])
            await self._answer(conn, key, status, body)
            await emit(conn, *event)
            return status, body

        answer = await self.db.transaction(finish, idempotent=True)
        self._emitted()
        return answer

    async def _answer(self, conn: aiomysql.Connection, key: tuple[str, str, str], status: int,
                      body: dict[str, Any]) -> None:
        await execute(conn, "UPDATE idempotency_keys SET status = %s, body = %s WHERE scope = %s AND idem_key = %s",
                      (status, json.dumps(body), key[0], key[1]))

    async def paid_attempt(self, order_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda c: fetchone(
            c, "SELECT id, amount_minor, currency FROM payment_attempts WHERE order_id = %s AND status = 'succeeded'",
            (order_id,)), idempotent=True)

    async def refund(self, order_id: str, reason: str) -> tuple[int, dict[str, Any]]:
        """Mark a paid order refunded and void its tickets (after the gateway refunded)."""
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
            seats = json.loads(order["seats"])
            view = await self._order(conn, order_id)
            await emit(conn, "payment.refunded", {
                "order_id": order_id, "reservation_id": order_id, "user_id": order["user_id"],
                "event_id": order["event_id"], "amount_minor": order["amount_minor"], "currency": order["currency"],
                "seat_ids": [s["id"] for s in seats], "reason": reason})
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
