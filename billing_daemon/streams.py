"""Billing's two links: the reservation stream in (port 7001) and the payments stream out.

In: each batch is applied in ONE MariaDB transaction together with the
stream's position; the receiver acks only after that commit, and the welcome
position is read back from MariaDB at every handshake.

Out: the outbox relay runs on the one replica holding the relay lease, a
``relay_leases`` row taken and renewed by compare-and-set transactions
(billing_daemon/store/lease.py). Unlike GET_LOCK, which is local to one server,
the row's writes are certified across a Galera cluster, so replicas on different
nodes still get one relay. The relay also numbers the stream: writers insert
unnumbered rows and the relay's reads assign the sequence
(billing_daemon/store/outbox.py), fenced by the lease's epoch. MariaDB has no
LISTEN/NOTIFY: this process's own commits wake the relay at once and the poll
interval (TICKETFLOW_BILLING_RELAY_POLL_SECONDS, 0.25 s) covers writes made by
other replicas. Writers must still reach a Galera cluster through one writer node
(HAProxy's usual single-writer setup): the AUTO_INCREMENT order the sequencer
relies on is per node.
"""

from __future__ import annotations

from collections.abc import Sequence

from billing_daemon.config import Settings
from billing_daemon.store.inbox import Inbox
from billing_daemon.store.lease import RelayLease
from billing_daemon.store.outbox import OUT_STREAM, Outbox
from deploy.runtime.config import link_targets, receiver_link, sender_link
from deploy.runtime.relay import OutboxRelay, outbox_relay
from protocol.messages import Event
from protocol.receiver import Receiver

IN_STREAM = "reservations"
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


def make_relay(settings: Settings, outbox: Outbox, node: str) -> OutboxRelay:
    def fence(epoch: int) -> None:  # this process numbers the stream under the epoch it took
        outbox.epoch = epoch

    relay = outbox_relay(OUT_STREAM, link_targets(settings.bridge_host, settings.bridge_port), outbox.read,
                         outbox.head, outbox.record_ack, sender_link(settings, node),
                         lambda: RelayLease(settings.mariadb_dsn, OUT_STREAM, ttl=settings.relay_lease_ttl,
                                            renew_every=settings.relay_lease_renew, on_epoch=fence),
                         poll_interval=settings.relay_poll, lock_retry=settings.relay_lock_retry)
    relay.check_interval = settings.relay_lease_renew  # the relay's lock check is the lease's renewal
    outbox.on_emit.append(relay.notify)
    return relay
