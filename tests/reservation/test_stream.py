"""The outbox stream to billing, with real processes killed (SIGKILL) mid-stream."""

import asyncio

import asyncpg

from deploy.runtime.migrations import migrate_postgres
from deploy.runtime.pg import Database
from reservation_daemon.store import ReservationStore
from tests.helpers import wait_until
from tests.reservation.conftest import create_event, gather_limited, seats_of


async def received_position(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('position') IS NOT NULL")
        return await conn.fetchval("SELECT coalesce(max(seq), 0) FROM position") if exists else 0
    finally:
        await conn.close()


async def check_receiver_history(cluster, receiver_dsn: str) -> int:
    """Everything the producer wrote arrived once, in order, with no gaps; returns the count."""
    conn = await asyncpg.connect(receiver_dsn)
    try:
        seqs = [r["seq"] for r in await conn.fetch("SELECT seq FROM received ORDER BY seq")]
        duplicates = await conn.fetchval("SELECT count(*) FROM duplicates")
        created = {r["rid"] for r in await conn.fetch(
            "SELECT data->>'id' AS rid FROM received WHERE type = 'reservation.created'")}
    finally:
        await conn.close()
    outbox = [r["seq"] for r in await cluster.sql("SELECT seq FROM outbox ORDER BY seq")]
    reservations = {str(r["id"]) for r in await cluster.sql("SELECT id FROM reservations")}
    assert seqs == list(range(1, len(seqs) + 1)), "gap or reordering in the received stream"
    assert seqs == outbox, "the receiver's history differs from the producer's outbox"
    assert duplicates == 0, "a re-sent event reached apply twice"
    assert created == reservations, "a reservation never reached the receiver"
    return len(seqs)


async def test_10000_reservations_reach_a_receiver_killed_and_restarted_several_times(cluster, receiver_db):
    reservation = await cluster.start()
    api = reservation.api
    event = await create_event(api, [{"name": "F", "rows": 100, "seats_per_row": 100, "price_minor": 4200,
                                      "currency": "EUR"}])
    seats = [s["id"] for s in await seats_of(api, event["id"])]
    receiver = await cluster.start_receiver(receiver_db)

    async def buy_all() -> list[int]:
        replies = await gather_limited(
            (api.post("/api/reserve", {"seat_id": s, "user_id": f"u{i}"}) for i, s in enumerate(seats)), 64)
        return [r.status for r in replies]

    buying = asyncio.create_task(buy_all())
    kills = 0
    last = 0
    while kills < 5:
        # Kill at a point chosen by progress, not by the clock: somewhere inside the stream.
        await wait_until(lambda: _advanced(receiver_db, last, 800),
                         60, f"the receiver advancing past {last + 800} before kill {kills + 1}")
        last = await received_position(receiver_db)
        receiver.kill()
        kills += 1
        receiver.start()
    statuses = await buying
    assert statuses.count(201) == 10_000
    await wait_until(lambda: _advanced(receiver_db, 10_000 - 1, 1), 60, "all 10,000 events received")
    assert await check_receiver_history(cluster, receiver_db) == 10_000
    state = await cluster.sql("SELECT last_seq, acked_seq FROM stream_heads")
    await wait_until(lambda: acked(cluster, 10_000), 10, "the relay recording billing's final ack")
    assert state[0]["last_seq"] == 10_000


async def _advanced(dsn: str, past: int, by: int) -> bool:
    return await received_position(dsn) >= past + by


async def acked(cluster, seq: int) -> bool:
    rows = await cluster.sql("SELECT acked_seq FROM stream_heads")
    return rows[0]["acked_seq"] >= seq


async def test_reservations_succeed_while_billing_is_down_and_the_backlog_drains_in_order(cluster, receiver_db):
    api = (await cluster.start()).api
    event = await create_event(api)
    for seat in await seats_of(api, event["id"]):
        assert (await api.post("/api/reserve", {"seat_id": seat["id"], "user_id": "u"})).status == 201
    assert (await cluster.sql("SELECT acked_seq FROM stream_heads"))[0]["acked_seq"] == 0
    await cluster.start_receiver(receiver_db)
    await wait_until(lambda: acked(cluster, 10), 20, "the backlog of 10 draining once billing is back")
    assert await check_receiver_history(cluster, receiver_db) == 10


async def test_one_relay_across_replicas_and_a_standby_takes_over_when_the_holder_dies(cluster, receiver_db):
    first = await cluster.start()
    second = await cluster.start()

    async def relays() -> list[str]:
        return [(await i.api.get("/ready")).body["checks"]["relay"] for i in (first, second) if i.process.proc.poll() is None]

    await wait_until(lambda: _one_active(relays), 10, "one replica becoming the relay")
    assert sorted(await relays()) == ["active", "standby"]
    holder, standby = (first, second) if (await first.api.get("/ready")).body["checks"]["relay"] == "active" \
        else (second, first)
    await cluster.start_receiver(receiver_db)
    event = await create_event(standby.api)
    seat_ids = [s["id"] for s in await seats_of(standby.api, event["id"])]
    for seat in seat_ids[:5]:
        assert (await holder.api.post("/api/reserve", {"seat_id": seat, "user_id": "u"})).status == 201
    await wait_until(lambda: acked(cluster, 5), 10, "the first relay delivering")
    holder.process.kill()
    await wait_until(lambda: _standby_active(standby), 15, "the standby taking over the relay")
    for seat in seat_ids[5:]:
        assert (await standby.api.post("/api/reserve", {"seat_id": seat, "user_id": "u"})).status == 201
    await wait_until(lambda: acked(cluster, 10), 15, "the new relay delivering")
    assert await check_receiver_history(cluster, receiver_db) == 10


async def _one_active(relays) -> bool:
    return (await relays()).count("active") == 1


async def _standby_active(instance) -> bool:
    return (await instance.api.get("/ready")).body["checks"]["relay"] == "active"


async def test_two_instances_on_two_ports_behave_as_one_service(cluster):
    a = await cluster.start()
    b = await cluster.start()
    event = await create_event(a.api)
    seat = (await seats_of(b.api, event["id"]))[0]["id"]
    replies = await asyncio.gather(*(
        inst.api.post("/api/reserve", {"seat_id": seat, "user_id": f"u{i}"})
        for i, inst in enumerate([a, b] * 50)))
    assert sorted(r.status for r in replies).count(201) == 1
    won = next(r for r in replies if r.status == 201).body
    assert (await b.api.get(f"/api/reservations/{won['id']}")).body == (await a.api.get(
        f"/api/reservations/{won['id']}")).body
    key = {"Idempotency-Key": "cross-instance"}
    other = (await seats_of(a.api, event["id"], "available"))[0]["id"]
    first = await a.api.post("/api/reserve", {"seat_id": other, "user_id": "k"}, headers=key)
    second = await b.api.post("/api/reserve", {"seat_id": other, "user_id": "k"}, headers=key)
    assert first.status == second.status == 201 and first.body == second.body
    assert {(await i.api.get("/api/instance")).body["instance"] for i in (a, b)} == {"reservation-1", "reservation-2"}


async def test_migrations_from_two_replicas_at_once_apply_once(cluster):
    conns = [await asyncpg.connect(cluster.dsn) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate_postgres(c, "reservation_daemon.migrations") for c in conns))
    finally:
        for c in conns:
            await c.close()
    from deploy.runtime.migrations import discover

    versions = [m.version for m in discover("reservation_daemon.migrations")]
    assert sorted(len(r) for r in results) == [0, len(versions)]
    rows = await cluster.sql("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == versions


async def test_pruning_keeps_unacknowledged_and_recent_rows(cluster):
    api = (await cluster.start()).api
    event = await create_event(api)
    for seat in (await seats_of(api, event["id"]))[:4]:
        await api.post("/api/reserve", {"seat_id": seat["id"], "user_id": "u"})
    await cluster.sql("UPDATE stream_heads SET acked_seq = 2")
    await cluster.sql("UPDATE outbox SET created_at = now() - interval '8 days'")
    db = Database(cluster.dsn)
    await db.start()
    try:
        store = ReservationStore(db)
        assert await store.prune(retention_hours=168, idempotency_hours=24) == (2, 0)
    finally:
        await db.close()
    assert [r["seq"] for r in await cluster.sql("SELECT seq FROM outbox ORDER BY seq")] == [3, 4]


async def test_listen_notify_wakes_the_relay_long_before_its_poll_interval(cluster, receiver_db):
    import time

    api = (await cluster.start(TICKETFLOW_RELAY_POLL_SECONDS="60")).api
    await cluster.start_receiver(receiver_db)
    event = await create_event(api)
    seats = [s["id"] for s in await seats_of(api, event["id"])]
    assert (await api.post("/api/reserve", {"seat_id": seats[0], "user_id": "u"})).status == 201
    await wait_until(lambda: acked(cluster, 1), 30, "the link coming up and the first event delivered")
    started = time.monotonic()
    assert (await api.post("/api/reserve", {"seat_id": seats[1], "user_id": "u"})).status == 201
    await wait_until(lambda: acked(cluster, 2), 5, "the second event delivered without waiting for a poll")
    print(f"commit -> billing ack in {(time.monotonic() - started) * 1000:.0f} ms")
