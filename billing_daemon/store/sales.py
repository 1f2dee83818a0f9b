"""An event's sales for its organizer: order counts and money by status and currency, revenue by
section and by currency, and paid orders over time. Every figure is a GROUP BY in MariaDB over the
event's orders (index ``orders_event_sales``: event, status, paid_at); no order is loaded here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiomysql

from deploy.runtime.mysql import MariaDB, fetchall
from deploy.runtime.times import rfc3339

# Bucket widths of the sales-over-time series, seconds: the smallest that keeps it to MAX_BUCKETS.
BUCKETS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BUCKETS = 48

# Only the caller's orders: an organizer (``%s`` = its id) sees its events' orders; None: a service, all.
_MINE = "o.event_id = %s AND (%s IS NULL OR o.organizer_id = %s)"

_BY_STATUS = (f"SELECT o.status, o.currency, COUNT(*) AS orders, SUM(JSON_LENGTH(o.seats)) AS seats,"
              f" SUM(o.amount_minor) AS amount_minor, MIN(o.paid_at) AS first_paid, MAX(o.paid_at) AS last_paid"
              f" FROM orders o WHERE {_MINE} GROUP BY o.status, o.currency ORDER BY o.status, o.currency")

# Each paid order's seats (section, price, currency, as the hold priced them) as rows.
_BY_SECTION = (f"SELECT s.section, s.currency, COUNT(*) AS seats, SUM(s.price_minor) AS amount_minor"
               f" FROM orders o, JSON_TABLE(o.seats, '$[*]' COLUMNS ("
               f"   section VARCHAR(100) PATH '$.section', price_minor BIGINT PATH '$.price_minor',"
               f"   currency CHAR(3) PATH '$.currency')) AS s"
               f" WHERE {_MINE} AND o.status = 'paid' GROUP BY s.section, s.currency"
               f" ORDER BY s.section, s.currency")

_OVER_TIME = (f"SELECT FLOOR(UNIX_TIMESTAMP(o.paid_at) / %s) * %s AS bucket, o.currency, COUNT(*) AS orders,"
              f" SUM(JSON_LENGTH(o.seats)) AS seats, SUM(o.amount_minor) AS amount_minor"
              f" FROM orders o WHERE {_MINE} AND o.status = 'paid' AND o.paid_at IS NOT NULL"
              f" GROUP BY bucket, o.currency ORDER BY bucket, o.currency")


def bucket_seconds(first: datetime | None, last: datetime | None) -> int:
    """The narrowest bucket that fits the span of sales into at most MAX_BUCKETS."""
    if first is None or last is None:
        return BUCKETS[0]
    span = (last - first).total_seconds()
    return next((b for b in BUCKETS if span / b < MAX_BUCKETS), BUCKETS[-1])


class Sales:
    def __init__(self, db: MariaDB) -> None:
        self.db = db

    async def event_sales(self, event_id: str, organizer_id: str | None) -> dict[str, Any] | None:
        """The sales report of ``event_id`` over the orders ``organizer_id`` organizes (None: every order).

        None when there is no such order at all (an unknown event, someone else's, none sold yet)."""
        mine = (event_id, organizer_id, organizer_id)

        async def fetch(conn: aiomysql.Connection) -> dict[str, Any] | None:
            by_status = await fetchall(conn, _BY_STATUS, mine)
            if not by_status:
                return None
            paid = [r for r in by_status if r["status"] == "paid"]
            first = min((r["first_paid"] for r in paid if r["first_paid"]), default=None)
            last = max((r["last_paid"] for r in paid if r["last_paid"]), default=None)
            width = bucket_seconds(first, last)
            sections = await fetchall(conn, _BY_SECTION, mine)
            points = await fetchall(conn, _OVER_TIME, (width, width, *mine))
            return {
                "event_id": event_id,
                "orders": [{"status": r["status"], "currency": r["currency"], "orders": int(r["orders"]),
                            "seats": int(r["seats"] or 0), "amount_minor": int(r["amount_minor"] or 0)}
                           for r in by_status],
                "revenue": [{"currency": r["currency"], "orders": int(r["orders"]), "seats": int(r["seats"] or 0),
                             "amount_minor": int(r["amount_minor"] or 0)} for r in paid],
                "by_section": [{"section": r["section"], "currency": r["currency"], "seats": int(r["seats"]),
                                "amount_minor": int(r["amount_minor"] or 0)} for r in sections],
                "over_time": {"bucket_seconds": width, "points": [
                    {"at": rfc3339(float(p["bucket"])), "currency": p["currency"],
                     "orders": int(p["orders"]), "seats": int(p["seats"] or 0),
                     "amount_minor": int(p["amount_minor"] or 0)} for p in points]},
            }

        return await self.db.run(fetch, idempotent=True)
