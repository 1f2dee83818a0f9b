"""Billing's relay lease across two Galera nodes: never two relays, whatever node each replica is on (issue 12).

A private Galera x3 (the ``galera`` fixture, tests/ha/conftest.py). The two billing replicas'
MariaDB DSNs name two DIFFERENT nodes directly (galera1 and galera2), not HAProxy's writer port,
so their ``GET_LOCK``-style node-local state could not see each other: only the lease row,
whose writes Galera certifies cluster-wide, keeps one relay.

Where the load goes in: every outbox row is written through ONE node (galera1), one row per
autocommit transaction from one connection. The relay numbers unnumbered rows in AUTO_INCREMENT
id order (billing_daemon/store/outbox.py); Galera's ``auto_increment_offset`` makes ids
time-ordered only within one node, so rows written on two nodes could be numbered out of
commit order (still gap-free: numbers are assigned by the one relay, never by writers). With one
writing node, insertion order = commit order = id order, so the stream must arrive not only
gap-free but in exactly the order the rows were written; the test checks both. The relay on
galera2 numbers rows it never wrote itself (``wsrep_sync_wait=1`` makes its reads causal).

1. Racing takes: two leases on two nodes run the compare-and-set at the same instant, many
   times. Exactly one wins each round; the loser gets 0 rows or a certification failure (1213)
   and answers "not the leader" (``acquire`` returns False); the epoch rises by one per round.
2. Two billing processes: the holder is SIGSTOPped past the TTL (the standby takes over only
   after the expiry; the woken holder stands by without relaying again), then the new holder
   is SIGKILLed (the woken one takes the lease back after the expiry). Both replicas' relay
   state is sampled throughout: never both active. The bridge stand-in receives every row once,
   gap-free, in write order. (The scenario is tests/support/lease_scenario.py, which
   tests/billing/test_lease_replicas.py runs on one MariaDB.)
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import aiomysql
import pymysql
import pytest

import billing_daemon.store.lease as lease_module
from billing_daemon.store import BillingStore
from billing_daemon.store.lease import RelayLease
from billing_daemon.store.outbox import OUT_STREAM
from deploy.ops.stack.topology import HATopology
from deploy.runtime.mysql import MariaDB, MariaDsn, connect_session
from tests.billing.conftest import Pipeline
from tests.support.lease_scenario import LEASE_ENV, relay_through_pause_and_kill
from tests.support.stack import fresh_pg_database

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROUNDS = 40


def node_dsns(galera: HATopology) -> list[str]:
    """Each node's own DSN (its own port, not the writer port), galera1 first."""
    return [n.dsn() for n in sorted(galera.galera.nodes, key=lambda n: n.name)]


@pytest.fixture(scope="module")
def migrated(galera: HATopology) -> list[str]:
    """The billing schema on the cluster, migrated through one node (DDL replicates to all)."""
    async def migrate() -> None:
        database = MariaDB(node_dsns(galera)[0])
        try:
            await BillingStore(database).migrate()
        finally:
            await database.close()

    asyncio.run(migrate())
    return node_dsns(galera)


async def lease_row(dsn: str) -> dict:
    conn = await connect_session(MariaDsn.parse(dsn))
    try:
        async with conn.cursor(aiomysql.DictCursor) as cur:
            await cur.execute("SELECT l.owner, l.epoch, h.relay_epoch FROM relay_leases l"
                              " JOIN stream_heads h USING (stream) WHERE l.stream = %s", (OUT_STREAM,))
            return await cur.fetchone()
    finally:
        conn.close()


async def test_two_nodes_racing_the_take_one_wins_every_round_and_the_loser_is_not_the_leader(migrated, monkeypatch):
    node1, node2 = migrated[:2]
    real_connect = lease_module.connect_session
    barrier: asyncio.Barrier | None = None

    async def connect_then_line_up(dsn, timeout: float = 5.0):
        """Both sessions open first, then both takes start together (the race is the compare-and-set)."""
        conn = await real_connect(dsn, timeout)
        assert barrier is not None
        await barrier.wait()
        return conn

    monkeypatch.setattr(lease_module, "connect_session", connect_then_line_up)
    losses: dict[str, int] = {"0 rows": 0, "1213": 0}

    def spy(lease: RelayLease) -> RelayLease:
        take = lease._take

        async def recorded(conn):
            try:
                epoch, sent = await take(conn)
            except pymysql.err.MySQLError as exc:
                if exc.args and exc.args[0] == 1213:
                    losses["1213"] += 1
                raise
            if epoch is None:
                losses["0 rows"] += 1
            return epoch, sent

        lease._take = recorded
        return lease

    first_epoch = (await lease_row(node1))["epoch"]
    for round_ in range(1, ROUNDS + 1):
        barrier = asyncio.Barrier(2)
        epochs: dict[str, int] = {}
        leases = [spy(RelayLease(dsn, OUT_STREAM, ttl=3.0, renew_every=0.5,
                                 on_epoch=lambda e, name=name, epochs=epochs: epochs.__setitem__(name, e)))
                  for name, dsn in (("galera1", node1), ("galera2", node2))]
        try:
            won = await asyncio.gather(*(lease.acquire(lambda: None) for lease in leases))
            assert won.count(True) == 1, f"round {round_}: {won} (both or neither took the lease)"
            winner, loser = (leases[0], leases[1]) if won[0] else (leases[1], leases[0])
            assert loser.epoch is None and not loser.timer.valid(time.monotonic()), "the loser thinks it leads"
            assert list(epochs.values()) == [winner.epoch], "only the winner fences the stream"
            assert winner.epoch == first_epoch + round_, "one take per round, exactly"
            for dsn in (node1, node2):  # the same answer on both nodes
                state = await lease_row(dsn)
                assert (state["owner"], state["epoch"], state["relay_epoch"]) == \
                    (winner.owner, winner.epoch, winner.epoch), (round_, dsn, state)
        finally:
            for lease in leases:
                await lease.release()  # the winner frees it at once for the next round
    print(f"{ROUNDS} racing takes on two nodes, the loser saw: {losses}")
    assert sum(losses.values()) == ROUNDS
    # The race was real: at least once both UPDATEs ran on their own node, and Galera's
    # certification (not a row lock, which is node-local) refused one of them at commit.
    assert losses["1213"] > 0, losses


async def test_replicas_on_two_nodes_never_relay_at_once_through_a_paused_and_a_killed_holder(migrated, tmp_path):
    node1, node2 = migrated[:2]
    async with fresh_pg_database("tf_glbridge") as bridge_dsn, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        # pipeline.maria (the write load and the checks) goes through galera1 only.
        pipeline = Pipeline(None, node1, bridge_dsn, tmp_path, session)
        try:
            a = await pipeline.billing(TICKETFLOW_MARIADB_DSN=node1, **LEASE_ENV)
            b = await pipeline.billing(TICKETFLOW_MARIADB_DSN=node2, **LEASE_ENV)
            figures = await relay_through_pause_and_kill(pipeline, session, a, b)
            print(f"replicas on two nodes: {figures}")
        finally:
            pipeline.stop()


