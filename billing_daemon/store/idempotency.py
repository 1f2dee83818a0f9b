"""Idempotency-Keys in MariaDB: claimed in the request's own transaction, answered in it.

A key's row holds the request's hash and, once answered, the HTTP response
(status, body) it got: a replay returns exactly that (:class:`Replayed`). The
response of an :data:`~billing_daemon.rules.Answer` is the API layer's to decide
(``billing_daemon.api.response``), handed in as ``respond`` and needed only to
record one; nothing here knows a status.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomysql

from billing_daemon.rules import Answer, key_reused
from deploy.runtime.mysql import MariaDB, execute, fetchone

Key = tuple[str, str, str]  # (scope, key, request hash), from deploy.runtime.http.idempotency
Response = tuple[int, dict[str, Any]]
Respond = Callable[[Answer], Response]


@dataclass(frozen=True)
class Replayed:
    """The response a key was answered with before, returned again as it was."""

    status: int
    body: dict[str, Any]


Result = Answer | Replayed  # what an idempotent store call returns


def _no_responses(answer: Answer) -> Response:
    raise RuntimeError("this store was built without the API's responses (respond=): it cannot record an answer")


class IdempotencyKeys:
    def __init__(self, db: MariaDB, respond: Respond | None = None) -> None:
        self.db = db
        self.respond = respond or _no_responses

    async def claim(self, conn: aiomysql.Connection, key: Key, attempt_id: str | None = None) -> dict[str, Any] | None:
        """Claim a key in the caller's transaction: None if it is ours now, else its row
        (``status`` 0: its request is still running).

        ``attempt_id``: the payment attempt a newly claimed key waits on if the transaction
        creates it (saves :meth:`wait_on`'s round trip); if it answers instead, :meth:`answer`
        clears it, so no key ever names an attempt that does not exist.

        A concurrent claim of the same key waits on the row lock until the first
        transaction ends, then finds its row (or, if it rolled back, claims it).
        """
        scope, idem_key, request_hash = key
        claimed = await execute(conn, "INSERT IGNORE INTO idempotency_keys (scope, idem_key, request_hash, status,"
                                      " attempt_id, created_at) VALUES (%s, %s, %s, 0, %s, NOW(6))",
                                (scope, idem_key, request_hash, attempt_id))
        if claimed:
            return None
        prior = await fetchone(conn, "SELECT request_hash, status, body, attempt_id FROM idempotency_keys"
                                     " WHERE scope = %s AND idem_key = %s FOR UPDATE", (scope, idem_key))
        if prior["request_hash"] != request_hash:
            raise key_reused()
        return prior

    @staticmethod
    def replay(prior: dict[str, Any]) -> Replayed:
        """The response a claimed key was answered with, exactly as it was first given."""
        return Replayed(prior["status"], json.loads(prior["body"]))

    async def answer(self, conn: aiomysql.Connection, key: Key, answer: Answer) -> Answer:
        """Record ``answer``'s response under ``key`` (claimed in this transaction); returns ``answer``."""
        status, body = self.respond(answer)
        await execute(conn, "UPDATE idempotency_keys SET status = %s, body = %s, attempt_id = NULL"
                            " WHERE scope = %s AND idem_key = %s", (status, json.dumps(body), key[0], key[1]))
        return answer

    async def answer_waiting(self, conn: aiomysql.Connection, attempt_id: str, answer: Answer) -> None:
        """Record ``answer``'s response under every key still waiting on the payment attempt."""
        status, body = self.respond(answer)
        await execute(conn, "UPDATE idempotency_keys SET status = %s, body = %s WHERE attempt_id = %s AND status = 0",
                      (status, json.dumps(body), attempt_id))

    async def answered(self, conn: aiomysql.Connection, key: Key) -> Replayed | None:
        """The response ``key`` was answered with, if it was (one key, one answer)."""
        prior = await fetchone(conn, "SELECT status, body FROM idempotency_keys WHERE scope = %s AND idem_key = %s",
                               (key[0], key[1]))
        return self.replay(prior) if prior is not None and prior["status"] else None

    async def wait_on(self, conn: aiomysql.Connection, key: Key, attempt_id: str) -> None:
        """``key``'s request now waits on the payment attempt: it gets that attempt's answer."""
        await execute(conn, "UPDATE idempotency_keys SET attempt_id = %s WHERE scope = %s AND idem_key = %s",
                      (attempt_id, key[0], key[1]))

    async def prune(self, hours: float) -> int:
        """Forget answered keys older than ``hours`` (a key still running is never dropped)."""
        async def prune(conn: aiomysql.Connection) -> int:
            deleted = await execute(conn, "DELETE FROM idempotency_keys WHERE status <> 0"
                                          " AND created_at < NOW(6) - INTERVAL %s SECOND", (int(hours * 3600),))
            await conn.commit()
            return deleted

        return await self.db.run(prune, idempotent=True)
