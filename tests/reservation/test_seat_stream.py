"""GET /api/events/{id}/seat-stream: live seat changes fed by the numbered stream, across replicas."""

import asyncio
import contextlib

import aiohttp

from deploy.ops.bench_viewers import sse_events
from reservation_daemon.seatstream import END, SeatFeed
from tests.reservation.conftest import create_event, seats_of
from tests.support.auth import token


@contextlib.asynccontextmanager
async def open_stream(session, url: str, event_id: str, last_id: str | None = None, headers=None):
    headers = dict(headers or {})
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    async with session.get(f"{url}/api/events/{event_id}/seat-stream", headers=headers,
                           timeout=aiohttp.ClientTimeout(total=60)) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        yield sse_events(response)


async def next_event(events, timeout: float, what: str):
    try:
        return await asyncio.wait_for(anext(events), timeout)
    except TimeoutError:
        raise AssertionError(f"within {timeout}s: {what} never arrived") from None


async def test_a_hold_through_one_replica_reaches_a_viewer_of_another_within_a_second(cluster):
    a = await cluster.start()
    b = await cluster.start()
    event = await create_event(a.api)
    seats = await seats_of(a.api, event["id"])
    async with open_stream(cluster.session, b.url, event["id"]) as events:  # anonymous, on replica B
        name, ident, data = await next_event(events, 5, "ready")
        assert name == "ready" and int(ident) == data["position"]
        buyer = a.api.as_(token("buyer"))
        held = await buyer.post("/api/reservations", {"event_id": event["id"], "seat_ids": [s["id"] for s in seats[:2]]})
        assert held.status == 201, held.body
        name, ident, data = await next_event(events, 1.0, "the hold taken on replica A")
        assert name == "seats" and int(ident) > 0
        assert data == {"event_id": event["id"], "seats": [{"id": s["id"], "status": "held"} for s in seats[:2]]}
        released = await buyer.delete(f"/api/reservations/{held.body['id']}")
        assert released.status == 200, released.body
        name, _, data = await next_event(events, 1.0, "the release")
        assert data["seats"] == [{"id": s["id"], "status": "available"} for s in seats[:2]]


async def test_last_event_id_replays_exactly_the_missed_changes_of_that_event(cluster):
    r = await cluster.start()
    event = await create_event(r.api)
    other = await create_event(r.api, name="Other")
    seats, other_seats = await seats_of(r.api, event["id"]), await seats_of(r.api, other["id"])
    buyer = r.api.as_(token("buyer"))
    async with open_stream(cluster.session, r.url, event["id"]) as events:
        _, first_id, _ = await next_event(events, 5, "ready")
        assert (await buyer.post("/api/reserve", {"seat_id": seats[0]["id"]})).status == 201
        _, seen_id, _ = await next_event(events, 1.0, "the first hold")
    # Disconnected: two more changes of this event, one of another.
    assert (await buyer.post("/api/reserve", {"seat_id": seats[1]["id"]})).status == 201
    assert (await buyer.post("/api/reserve", {"seat_id": other_seats[0]["id"]})).status == 201
    assert (await buyer.post("/api/reserve", {"seat_id": seats[2]["id"]})).status == 201

    async def numbered() -> bool:
        rows = await cluster.sql("SELECT count(*) AS n FROM outbox WHERE seq IS NOT NULL")
        return rows[0]["n"] == 4
    from tests.helpers import wait_until
    await wait_until(numbered, 5, "the holds numbered")
    async with open_stream(cluster.session, r.url, event["id"], last_id=seen_id) as events:
        got = [await next_event(events, 2, "a replayed change") for _ in range(2)]
    assert [d["seats"] for _, _, d in got] == [[{"id": seats[1]["id"], "status": "held"}],
                                               [{"id": seats[2]["id"], "status": "held"}]]
    assert all(int(i) > int(seen_id) for _, i, _ in got) and int(seen_id) > int(first_id)


async def test_the_stream_is_public_like_the_seat_map_and_404s_unknown_events(cluster):
    r = await cluster.start()
    event = await create_event(r.api)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Bearer {token('buyer')}"}):
        async with open_stream(cluster.session, r.url, event["id"], headers=headers) as events:
            assert (await next_event(events, 5, "ready"))[0] == "ready"
    for bad in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        async with cluster.session.get(f"{r.url}/api/events/{bad}/seat-stream") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "EVENT_NOT_FOUND"


def test_a_viewer_that_falls_behind_is_dropped_with_a_reason_and_its_memory_bounded():
    feed = SeatFeed("", None, poll=1, queue_limit=3, max_viewers=10, heartbeat=15)
    feed.position = 0
    slow = feed.subscribe("e1", None)
    data = {"event_id": "e1", "seat_ids": ["s"]}
    for seq in range(1, 10):
        feed._publish(seq, "reservation.cancelled", data)
    queued = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
    assert queued[-2].startswith(b"event: dropped") and b"slow_consumer" in queued[-2] and queued[-1] == END
    assert len(queued) == 2 and feed.count == 0 and feed.dropped == 1  # its backlog freed, it is gone


def test_one_address_gets_its_share_of_the_streams_and_no_more():
    """A stranger opening streams in a loop cannot take every stream of the process (nor, behind HAProxy, of
    everyone: the address counted is the one HAProxy forwards, see tests/runtime/test_client_address.py)."""
    from reservation_daemon.seatstream import TooManyStreams

    feed = SeatFeed("", None, poll=1, queue_limit=3, max_viewers=10, heartbeat=15, per_address=2)
    feed.position = 0
    first, second = feed.subscribe("e1", None, "203.0.113.9"), feed.subscribe("e2", None, "203.0.113.9")
    try:
        feed.subscribe("e1", None, "203.0.113.9")
        raise AssertionError("a third stream from one address was accepted")
    except TooManyStreams as exc:
        assert exc.status == 429 and exc.code == "TOO_MANY_STREAMS"
    assert feed.subscribe("e1", None, "198.51.100.7")  # another address is not affected
    feed.unsubscribe(first)
    assert feed.subscribe("e1", None, "203.0.113.9") and feed.by_address["203.0.113.9"] == 2  # a closed one frees
    feed.unsubscribe(second)
    assert feed.count == 2
