"""Orders as buyers and organizers read them: one order, a user's orders, an event's orders."""

from __future__ import annotations

import json
from typing import Any

import aiomysql

from deploy.runtime.mysql import MariaDB, fetchall, fetchone, fetchval
from deploy.runtime.times import rfc3339


# An order's tickets, payment attempts and refunds in ONE round trip (they were three): a row
# per item, ``k`` says which, ordered as the view lists them (tickets by seat label, the
# others by time). The columns are shared positionally; :func:`order_view` names them.
_ITEMS = ("SELECT 't' AS k, id, seat_id AS a, seat_label AS b, code AS c, status AS d, checked_in_at AS at,"
          " NULL AS n, seat_label AS label FROM tickets WHERE order_id = %s"
          " UNION ALL SELECT 'p', id, status, decline_reason, NULL, NULL, created_at, NULL, NULL"
          " FROM payment_attempts WHERE order_id = %s"
          " UNION ALL SELECT 'r', id, currency, reason, NULL, NULL, created_at, amount_minor, NULL"
          " FROM refunds WHERE order_id = %s"
          " ORDER BY k, label, at")


async def order_view(conn: aiomysql.Connection, order_id: str, row: dict[str, Any] | None = None,
                     ) -> dict[str, Any] | None:
    """An order with its tickets, payment attempts and refunds, as the API shows it (None: no such order).

    ``row``: the order's row when the caller has it as its own transaction wrote it (not read again)."""
    row = row or await fetchone(conn, "SELECT * FROM orders WHERE id = %s", (order_id,))
    if row is None:
        return None
    tickets: list[dict[str, Any]] = []
    payments: list[dict[str, Any]] = []
    refunds: list[dict[str, Any]] = []
    for i in await fetchall(conn, _ITEMS, (order_id, order_id, order_id)):
        if i["k"] == "t":
            tickets.append({"id": i["id"], "seat_id": i["a"], "seat_label": i["b"], "code": i["c"],
                            "status": i["d"], "checked_in_at": rfc3339(i["at"])})
        elif i["k"] == "p":
            payments.append({"id": i["id"], "status": i["a"], "decline_reason": i["b"],
                             "created_at": rfc3339(i["at"])})
        else:
            refunds.append({"id": i["id"], "amount_minor": i["n"], "currency": i["a"], "reason": i["b"],
                            "created_at": rfc3339(i["at"])})
    return {
        "id": row["id"], "reservation_id": row["id"], "user_id": row["user_id"], "event_id": row["event_id"],
        "status": row["status"], "amount_minor": row["amount_minor"], "currency": row["currency"],
        "seats": json.loads(row["seats"]), "expires_at": rfc3339(row["expires_at"]),
        "created_at": rfc3339(row["created_at"]), "paid_at": rfc3339(row["paid_at"]),
        "tickets": tickets, "payments": payments, "refunds": refunds,
    }


class Orders:
    def __init__(self, db: MariaDB) -> None:
        self.db = db

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda c: order_view(c, order_id), idempotent=True)

    async def exists(self, order_id: str) -> bool:
        return bool(await self.db.run(lambda c: fetchval(
            c, "SELECT 1 FROM orders WHERE id = %s", (order_id,)), idempotent=True))

    async def order_parties(self, order_id: str) -> dict[str, Any] | None:
        """Who may see an order: its buyer (user_id) and its event's organizer (organizer_id, may be None)."""
        return await self.db.run(lambda c: fetchone(
            c, "SELECT user_id, organizer_id FROM orders WHERE id = %s", (order_id,)), idempotent=True)

    async def user_orders(self, user_id: str) -> list[dict[str, Any]] | None:
        """A user's orders, oldest first (None: no such user)."""
        async def fetch(conn: aiomysql.Connection) -> list[dict[str, Any]] | None:
            if await fetchval(conn, "SELECT 1 FROM users WHERE id = %s", (user_id,)) is None:
                return None
            ids = [r["id"] for r in await fetchall(
                conn, "SELECT id FROM orders WHERE user_id = %s ORDER BY created_at", (user_id,))]
            return [await order_view(conn, order_id) for order_id in ids]

        return await self.db.run(fetch, idempotent=True)

    async def event_orders(self, event_id: str, organizer_id: str | None,
                           limit: int = 1000) -> list[dict[str, Any]]:
        """The orders of an event (those whose event ``organizer_id`` organizes, unless None: every one)."""
        async def fetch(conn: aiomysql.Connection) -> list[dict[str, Any]]:
            ids = [r["id"] for r in await fetchall(
                conn, "SELECT id FROM orders WHERE event_id = %s AND (%s IS NULL OR organizer_id = %s)"
                      " ORDER BY created_at LIMIT %s", (event_id, organizer_id, organizer_id, limit))]
            return [await order_view(conn, order_id) for order_id in ids]

        return await self.db.run(fetch, idempotent=True)
