"""All of the portal consumer's SQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from deploy.runtime import correlation
from deploy.runtime.ids import uuid7
from deploy.runtime.migrations import migrate_postgres
from deploy.runtime.pg import Database
from deploy.runtime.times import rfc3339


@dataclass(frozen=True)
class Notification:
    user_id: str
    kind: str
    order_id: str | None
    payload: dict[str, Any]


class PortalStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> list[str]:
        return await self.db.run(lambda c: migrate_postgres(c, "portal_consumer.migrations",
                                                            table="portal_schema_migrations"), idempotent=True)

    async def is_processed(self, event_id: str) -> bool:
        return bool(await self.db.run(lambda c: c.fetchval(
            "SELECT true FROM portal_processed WHERE event_id = $1", event_id), idempotent=True))

    async def record(self, event_id: str, kind: str, order_id: str | None, outcome: str,
                     notifications: list[Notification]) -> bool:
        """The dedupe record and the notifications, in one transaction. False if already recorded."""
        async def record(conn: asyncpg.Connection) -> bool:
            inserted = await conn.fetchval(
                "INSERT INTO portal_processed (event_id, type, order_id, outcome) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING RETURNING true", event_id, kind, order_id, outcome)
            if not inserted:
                return False
            correlation_id = correlation.current()  # the sale event's (README, "Tracing")
            await conn.executemany(
                "INSERT INTO portal_notifications (id, event_id, user_id, kind, order_id, payload, correlation_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [(uuid7(), event_id, n.user_id, n.kind, n.order_id, n.payload, correlation_id)
                 for n in notifications])
            return True

        return await self.db.transaction(record, idempotent=True)

    async def notifications(self, user_id: str | None, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT id, user_id, kind, order_id, payload, created_at, delivered_at FROM portal_notifications"
            " WHERE ($1::text IS NULL OR user_id = $1) ORDER BY created_at DESC LIMIT $2", user_id, limit),
            idempotent=True)
        return [{**dict(r), "id": str(r["id"]),
                 "created_at": rfc3339(r["created_at"]), "delivered_at": rfc3339(r["delivered_at"])}
                for r in rows]

    async def due_deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.db.run(lambda c: c.fetch(
            "SELECT id, user_id, kind, order_id, payload, attempts, correlation_id FROM portal_notifications"
            " WHERE delivered_at IS NULL AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $1", limit),
            idempotent=True)
        return [dict(r) for r in rows]

    async def delivered(self, notification_id: uuid.UUID) -> None:
        await self.db.run(lambda c: c.execute(
            "UPDATE portal_notifications SET delivered_at = now(), attempts = attempts + 1 WHERE id = $1",
            notification_id), idempotent=True)

    async def delivery_failed(self, notification_id: uuid.UUID, retry_in: float) -> None:
        await self.db.run(lambda c: c.execute(
            "UPDATE portal_notifications SET attempts = attempts + 1,"
            " next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1", notification_id, retry_in),
            idempotent=True)
