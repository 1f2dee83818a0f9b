"""The reservation stream in: orders opened and cancelled, the stream's durable position,
and billing's word on releasing a hold (release-check), which the inbox must agree with."""

from __future__ import annotations

import json
from collections.abc import Sequence

import aiomysql
import pymysql
import structlog
from pymysql.constants.ER import DUP_ENTRY as ER_DUP_ENTRY

from billing_daemon.rules import Release, release_decision
from deploy.runtime import events as contract  # not "events": the batch is called that
from deploy.runtime.mysql import MariaDB, execute, fetchall, fetchone, fetchval
from deploy.runtime.times import naive_utc
from protocol.messages import Event

log = structlog.get_logger("billing.inbox")


class StreamGap(Exception):
    """A batch does not start right after the stream's applied position; nothing was applied."""


def _marks(values: Sequence[object]) -> str:
    return ",".join(["%s"] * len(values))


INSERT_ROWS = 1000  # rows per multi-row INSERT (about 0.5 MB for orders, far below max_allowed_packet)


async def _insert_rows(conn: aiomysql.Connection, head: str, row: str, rows: Sequence[Sequence[object]]) -> None:
    """``head`` + ``row`` repeated: one multi-row INSERT per INSERT_ROWS rows. (aiomysql's executemany
    makes one only when every value is a placeholder; with ``NOW(6)`` in the row it sends a round trip
    per row, which was most of the drain's wall time.)"""
    for i in range(0, len(rows), INSERT_ROWS):
        chunk = rows[i:i + INSERT_ROWS]
        await execute(conn, head + ", ".join([row] * len(chunk)), [v for r in chunk for v in r])


class Inbox:
    def __init__(self, db: MariaDB) -> None:
        self.db = db

    async def position(self, stream: str) -> int:
        value = await self.db.run(lambda c: fetchval(
            c, "SELECT position FROM stream_positions WHERE stream = %s", (stream,)), idempotent=True)
        return int(value or 0)

    async def advance_position(self, stream: str, expected: int, to: int) -> bool:
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

    async def apply(self, stream: str, events: Sequence[Event]) -> None:
        """Apply a batch and record the stream position in ONE transaction.

        Idempotent by event id: ids already in ``inbox_events`` are skipped, so a
        re-sent event changes nothing. The stream's position row is locked first,
        so two replicas receiving the stream at once (a relay failing over while
        its old connection lingers) apply one after the other, and the position
        only ever moves forward.
        """
        applied: list[tuple[Event, str]] = []  # (event, outcome) of the batch that committed

        async def apply(conn: aiomysql.Connection) -> None:
            applied.clear()  # a retried transaction starts over
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
            if len(set(ids)) == len(ids):
                # Almost always no event of the batch was applied before: its seqs are past the
                # position, and an id comes back at a new seq only when a producer re-emits one
                # or a position was moved back. So apply the batch as all new, with a savepoint
                # before: inbox_events' primary key refuses an applied id when the batch's rows
                # are inserted, and then (only then) the batch is decided again with the lookup.
                await execute(conn, "SAVEPOINT unseen")
                try:
                    applied.extend(await self._apply_fresh(conn, stream, batch))
                except pymysql.err.IntegrityError as exc:
                    if exc.args[0] != ER_DUP_ENTRY:
                        raise
                    await execute(conn, "ROLLBACK TO SAVEPOINT unseen")
                else:
                    await self._advance(conn, stream, batch[-1].seq)
                    return
            known = {r["event_id"] for r in await fetchall(
                conn, f"SELECT event_id FROM inbox_events WHERE event_id IN ({_marks(ids)})", ids)}
            fresh = []
            for e in batch:
                if e.id not in known:  # also a second copy of an id within the batch: first one wins
                    known.add(e.id)
                    fresh.append(e)
            applied.extend(await self._apply_fresh(conn, stream, fresh))
            await self._advance(conn, stream, batch[-1].seq)

        await self.db.transaction(apply, idempotent=False)
        if applied:
            # One trace line per committed batch (README, "Tracing"): a line per event would cost
            # ~11 us each on the drain's hot path; the list costs ~0.5 us per event.
            log.info("events_applied", stream=stream, first_seq=applied[0][0].seq, last_seq=applied[-1][0].seq,
                     count=len(applied), trace=[_trace(e, outcome) for e, outcome in applied])

    async def _apply_fresh(self, conn: aiomysql.Connection, stream: str, fresh: Sequence[Event],
                           ) -> list[tuple[Event, str]]:
        """The effects of events none of which was applied before, and their inbox_events rows;
        each event with its outcome."""
        payloads, outcomes = _read(stream, fresh)
        outcomes.update(await self._open_orders(conn, [
            (e.id, payloads[e.id], e.correlation_id) for e in fresh
            if isinstance(payloads.get(e.id), contract.ReservationCreated)]))
        outcomes.update(await self._cancel_orders(conn, [
            (e.id, p.reservation_id) for e in fresh
            if isinstance(p := payloads.get(e.id), (contract.ReservationCancelled, contract.ReservationExpired))]))
        await _insert_rows(conn, "INSERT INTO inbox_events (event_id, stream, seq, type, outcome, received_at)"
                                 " VALUES ", "(%s, %s, %s, %s, %s, NOW(6))",
                           [(e.id, stream, e.seq, e.type, outcomes.get(e.id, "noted")) for e in fresh])
        return [(e, outcomes.get(e.id, "noted")) for e in fresh]

    @staticmethod
    async def _advance(conn: aiomysql.Connection, stream: str, to: int) -> None:
        await execute(conn, "UPDATE stream_positions SET position = %s WHERE stream = %s", (to, stream))

    @staticmethod
    async def _open_orders(conn: aiomysql.Connection,
                           created: list[tuple[str, contract.ReservationCreated, str | None]]) -> dict[str, str]:
        """Open a pending order per ``reservation.created`` (event id, payload, the event's correlation
        id: the hold request's, kept with the order for tracing); the outcome per event id."""
        await _insert_rows(conn, "INSERT IGNORE INTO orders (id, user_id, event_id, organizer_id, status,"
                                 " amount_minor, currency, seats, expires_at, created_at, updated_at,"
                                 " correlation_id) VALUES ",
                           "(%s, %s, %s, %s, 'pending', %s, %s, %s, %s, NOW(6), NOW(6), %s)", [
            (r.id, r.user_id, r.event_id, r.organizer_id, r.amount_minor, r.currency, json.dumps(r.seats),
             naive_utc(r.expires_at), correlation_id) for _, r, correlation_id in created])
        outcomes = {event_id: "order_opened" for event_id, _, _ in created}
        if not created:
            return outcomes
        # Holds released before their order arrived (release_check answered for an unknown
        # order): the order opens cancelled, so no payment can ever start on it. Locking reads
        # (a release being decided right now is waited for). The table is empty almost always:
        # one probe tells that, instead of a lookup that locks a gap per order of the batch. In an
        # empty table the probe locks what that lookup locks (the end of the index), so a
        # release_check inserting meanwhile waits for this commit either way and then finds the
        # order.
        if await fetchval(conn, "SELECT 1 FROM released_holds LIMIT 1 FOR UPDATE") is None:
            return outcomes
        ids = [r.id for _, r, _ in created]
        released = {r["order_id"] for r in await fetchall(
            conn, f"SELECT order_id FROM released_holds WHERE order_id IN ({_marks(ids)}) FOR UPDATE", ids)}
        if released:
            gone = sorted(released)
            await execute(conn, "UPDATE orders SET status = 'cancelled', updated_at = NOW(6)"
                                f" WHERE status = 'pending' AND id IN ({_marks(gone)})", gone)
            await execute(conn, f"DELETE FROM released_holds WHERE order_id IN ({_marks(gone)})", gone)
            outcomes.update({event_id: "order_opened_released" for event_id, r, _ in created if r.id in released})
        return outcomes

    @staticmethod
    async def _cancel_orders(conn: aiomysql.Connection, cancels: list[tuple[str, str]]) -> dict[str, str]:
        """Cancel each payable order whose hold was cancelled or expired ((event id, order id), in stream
        order); the outcome to record per event id.

        Two statements for the whole batch: the orders are read and locked at once, each event is decided
        in order against the status the events before it left (a second cancel of one order finds it
        cancelled, as it would have one statement at a time), then the payable ones are cancelled together.
        """
        if not cancels:
            return {}
        ids = sorted({order_id for _, order_id in cancels})
        status: dict[str, str | None] = {r["id"]: r["status"] for r in await fetchall(
            conn, f"SELECT id, status FROM orders WHERE id IN ({_marks(ids)}) FOR UPDATE", ids)}
        outcomes: dict[str, str] = {}
        cancelled: list[str] = []
        for event_id, order_id in cancels:
            now = status.get(order_id)
            if now in ("pending", "failed"):
                outcomes[event_id] = "order_cancelled"
                status[order_id] = "cancelled"
                cancelled.append(order_id)
            else:
                outcomes[event_id] = f"order_{now}_kept" if now else "unknown_order"
        if cancelled:
            await execute(conn, "UPDATE orders SET status = 'cancelled', updated_at = NOW(6)"
                                f" WHERE id IN ({_marks(cancelled)}) AND status IN ('pending', 'failed')", cancelled)
        return outcomes

    # --- releasing holds (the reservation daemon asks first) ------------------------

    async def release_check(self, order_ids: Sequence[str]) -> dict[str, str]:
        """Billing's word on releasing each hold: ``released``, ``paid`` or ``charging``
        (see :func:`billing_daemon.rules.release_decision`).

        Each order is decided in its own transaction with its row locked, so the answer and
        its effect are atomic against a payment starting (``begin_payment`` locks the same row):
        an order answered ``released`` is cancelled in that transaction, so no payment can start
        from then on. With no order yet (the reservation stream is behind, so no payment can
        exist) the release is recorded and the order opens cancelled when it arrives.
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
                    return release_decision(None, False).answer
                await execute(conn, "DELETE FROM released_holds WHERE order_id = %s", (order_id,))
            charging = order["charging_attempt"] is not None and await fetchval(
                conn, "SELECT status FROM payment_attempts WHERE id = %s", (order["charging_attempt"],)) == "charging"
            decision = release_decision(order["status"], charging)
            if decision is Release.CANCEL:
                await execute(conn, "UPDATE orders SET status = 'cancelled', updated_at = NOW(6) WHERE id = %s",
                              (order_id,))
            return decision.answer

        answers: dict[str, str] = {}
        for order_id in order_ids:
            answers[order_id] = await self.db.transaction(lambda c, o=order_id: decide(c, o), idempotent=True)
        return answers


def _trace(event: Event, outcome: str) -> list[object]:
    """[seq, correlation id, order id, type, outcome] of an applied event, for the trace line."""
    data = event.data if isinstance(event.data, dict) else {}
    order_id = data.get("reservation_id") or (data.get("id") if event.type == "reservation.created" else None)
    return [event.seq, event.correlation_id, order_id, event.type, outcome]


def _read(stream: str, fresh: Sequence[Event]) -> tuple[dict[str, contract.Payload], dict[str, str]]:
    """Each event's typed payload; an event that does not fit its schema is recorded as malformed
    (and logged) instead of blocking the stream forever, and an unknown type is only noted."""
    payloads: dict[str, contract.Payload] = {}
    outcomes: dict[str, str] = {}
    for e in fresh:
        try:
            payloads[e.id] = contract.parse(e.type, e.data)
        except KeyError:
            outcomes[e.id] = "noted"
        except contract.MalformedEvent as exc:
            log.error("malformed_event", stream=stream, seq=e.seq, event_id=e.id, type=e.type, reason=str(exc))
            outcomes[e.id] = "malformed"
    return payloads, outcomes
