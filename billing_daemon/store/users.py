"""Users: sign-up (idempotent per key) and the user's own record. Credentials and tokens: ``billing_daemon.accounts``."""

from __future__ import annotations

from typing import Any

import aiomysql
import pymysql

from billing_daemon.rules import Ok, email_taken, request_in_progress
from billing_daemon.store.idempotency import IdempotencyKeys, Key, Result
from deploy.runtime.ids import uuid7
from deploy.runtime.mysql import MariaDB, execute, fetchone
from deploy.runtime.times import rfc3339


async def user_view(conn: aiomysql.Connection, user_id: str) -> dict[str, Any] | None:
    row = await fetchone(conn, "SELECT id, email, name, role, created_at FROM users WHERE id = %s", (user_id,))
    return None if row is None else {**row, "created_at": rfc3339(row["created_at"])}


class Users:
    def __init__(self, db: MariaDB, keys: IdempotencyKeys) -> None:
        self.db = db
        self.keys = keys

    async def create_user(self, email: str, name: str, key: Key | None = None, password_hash: str | None = None,
                          role: str = "buyer") -> Result:
        """``Ok(user, created=True)``, or with ``key`` used before, the first response given under it.

        Raises :class:`~billing_daemon.rules.Refused` (EMAIL_TAKEN; with a key: REQUEST_IN_PROGRESS,
        IDEMPOTENCY_KEY_REUSED).
        """
        user_id = str(uuid7())

        async def create(conn: aiomysql.Connection) -> Result:
            if key is not None:
                prior = await self.keys.claim(conn, key)
                if prior is not None:
                    if not prior["status"]:  # cannot outlive its one transaction; never answer it half-done
                        raise request_in_progress()
                    return self.keys.replay(prior)
            try:
                await execute(conn, "INSERT INTO users (id, email, name, role, password_hash, created_at)"
                                    " VALUES (%s, %s, %s, %s, %s, NOW(6))", (user_id, email, name, role, password_hash))
            except pymysql.err.IntegrityError:
                raise email_taken() from None
            created = Ok(await user_view(conn, user_id), created=True)
            return created if key is None else await self.keys.answer(conn, key, created)

        # With a key a retry after a lost connection is safe: it finds the first answer.
        return await self.db.transaction(create, idempotent=key is not None)

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda c: user_view(c, user_id), idempotent=True)
