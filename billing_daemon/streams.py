"""Billing's two links: the reservation stream in (port 7001) and the payments stream out.

In: each batch is applied in ONE MariaDB transaction together with the
stream's position; the receiver acks only after that commit, and the welcome
position is read back from MariaDB at every handshake.

Out: the outbox relay runs on the one replica holding a MariaDB named lock
(GET_LOCK). It also numbers the stream: writers insert unnumbered rows and the
relay's reads assign the sequence (billing_daemon/store/outbox.py). MariaDB has
no LISTEN/NOTIFY: this process's own commits wake the relay at once and the poll
interval (TICKETFLOW_BILLING_RELAY_POLL_SECONDS, 0.25 s) covers writes made by
other replicas. In a Galera cluster GET_LOCK is local to one node, so every
billing replica must reach the cluster through the same writer node (HAProxy's
usual single-writer setup) — which the AUTO_INCREMENT order the sequencer relies
on needs too; a multi-writer Galera setup must pick the relay by the lease, not
by GET_LOCK.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import aiomysql

from billing_daemon.config import Settings
from billing_daemon.store.inbox import Inbox
from billing_daemon.store.outbox import OUT_STREAM, Outbox
from deploy.runtime.config import link_targets, receiver_link, sender_link
from deploy.runtime.mysql import MariaDsn, connect_session, fetchval
from deploy.runtime.relay import OutboxRelay, outbox_relay
from protocol.messages import Event
from protocol.receiver import Receiver

IN_STREAM = "reservations"
RELAY_LOCK = "ticketflow.billing.relay"
# Events applied in one transaction at most (the protocol's default is 1000): a backlog drains in
# fewer commits. The sender's window (TICKETFLOW_LINK_WINDOW) is twice this, so a batch arrives
# while the one before commits.
MAX_BATCH = 4000


class ReservationInbox:
    """The protocol StreamHandler for the reservation stream."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def position(self) -> int:
        return await self.inbox.position(IN_STREAM)

    async def apply(self, events: Sequence[Event]) -> None:
        await self.inbox.apply(IN_STREAM, events)


def make_receiver(settings: Settings, inbox: Inbox, node: str) -> Receiver:
    # reuse_port: replicas on one host share the port and the kernel hands each new
    # connection to a live one; applying is safe from several replicas at once
    # (Inbox.apply serialises on the stream's position row).
    return Receiver({IN_STREAM: ReservationInbox(inbox)},
                    receiver_link(settings, node),
                    host=settings.link_host, port=settings.link_port, reuse_port=True, max_batch=MAX_BATCH)


def relay_lock_name(database: str) -> str:
    """GET_LOCK names are server-wide, not per database: name the database, so two deployments (or
    two test runs) sharing a MariaDB server do not hold each other's relay on standby. At most 64
    characters, as MariaDB requires."""
    name = f"{RELAY_LOCK}.{database}"
    return name if len(name) <= 64 else f"{RELAY_LOCK}.{hashlib.sha256(database.encode()).hexdigest()[:32]}"


class MariaDbNamedLock:
    def __init__(self, dsn: str) -> None:
        self.dsn = MariaDsn.parse(dsn)
        self.name = relay_lock_name(self.dsn.database)
        self.conn: aiomysql.Connection | None = None

    async def acquire(self, wake: Callable[[], None]) -> bool:
        self.conn = await connect_session(self.dsn)
        return await fetchval(self.conn, "SELECT GET_LOCK(%s, 0)", (self.name,)) == 1

    async def check(self) -> None:
        assert self.conn is not None
        if await fetchval(self.conn, "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,)) != 1:
            raise RuntimeError("the relay lock is no longer held by this session")

    async def release(self) -> None:
        if self.conn is not None:
            self.conn.close()  # ending the session releases the lock
            self.conn = None


def make_relay(settings: Settings, outbox: Outbox, node: str) -> OutboxRelay:
    relay = outbox_relay(OUT_STREAM, link_targets(settings.bridge_host, settings.bridge_port), outbox.read,
                         outbox.head, outbox.record_ack, sender_link(settings, node),
                         lambda: MariaDbNamedLock(settings.mariadb_dsn),
                         poll_interval=settings.relay_poll, lock_retry=settings.relay_lock_retry)
    outbox.on_emit.append(relay.notify)
    return relay
