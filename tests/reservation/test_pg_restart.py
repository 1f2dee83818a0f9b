"""PostgreSQL restarted under a stream of requests: no 500s, no lost hold, the stream resumes.

The PostgreSQL restarted is a private one of this test's own; the shared stack's serves the receiver.
"""

import asyncio
import time

import aiohttp
import pytest

from tests.helpers import wait_until
from tests.reservation.conftest import Cluster, create_event, gather_limited, seats_of
from tests.reservation.test_stream import acked, check_receiver_history
from tests.support.stack import private_server_fixture

pytestmark = pytest.mark.slow


private_postgres = private_server_fixture("postgres")  # the test restarts it


@pytest.fixture
async def cluster(private_postgres, tmp_path):
    """The reservation daemons of conftest's ``cluster``, on the private PostgreSQL."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        c = Cluster(private_postgres.dsn(), tmp_path, session)
        try:
            yield c
        finally:
            c.stop()
            await c.billing.stop()


async def test_postgres_restart_under_load_loses_nothing(cluster, private_postgres, receiver_db):
    api = (await cluster.start()).api
    await cluster.start_receiver(receiver_db)
    event = await create_event(api, [{"name": "R", "rows": 30, "seats_per_row": 50, "price_minor": 900,
                                      "currency": "EUR"}])
    seats = [s["id"] for s in await seats_of(api, event["id"])]
    statuses: list[int] = []
    unavailable = 0

    async def buy(seat: str) -> dict:
        # A client that does what the API asks: on 503 (or 409 REQUEST_IN_PROGRESS) retry, same Idempotency-Key.
        nonlocal unavailable
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = await api.post("/api/reserve", {"seat_id": seat, "user_id": "load"},
                                       headers={"Idempotency-Key": f"buy-{seat}"})
            except (OSError, asyncio.TimeoutError):
                reply = None
            if reply is not None:
                statuses.append(reply.status)
                if reply.status == 503:
                    unavailable += 1
                    assert reply.headers.get("Retry-After")
                elif not (reply.status == 409 and reply.body["error"]["code"] == "REQUEST_IN_PROGRESS"):
                    return reply.body
            assert time.monotonic() < deadline, "the daemon never recovered from the restart"
            await asyncio.sleep(0.1)

    buying = asyncio.create_task(gather_limited((buy(s) for s in seats), 16))
    await wait_until(lambda: len(statuses) >= 300, 30, "300 requests before the restart")
    await asyncio.to_thread(private_postgres.stop)
    await asyncio.to_thread(private_postgres.up)
    bodies = await buying

    assert 500 not in statuses, "a 500 during the restart"
    assert {b["status"] for b in bodies} == {"held"}
    held = {b["id"] for b in bodies}
    assert len(held) == len(seats), "a retry with the same key created a second hold or lost one"
    stored = {str(r["id"]) for r in await cluster.sql("SELECT id FROM reservations")}
    assert stored == held, "a hold the client saw committed is missing"
    await wait_until(lambda: acked(cluster, len(seats)), 60, "the stream resuming after the restart")
    assert await check_receiver_history(cluster, receiver_db) == len(seats)
    print(f"{unavailable} answers were 503 with Retry-After during the restart")
