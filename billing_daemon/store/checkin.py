"""Check-in at the door: a ticket code admits once."""

from __future__ import annotations

from typing import Any

import aiomysql

from billing_daemon.rules import check_in_refusal
from billing_daemon.store.outbox import Outbox
from deploy.runtime.mysql import MariaDB, execute, fetchone
from deploy.runtime.times import rfc3339


class CheckIn:
    def __init__(self, db: MariaDB, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox

    async def check_in(self, code: str) -> dict[str, Any]:
        """First scan wins: the conditional UPDATE lets exactly one of two simultaneous scans through.

        Raises :class:`~billing_daemon.rules.Refused` (TICKET_NOT_FOUND, ALREADY_CHECKED_IN)."""
        async def scan(conn: aiomysql.Connection) -> dict[str, Any]:
            first = await execute(conn, "UPDATE tickets SET checked_in_at = NOW(6) WHERE code = %s"
                                        " AND status = 'valid' AND checked_in_at IS NULL", (code,))
            ticket = await fetchone(conn, "SELECT id, order_id, event_id, seat_id, seat_label, status, checked_in_at"
                                          " FROM tickets WHERE code = %s", (code,))
            view = ticket and {**ticket, "checked_in_at": rfc3339(ticket["checked_in_at"])}
            refusal = check_in_refusal(ticket, bool(first), view and view["checked_in_at"])
            if refusal is not None:
                raise refusal
            await self.outbox.emit(conn, "ticket.checked_in", {k: view[k] for k in (
                "id", "order_id", "event_id", "seat_id", "seat_label", "checked_in_at")})
            return view

        view = await self.db.transaction(scan, idempotent=False)
        self.outbox.emitted()
        return view
