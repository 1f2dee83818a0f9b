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
   gap-free, in write order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

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
from tests.helpers import wait_until
from tests.support.stack import fresh_pg_database

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TTL, RENEW = "1.5", "0.25"
LEASE_ENV = {"TICKETFLOW_BILLING_RELAY_LEASE_SECONDS": TTL, "TICKETFLOW_BILLING_RELAY_LEASE_RENEW_SECONDS": RENEW}
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
                                 on_epoch=lambda e, name=name: epochs.__setitem__(name, e)))
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


async def relay_state(session: aiohttp.ClientSession, service) -> str | None:
    """'active', 'standby', or None if the replica did not answer (paused, dead)."""
    try:
        async with session.get(f"{service.api.base_url}/ready", timeout=aiohttp.ClientTimeout(total=0.3)) as r:
            return (await r.json())["checks"]["relay"]
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError):
        return None


def log_events(service, start: int = 0) -> list[dict]:
    events = []
    for line in service.process.log_lines()[start:]:
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


async def test_replicas_on_two_nodes_never_relay_at_once_through_a_paused_and_a_killed_holder(migrated, tmp_path):
    node1, node2 = migrated[:2]
    async with fresh_pg_database("tf_glbridge") as bridge_dsn, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        # pipeline.maria (the write load and the checks) goes through galera1 only.
        pipeline = Pipeline(None, node1, bridge_dsn, tmp_path, session)
        try:
            await scenario(pipeline, session, node1, node2)
        finally:
            pipeline.stop()


async def scenario(pipeline: Pipeline, session: aiohttp.ClientSession, node1: str, node2: str) -> None:
    start_epoch = (await pipeline.maria("SELECT epoch FROM relay_leases WHERE stream = 'payments'"))[0]["epoch"]
    start_seq = (await pipeline.maria("SELECT last_seq FROM stream_heads WHERE stream = 'payments'"))[0]["last_seq"]
    assert start_seq == 0, "a fresh stream (the module's cluster is migrated for this test)"
    a = await pipeline.billing(TICKETFLOW_MARIADB_DSN=node1, **LEASE_ENV)
    b = await pipeline.billing(TICKETFLOW_MARIADB_DSN=node2, **LEASE_ENV)
    pipeline.start_bridge_stand_in()
    written: list[str] = []
    samples: list[tuple[str | None, str | None]] = []
    stop = asyncio.Event()

    async def write_load() -> None:  # a writer's rows, unnumbered, all through galera1
        while not stop.is_set():
            marker = str(uuid.uuid4())
            await pipeline.maria("INSERT INTO outbox (stream, event_id, type, data, created_at) VALUES"
                                 " ('payments', %s, 'ticket.checked_in', %s, NOW(6))",
                                 (marker, json.dumps({"id": marker})))
            written.append(marker)
            await asyncio.sleep(0.02)  # load pacing, not synchronisation

    async def sample() -> None:
        while not stop.is_set():
            samples.append(tuple(await asyncio.gather(relay_state(session, a), relay_state(session, b))))

    async def delivered_more(than: int) -> bool:
        return len(await pipeline.bridge_events()) > than

    async def is_(service, state: str) -> bool:
        return await relay_state(session, service) == state

    async def one_active() -> bool:
        return sorted([await relay_state(session, a), await relay_state(session, b)]) == ["active", "standby"]

    await wait_until(one_active, 20, "exactly one replica taking the relay lease")
    tasks = [asyncio.create_task(write_load()), asyncio.create_task(sample())]
    try:
        await wait_until(lambda: delivered_more(20), 20, "the first holder relaying")
        holder, other = (a, b) if await is_(a, "active") else (b, a)

        # 1. The holder freezes (SIGSTOP) past the TTL: the replica on the other node takes over after expiry.
        paused_at = time.monotonic()
        os.kill(holder.process.proc.pid, signal.SIGSTOP)
        try:
            await wait_until(lambda: is_(other, "active"), 20, "the standby taking over from the paused holder")
            took_over_after = time.monotonic() - paused_at
            seen = len(await pipeline.bridge_events())
            await wait_until(lambda: delivered_more(seen + 20), 20, "the new holder relaying")
        finally:
            woke_from = len(holder.process.log_lines())
            os.kill(holder.process.proc.pid, signal.SIGCONT)
        # Not before the lease expired: its last renewal was at most one renew interval before the pause.
        assert took_over_after >= float(TTL) - 2 * float(RENEW), f"taken over {took_over_after:.2f}s into {TTL}s"

        # 2. Woken, it finds its lease expired by its own clock and stands by, without relaying again.
        def lost_on_waking() -> bool:
            return any(e.get("event") == "relay_lease_lost" for e in log_events(holder, woke_from))

        await wait_until(lost_on_waking, 10, "the woken holder noticing its lease is gone")
        await wait_until(lambda: is_(holder, "standby"), 10, "the woken holder reporting standby")
        seen = len(await pipeline.bridge_events())
        await wait_until(lambda: delivered_more(seen + 20), 20, "the new holder still relaying")
        after_wake = [e.get("event") for e in log_events(holder, woke_from)]
        assert "relay_active" not in after_wake and "link_up" not in after_wake, (
            f"the paused holder relayed again after waking: {after_wake}")

        # 3. The new holder dies without giving the lease up: the woken one takes it after expiry.
        killed_at = time.monotonic()
        other.process.kill()
        await wait_until(lambda: is_(holder, "active"), 20, "the first holder taking the lease back after a SIGKILL")
        retaken_after = time.monotonic() - killed_at
        seen = len(await pipeline.bridge_events())
        await wait_until(lambda: delivered_more(seen + 20), 20, "relaying after the takeover")
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def all_delivered() -> bool:
        return len(await pipeline.bridge_events()) >= len(written)

    await wait_until(all_delivered, 30, f"all {len(written)} rows reaching the bridge stand-in")
    events = await pipeline.bridge_events()
    print(f"two nodes: {len(written)} rows, {len(samples)} samples, paused holder replaced after "
          f"{took_over_after:.2f}s, killed holder after {retaken_after:.2f}s")
    assert [e["seq"] for e in events] == list(range(1, len(written) + 1)), "a gap or a repeat in the stream"
    assert [e["data"]["id"] for e in events] == written, "rows missing, repeated or out of write order"
    assert not [s for s in samples if s == ("active", "active")], "both replicas relaying at once"
    assert any(s[0] == "active" for s in samples) and any(s[1] == "active" for s in samples), \
        "each node's replica relayed at some point"
    lease = (await pipeline.maria("SELECT epoch FROM relay_leases WHERE stream = 'payments'"))[0]
    assert lease["epoch"] == start_epoch + 3, "one take each: the first holder, the standby, the first holder again"
