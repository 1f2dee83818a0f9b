"""The reservation stream is numbered by the relay, not by each writer (issue 13, migration 0008).

Writers insert outbox rows without a seq; tf_sequence_outbox (through the relay's read,
its head, the link-down sequencer and pruning) numbers committed rows. These tests drive
the stored functions from many connections of a real PostgreSQL at once, with a reader
numbering and reading concurrently the way the relay does.
"""

import asyncio
import random
import uuid
from datetime import datetime, timezone

import asyncpg
import pytest

from deploy.runtime.pg import Database
from reservation_daemon.store import ReservationStore, Section
from tests.helpers import wait_until
from tests.reservation.conftest import create_event, seats_of
from tests.reservation.test_stream import acked, check_receiver_history
from tests.support.stack import fresh_pg_database

pytestmark = pytest.mark.stack


@pytest.fixture
async def store():
    async with fresh_pg_database("tf_seq") as dsn:
        db = Database(dsn, max_size=4)
        await db.start()
        try:
            s = ReservationStore(db)
            await s.migrate()
            s.dsn = dsn
            yield s
        finally:
            await db.close()


async def make_seats(store, count: int) -> list[uuid.UUID]:
    event_id = uuid.uuid4()
    answer = await store.create_event(event_id, "Seq", "Hall", datetime(2030, 1, 1, tzinfo=timezone.utc), "",
                                      [Section("A", -(-count // 50), 50, 1000, "EUR")])
    assert answer.name == "event_created", answer
    conn = await asyncpg.connect(store.dsn)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM seats WHERE event_id = $1 ORDER BY id", event_id)]
    finally:
        await conn.close()


HOLD = "SELECT outcome FROM tf_reserve($1, NULL, $2, 'u', make_interval(secs => 600), NULL, NULL, NULL)"


class Reader:
    """Reads the stream the way the relay does (tf_outbox_read), numbering as it goes."""

    def __init__(self, store) -> None:
        self.store = store
        self.events = []
        self.stop = asyncio.Event()

    @property
    def position(self) -> int:
        return self.events[-1].seq if self.events else 0

    async def step(self) -> int:
        batch = await self.store.read_outbox(self.position, 64)
        self.events += batch
        return len(batch)

    async def run(self) -> None:
        while not self.stop.is_set():
            await self.step()

    async def drain(self) -> None:
        while await self.step():
            pass


async def test_concurrent_holds_cancels_and_rollbacks_come_out_gap_free_each_committed_event_once(store):
    seats = await make_seats(store, 400)
    reader = Reader(store)
    reading = asyncio.create_task(reader.run())
    committed: dict[uuid.UUID, list[str]] = {}  # reservation id -> event types its committed transactions emitted
    rolled_back: set[uuid.UUID] = set()
    rng = random.Random(13)
    free = list(seats)
    rng.shuffle(free)

    async def writer(n: int) -> None:
        conn = await asyncpg.connect(store.dsn)
        try:
            mine: list[uuid.UUID] = []
            for _ in range(25):
                roll = rng.random()
                if mine and roll < 0.3:
                    rid = mine.pop(rng.randrange(len(mine)))
                    assert await conn.fetchval("SELECT outcome FROM tf_cancel($1)", rid) == "cancelled"
                    committed[rid].append("reservation.cancelled")
                    continue
                seat = free.pop()
                rid = uuid.uuid4()
                tx = conn.transaction()
                await tx.start()
                assert await conn.fetchval(HOLD, rid, [seat]) == "held"
                if roll < 0.45:  # this one never commits: its event must never be numbered or sent
                    await tx.rollback()
                    rolled_back.add(rid)
                else:
                    await tx.commit()
                    committed[rid] = ["reservation.created"]
                    mine.append(rid)
        finally:
            await conn.close()

    async def second_sequencer() -> None:  # a second relay overlapping briefly, or a pruner: small batches
        while not reader.stop.is_set():
            await store.sequence_outbox(limit=7)

    numbering = asyncio.create_task(second_sequencer())
    await asyncio.gather(*(writer(n) for n in range(12)))
    reader.stop.set()
    await asyncio.gather(reading, numbering)
    await reader.drain()

    seqs = [e.seq for e in reader.events]
    assert seqs == list(range(1, len(seqs) + 1)), "the stream has a gap or is out of order"
    ids = [e.id for e in reader.events]
    assert len(ids) == len(set(ids)), "an event was read twice"
    expected = sum(len(types) for types in committed.values())
    assert len(reader.events) == expected, "a committed event is missing (or a rolled-back one was sent)"
    per_reservation: dict[str, list[str]] = {}
    for e in reader.events:
        rid = e.data.get("id") or e.data.get("reservation_id")
        per_reservation.setdefault(rid, []).append(e.type)
    assert per_reservation == {str(r): types for r, types in committed.items()}, "events of a reservation misordered"
    assert not {str(r) for r in rolled_back} & set(per_reservation)
    state = await store.stream_state()
    assert (state["last_seq"], state["unsequenced"]) == (len(seqs), 0)


async def waiting_for_lock(dsn: str, pid: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await conn.close()


async def test_events_of_one_reservation_come_out_in_the_order_their_transactions_held_its_lock(store):
    seats = await make_seats(store, 10)
    conns = [await asyncpg.connect(store.dsn) for _ in range(3)]
    first, second, other = conns
    reader = Reader(store)
    try:
        rid = uuid.uuid4()
        assert await other.fetchval(HOLD, rid, [seats[0]]) == "held"
        # The sale (first) draws its event id, then holds the reservation's lock while the refund's
        # release (second) queues behind it and an unrelated hold commits in between.
        tx = first.transaction()
        await tx.start()
        assert await first.fetchval("SELECT outcome FROM tf_confirm($1)", rid) == "confirmed"
        releasing = asyncio.create_task(second.fetchval("SELECT outcome FROM tf_release_sold($1)", rid))
        await wait_until(lambda: waiting_for_lock(store.dsn, second.get_server_pid()), 10,
                         "the release waiting for the sale's lock")
        assert await other.fetchval(HOLD, uuid.uuid4(), [seats[1]]) == "held"
        await reader.drain()  # numbers what has committed so far: the two holds
        assert [e.type for e in reader.events] == ["reservation.created", "reservation.created"]
        await tx.commit()
        assert await releasing == "released"
        await reader.drain()
    finally:
        for c in conns:
            await c.close()
    mine = [e.type for e in reader.events if str(rid) in (e.data.get("id"), e.data.get("reservation_id"))]
    assert mine == ["reservation.created", "reservation.confirmed", "reservation.cancelled"]
    assert [e.seq for e in reader.events] == [1, 2, 3, 4]


async def test_rows_not_numbered_yet_count_as_lag_and_are_never_pruned(store):
    seats = (await make_seats(store, 3))[:3]
    conn = await asyncpg.connect(store.dsn)
    try:
        for seat in seats:
            assert await conn.fetchval(HOLD, uuid.uuid4(), [seat]) == "held"
        # Writers number nothing: the stream's head has not moved, the rows wait for the relay.
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE seq IS NULL") == 3
        state = await store.stream_state()
        assert (state["last_seq"], state["unsequenced"], state["lag"]) == (0, 3, 3)
        await conn.execute("UPDATE outbox SET created_at = now() - interval '30 days'")
        # Pruning numbers first and deletes only what is acknowledged: nothing yet.
        assert await store.prune(retention_hours=1, idempotency_hours=24) == (0, 0)
        assert await store.outbox_head() == 3
        assert (await store.stream_state())["lag"] == 3
        await store.record_ack(2)
        assert await store.prune(retention_hours=1, idempotency_hours=24) == (2, 0)
        assert [r["seq"] for r in await conn.fetch("SELECT seq FROM outbox")] == [3]
        assert (await store.stream_state())["lag"] == 1
    finally:
        await conn.close()


async def _head(cluster) -> int:
    return (await cluster.sql("SELECT last_seq FROM stream_heads"))[0]["last_seq"]


async def _leader_and_standby(cluster, first, second):
    async def roles() -> list[str]:
        return [(await i.api.get("/ready")).body["checks"]["relay"] for i in (first, second)]

    await wait_until(lambda: _one_active(roles()), 20, "one relay active and the other standing by")
    return (first, second) if (await roles())[0] == "active" else (second, first)


async def _one_active(roles) -> bool:
    return sorted(await roles) == ["active", "standby"]


async def test_holds_on_either_replica_reach_the_relay_without_waiting_for_its_poll(cluster, receiver_db):
    # Polls of a minute: only a wake-up (in process, or the standby's coalesced NOTIFY) moves the stream in time.
    first = await cluster.start(TICKETFLOW_RELAY_POLL_SECONDS="60")
    second = await cluster.start(TICKETFLOW_RELAY_POLL_SECONDS="60")
    leader, standby = await _leader_and_standby(cluster, first, second)
    event = await create_event(leader.api)
    seats = [s["id"] for s in await seats_of(leader.api, event["id"])]

    # Link down (no receiver yet): the leader's sequencer still numbers each hold as it commits.
    assert (await leader.api.post("/api/reserve", {"seat_id": seats[0], "user_id": "u"})).status == 201
    await wait_until(lambda: _equals(_head(cluster), 1), 5, "the leader's own hold numbered")
    assert (await standby.api.post("/api/reserve", {"seat_id": seats[1], "user_id": "u"})).status == 201
    await wait_until(lambda: _equals(_head(cluster), 2), 5, "the standby's hold numbered after its NOTIFY")

    await cluster.start_receiver(receiver_db)
    await wait_until(lambda: acked(cluster, 2), 30, "the link coming up and the backlog delivered")
    assert (await standby.api.post("/api/reserve", {"seat_id": seats[2], "user_id": "u"})).status == 201
    await wait_until(lambda: acked(cluster, 3), 5, "the standby's hold delivered without waiting for a poll")
    assert (await leader.api.post("/api/reserve", {"seat_id": seats[3], "user_id": "u"})).status == 201
    await wait_until(lambda: acked(cluster, 4), 5, "the leader's hold delivered without waiting for a poll")
    assert await check_receiver_history(cluster, receiver_db) == 4


async def _equals(value, expected) -> bool:
    return await value == expected
