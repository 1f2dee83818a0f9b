"""All of the billing daemon's SQL (MariaDB), one module per job. Handlers call these, never the database.

- :mod:`.inbox` — the reservation stream applied (orders opened, cancelled) and release-check;
- :mod:`.orders` — order views: one order, a user's, an event's;
- :mod:`.users` — sign-up and the user record (credentials, tokens, audit: ``billing_daemon.accounts``);
- :mod:`.payments` — attempts, their recorded outcome, tickets, refunds (the gateway calls around
  them: ``billing_daemon.payments``);
- :mod:`.checkin` — a ticket admits once;
- :mod:`.sales` — an event's sales for its organizer (aggregated in SQL);
- :mod:`.outbox` — the payments stream: append, read, ack, prune;
- :mod:`.idempotency` — Idempotency-Keys claimed and answered in the request's transaction.

What the state means is decided by the pure functions of ``billing_daemon.rules``;
refusals are :class:`~billing_daemon.rules.Refused` (a code, no HTTP status).
:class:`BillingStore` holds one of each over one pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from billing_daemon.store.checkin import CheckIn
from billing_daemon.store.idempotency import IdempotencyKeys, Key, Replayed, Respond, Result
from billing_daemon.store.inbox import Inbox, StreamGap
from billing_daemon.store.orders import Orders
from billing_daemon.store.outbox import OUT_STREAM, Outbox
from billing_daemon.store.payments import PaymentStore, Settled, process_lock_name
from billing_daemon.store.sales import Sales
from billing_daemon.store.users import Users
from deploy.runtime.migrations import migrate_mariadb
from deploy.runtime.mysql import MariaDB
from protocol.messages import Event

__all__ = ["OUT_STREAM", "BillingStore", "Key", "Replayed", "Result", "Settled", "StreamGap", "process_lock_name"]


class BillingStore:
    """Billing's stores over one MariaDB pool.

    ``respond`` turns an answer into the HTTP response recorded under an Idempotency-Key
    (``billing_daemon.api.response``); only stores that record answers need it.
    """

    def __init__(self, db: MariaDB, respond: Respond | None = None) -> None:
        self.db = db
        self.keys = IdempotencyKeys(db, respond)
        self.outbox = Outbox(db)
        self.inbox = Inbox(db)
        self.orders = Orders(db)
        self.users = Users(db, self.keys)
        self.payments = PaymentStore(db, self.keys, self.outbox)
        self.checkin = CheckIn(db, self.outbox)
        self.sales = Sales(db)

    async def migrate(self) -> list[str]:
        return await self.db.run(lambda c: migrate_mariadb(c, "billing_daemon.migrations"), idempotent=True)

    async def prune(self, retention_hours: float, idempotency_hours: float) -> tuple[int, int]:
        """Drop acknowledged outbox rows past retention and answered keys past theirs."""
        return await self.outbox.prune(retention_hours), await self.keys.prune(idempotency_hours)

    # The operator tooling's view (``ticketflow``: migrate, users, link): public, stable names.

    async def stream_position(self, stream: str) -> int:
        return await self.inbox.position(stream)

    async def advance_stream_position(self, stream: str, expected: int, to: int) -> bool:
        return await self.inbox.advance_position(stream, expected, to)

    async def apply_reservation_events(self, stream: str, events: Sequence[Event]) -> None:
        await self.inbox.apply(stream, events)

    async def create_user(self, email: str, name: str, key: Key | None = None, password_hash: str | None = None,
                          role: str = "buyer") -> Result:
        return await self.users.create_user(email, name, key, password_hash, role)

    async def stream_state(self) -> dict[str, Any]:
        return await self.outbox.state()
