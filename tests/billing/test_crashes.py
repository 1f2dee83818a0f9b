"""Billing killed with SIGKILL mid-stream, MariaDB restarted under load, replicas, odd events."""

import asyncio
import time
import uuid

import aiohttp
import pytest

from protocol.link import LinkSettings
from protocol.messages import Event
from protocol.sender import Sender
from tests.billing.conftest import Pipeline, hold_one, order_appears
from tests.helpers import ListSource, wait_until
from tests.reservation.conftest import gather_limited
from tests.support.stack import fresh_pg_database, private_server_fixture

pytestmark = pytest.mark.slow


async def orders_count(pipeline) -> int:
    return (await pipeline.maria("SELECT count(*) AS n FROM orders"))[0]["n"]


async def test_5000_reservations_become_orders_exactly_once_while_billing_is_killed(pipeline):
    # A small send window keeps billing's batches small (~128 events), so the stream is applied in
    # many commits and each kill lands mid-stream (with the daemons' 8,192 a backlog goes in a few).
    reservation = await pipeline.reservation(TICKETFLOW_LINK_WINDOW="256")
    billing = await pipeline.billing()
    event = await reservation.api.post("/api/events", {
        "name": "Big", "venue": "Stadium", "starts_at": "2027-01-01T20:00:00Z",
        "layout": {"sections": [{"name": "N", "rows": 50, "seats_per_row": 100, "price_minor": 1000,
                                 "currency": "EUR"}]}})
    seats = [s["id"] for s in (await reservation.api.get(f"/api/events/{event.body['id']}/seats?limit=5000")).body["seats"]]

    async def buy_all():
        return await gather_limited(
            (reservation.api.post("/api/reserve", {"seat_id": s, "user_id": f"u{i % 97}"}) for i, s in enumerate(seats)),
            48)

    buying = asyncio.create_task(buy_all())
    for kill in range(4):
        before = await orders_count(pipeline)
        await wait_until(lambda: _more_orders(pipeline, before + 500), 60,
                         f"billing applying 500 more orders before kill {kill + 1}")
        billing.process.kill()  # SIGKILL, mid-batch
        await billing.process.start_ready()
    replies = await buying
    assert [r.status for r in replies].count(201) == 5000
    await wait_until(lambda: _more_orders(pipeline, 5000), 60, "all 5000 orders")
    ids = {r.body["id"] for r in replies}
    rows = await pipeline.maria("SELECT id FROM orders")
    assert len(rows) == 5000 and {r["id"] for r in rows} == ids, "an order missing or doubled"
    inbox = await pipeline.maria("SELECT count(*) AS n, count(DISTINCT event_id) AS d, max(seq) AS m FROM inbox_events")
    assert inbox[0]["n"] == inbox[0]["d"] == inbox[0]["m"] == 5000
    position = await pipeline.maria("SELECT position FROM stream_positions WHERE stream = 'reservations'")
    assert position[0]["position"] == 5000


async def _more_orders(pipeline, at_least: int) -> bool:
    return await orders_count(pipeline) >= at_least


private_mariadb = private_server_fixture("mariadb")  # the test restarts it


@pytest.fixture
async def pipeline_on_private_mariadb(private_mariadb, tmp_path):
    """conftest's ``pipeline`` with billing on a private MariaDB, which the test restarts."""
    async with fresh_pg_database("tf_bres") as pg, fresh_pg_database("tf_bbridge") as bridge, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        p = Pipeline(pg, private_mariadb.dsn(), bridge, tmp_path, session)
        try:
            yield p
        finally:
            p.stop()


async def test_mariadb_restart_under_load_gives_no_500_and_loses_nothing(pipeline_on_private_mariadb,
                                                                         private_mariadb):
    pipeline = pipeline_on_private_mariadb
    reservation = await pipeline.reservation()
    billing = await pipeline.billing()
    pipeline.start_bridge_stand_in()
    holds = [await hold_one(reservation, f"buyer-{i}") for i in range(60)]
    for held in holds:
        await wait_until(lambda: order_appears(billing, held["id"]), 15, "orders appearing")
    statuses: list[int] = []

    async def pay(order_id: str) -> int:
        # A client that follows the API: on 503 (or 409 REQUEST_IN_PROGRESS) retry with the same key.
        deadline = time.monotonic() + 90
        while True:
            try:
                reply = await billing.api.post(f"/api/orders/{order_id}/pay", headers={"Idempotency-Key": order_id})
                statuses.append(reply.status)
                if reply.status not in (503, 409) or (reply.status == 409 and
                                                      reply.body["error"]["code"] != "REQUEST_IN_PROGRESS"):
                    return reply.status
            except (OSError, asyncio.TimeoutError):
                pass
            assert time.monotonic() < deadline, "billing never recovered"
            await asyncio.sleep(0.2)

    paying = asyncio.create_task(gather_limited((pay(h["id"]) for h in holds), 8))
    await wait_until(lambda: len(statuses) >= 10, 30, "payments under way before the restart")
    await asyncio.to_thread(private_mariadb.stop)
    await asyncio.to_thread(private_mariadb.up)
    results = await paying
    assert 500 not in statuses
    assert results == [200] * len(holds), results
    paid = await pipeline.maria("SELECT count(*) AS n FROM orders WHERE status = 'paid'")
    assert paid[0]["n"] == len(holds)
    charges = await pipeline.maria("SELECT order_id, count(*) AS n FROM payment_attempts"
                                   " WHERE status = 'succeeded' GROUP BY order_id HAVING n > 1")
    assert charges == [], "an order was charged twice"

    async def all_on_bridge() -> bool:
        return sum(e["type"] == "payment.succeeded" for e in await pipeline.bridge_events()) == len(holds)

    await wait_until(all_on_bridge, 30, "every payment.succeeded reaching the bridge stream")


async def test_two_billing_replicas_behave_as_one_and_a_standby_takes_over_the_relay(pipeline):
    reservation = await pipeline.reservation()
    a, b = await pipeline.billing(), await pipeline.billing()
    pipeline.start_bridge_stand_in()
    held = await hold_one(reservation, "x")
    await wait_until(lambda: order_appears(b, held["id"]), 10, "the order visible through replica b")
    paid = await a.api.post(f"/api/orders/{held['id']}/pay", headers={"Idempotency-Key": "k"})
    assert paid.status == 200
    assert (await b.api.get(f"/api/orders/{held['id']}")).body == paid.body
    replay = await b.api.post(f"/api/orders/{held['id']}/pay", headers={"Idempotency-Key": "k"})
    assert replay.body == paid.body, "an Idempotency-Key is honoured across replicas"
    relays: list[str] = []

    async def one_relay() -> bool:  # the relay takes its lock a moment after /ready first answers 200
        relays[:] = [(await s.api.get("/ready")).body["checks"]["relay"] for s in (a, b)]
        return sorted(relays) == ["active", "standby"]

    await wait_until(one_relay, 10, "exactly one replica holding the relay lock")

    def delivered(n: int):
        async def check() -> bool:
            return len(await pipeline.bridge_events()) == n
        return check

    await wait_until(delivered(1), 10, "payment.succeeded delivered by whichever replica is the relay")

    # The relay's holder dies (SIGKILL: its MariaDB session, and with it GET_LOCK, ends with
    # the process); the standby takes the lock and the next payment still leaves.
    holder, survivor = (a, b) if relays[0] == "active" else (b, a)
    holder.process.kill()
    second = await hold_one(reservation, "y")
    await wait_until(lambda: order_appears(survivor, second["id"]), 10, "the second order reaching the survivor")
    assert (await survivor.api.post(f"/api/orders/{second['id']}/pay", headers={"Idempotency-Key": "k2"})).status == 200

    async def survivor_is_relay() -> bool:
        return (await survivor.api.get("/ready")).body["checks"]["relay"] == "active"

    await wait_until(survivor_is_relay, 15, "the standby replica taking over the relay")
    await wait_until(delivered(2), 15, "the second payment delivered by the new relay")
    assert [e["seq"] for e in await pipeline.bridge_events()] == [1, 2]


async def test_events_for_unknown_orders_are_recorded_not_crashed_on(pipeline):
    billing = await pipeline.billing()
    unknown = str(uuid.uuid4())
    about = {"reservation_id": unknown, "event_id": str(uuid.uuid4()), "user_id": "u", "seat_ids": []}
    events = [
        Event(1, str(uuid.uuid4()), "reservation.cancelled", "tests", "2026-11-24T00:00:00Z",
              {**about, "cancelled_at": "2026-11-24T00:00:00Z"}),
        Event(2, str(uuid.uuid4()), "reservation.confirmed", "tests", "2026-11-24T00:00:00Z",
              {**about, "amount_minor": 100, "currency": "EUR", "confirmed_at": "2026-11-24T00:00:00Z"}),
        Event(3, str(uuid.uuid4()), "something.new", "tests", "2026-11-24T00:00:00Z", {}),
    ]
    source = ListSource(events)
    sender = Sender("127.0.0.1", pipeline.billing_link, "reservations", source.read,
                    LinkSettings(secret=b"ticketflow-dev-link-secret-change-me", node="test"), head=source.head)
    task = asyncio.create_task(sender.run())
    try:
        await wait_until(lambda: sender.acked == 3, 10, "billing acknowledging all three events")
    finally:
        await sender.stop()
        task.cancel()
    outcomes = [r["outcome"] for r in await pipeline.maria("SELECT outcome FROM inbox_events ORDER BY seq")]
    assert outcomes == ["unknown_order", "noted", "noted"]
    assert (await billing.api.get("/ready")).status == 200


async def test_a_host_list_dsn_moves_past_a_dead_host(pipeline):
    from tests.support.stack import free_port

    live = pipeline.maria_dsn.split("@", 1)[1]  # 127.0.0.1:port/db
    dsn = f"mysql://ticketflow:ticketflow@127.0.0.1:{free_port()},{live}"
    billing = await pipeline.billing(TICKETFLOW_MARIADB_DSN=dsn)
    created = await billing.api.post("/api/users", {"email": "multi@example.com", "name": "M", "password": "pw-0123456789"})
    assert created.status == 201


async def test_two_receivers_applying_one_stream_at_once_apply_each_event_once(pipeline):
    """A relay failing over can leave its old connection applying beside the new one."""
    from billing_daemon.store import BillingStore
    from deploy.runtime.mysql import MariaDB

    def created(seq: int) -> Event:
        return Event(seq, f"evt-{seq}", "reservation.created", "tests", "2026-11-24T00:00:00Z", {
            "id": str(uuid.UUID(int=seq)), "user_id": "u", "event_id": str(uuid.UUID(int=0)), "amount_minor": 100,
            "currency": "EUR", "seats": [], "status": "held", "created_at": "2026-11-24T00:00:00Z",
            "expires_at": "2027-01-01T00:00:00Z"})

    stream = [created(seq) for seq in range(1, 301)]
    stores = [BillingStore(MariaDB(pipeline.maria_dsn, max_size=4)) for _ in range(2)]
    try:
        await stores[0].migrate()

        async def connection(store: BillingStore, size: int) -> None:
            # Each connection sends the whole stream from the start, in order, in its own batch size.
            for i in range(0, len(stream), size):
                await store.apply_reservation_events("reservations", stream[i:i + size])

        await asyncio.gather(connection(stores[0], 7), connection(stores[1], 11))
        assert await stores[1].stream_position("reservations") == 300
    finally:
        for store in stores:
            await store.db.close()
    rows = await pipeline.maria("SELECT count(*) AS n, count(DISTINCT id) AS d FROM orders")
    assert rows == [{"n": 300, "d": 300}]
    assert (await pipeline.maria("SELECT count(*) AS n FROM inbox_events"))[0]["n"] == 300
