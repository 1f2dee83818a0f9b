"""Accounts: passwords, sign-in tokens, logout, and the audit trail of who changed money.

Passwords are hashed with argon2id (argon2-cffi, memory-hard), off the event
loop: one hash costs tens of milliseconds of CPU. Billing is the only issuer of
tokens (:class:`deploy.runtime.auth.TokenIssuer`); logging out records the
token's id until it would have expired, and billing refuses a revoked token at
once. The other daemons verify offline and honour a logout when the short-lived
token expires (``TICKETFLOW_TOKEN_TTL_SECONDS``).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import aiomysql
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from deploy.runtime.auth import Principal
from deploy.runtime.ids import uuid7
from deploy.runtime.mysql import MariaDB, execute, fetchall, fetchone, fetchval
from deploy.runtime.times import naive_utc

_hasher = PasswordHasher()  # argon2id with the library's recommended parameters (RFC 9106, low-memory profile)


@functools.cache
def _dummy_hash() -> str:
    """Verified when the e-mail is unknown, so a login takes as long whether or not the account exists.
    Made on the first such login (in its worker thread), not at import: a hash costs tens of
    milliseconds of CPU that every daemon start would otherwise pay before it serves anything."""
    return _hasher.hash("no such account: timing equaliser")


MIN_PASSWORD = 10
MAX_PASSWORD = 256


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
        except (VerificationError, InvalidHashError, UnicodeEncodeError):  # a lone surrogate is no password
            return False

    return await asyncio.to_thread(check)


async def audit(conn: aiomysql.Connection, actor: Principal | None, action: str, target: str,
                reason: str | None = None) -> None:
    """Record who did what to which order or seat, in the caller's transaction."""
    who, role = (actor.subject, actor.role or "anonymous") if actor is not None else ("billing", "service")
    await execute(conn, "INSERT INTO audit_log (id, at, actor, actor_role, action, target, reason)"
                        " VALUES (%s, NOW(6), %s, %s, %s, %s, %s)",
                  (str(uuid7()), who[:200], role, action, target, reason[:200] if reason else None))


class AccountStore:
    def __init__(self, db: MariaDB) -> None:
        self.db = db

    async def credentials(self, email: str) -> dict[str, Any] | None:
        """id, role and password hash of the account with ``email`` (None if there is none)."""
        return await self.db.run(lambda c: fetchone(
            c, "SELECT id, role, password_hash FROM users WHERE email = %s", (email,)), idempotent=True)

    async def revoke(self, caller: Principal) -> None:
        expires = naive_utc(caller.expires_at or 0)

        async def revoke(conn: aiomysql.Connection) -> None:
            await execute(conn, "INSERT IGNORE INTO revoked_tokens (jti, expires_at) VALUES (%s, %s)",
                          (caller.token_id, expires))

        await self.db.transaction(revoke, idempotent=True)

    async def is_revoked(self, caller: Principal) -> bool:
        if caller.token_id is None or caller.is_service:
            return False  # service tokens are rotated with the keys, not logged out
        return bool(await self.db.run(lambda c: fetchval(
            c, "SELECT 1 FROM revoked_tokens WHERE jti = %s", (caller.token_id,)), idempotent=True))

    async def prune_revoked(self) -> int:
        async def prune(conn: aiomysql.Connection) -> int:
            deleted = await execute(conn, "DELETE FROM revoked_tokens WHERE expires_at < NOW(6) - INTERVAL 1 HOUR")
            await conn.commit()
            return deleted

        return await self.db.run(prune, idempotent=True)

    async def record(self, actor: Principal, action: str, target: str, reason: str | None = None) -> None:
        """Record, in a transaction of its own, who moved money on ``target`` (an order), when and why."""
        async def write(conn: aiomysql.Connection) -> None:
            await audit(conn, actor, action, target, reason)

        await self.db.transaction(write, idempotent=False)

    async def audit_trail(self, target: str) -> list[dict[str, Any]]:
        return await self.db.run(lambda c: fetchall(
            c, "SELECT at, actor, actor_role, action, reason FROM audit_log WHERE target = %s ORDER BY at",
            (target,)), idempotent=True)
