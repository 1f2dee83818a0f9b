"""All of the reservation daemon's SQL. Handlers and jobs call these methods, never the database.

Split by job: ``events`` (events, seats, listings, counts), ``holds`` (holds, cancel,
confirm, release, the sweeper's claim and settle, audit), ``outbox`` (the stream to
billing, pruning). State changes are single calls to the stored functions in
``reservation_daemon/sql/functions/`` (one round trip each) and answer with an
:class:`Outcome`; each writes its outbox row in the same transaction.
"""

from __future__ import annotations

from deploy.runtime.migrations import migrate_postgres
from deploy.runtime.pg import Database
from reservation_daemon.store.events import EventStore, Page, Section, UnknownCursor
from reservation_daemon.store.holds import HoldStore
from reservation_daemon.store.outbox import SOURCE, STREAM, OutboxStore
from reservation_daemon.store.outcome import Outcome

__all__ = ["Outcome", "Page", "ReservationStore", "SOURCE", "STREAM", "Section", "UnknownCursor"]

MIGRATIONS = "reservation_daemon.migrations"
FUNCTIONS = "reservation_daemon.sql.functions"


class ReservationStore(EventStore, HoldStore, OutboxStore):
    """The daemon's one database interface (also what ``ticketflow`` tooling calls)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.on_emit = []  # callbacks run after a commit that wrote outbox rows (OutboxStore.emitted)

    async def migrate(self) -> list[str]:
        """Versioned migrations, then the stored functions whose files changed."""
        return await self.db.run(lambda c: migrate_postgres(c, MIGRATIONS, functions=FUNCTIONS), idempotent=True)
