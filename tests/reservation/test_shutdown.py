"""SIGTERM under load: the daemon stops cleanly and every hold it confirmed to a client is committed."""

import asyncio

import aiohttp

from tests.helpers import wait_until
from tests.reservation.conftest import create_event, seats_of


async def test_sigterm_under_load_exits_cleanly_and_every_answered_hold_is_committed(cluster):
    instance = await cluster.start()
    event = await create_event(instance.api, sections=[
        {"name": "T", "rows": 10, "seats_per_row": 40, "price_minor": 100, "currency": "EUR"}])
    seats = [s["id"] for s in await seats_of(instance.api, event["id"])]
    answered: list[tuple[int, dict]] = []
    refused = 0

    async def buyer(chunk: list[str]) -> None:
        nonlocal refused
        for seat in chunk:
            try:
                reply = await instance.api.post("/api/reserve", {"seat_id": seat, "user_id": "u"}, timeout=10)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                refused += 1  # the daemon had stopped listening or closed the connection: never an answer
                continue
            answered.append((reply.status, reply.body))

    buyers = [asyncio.create_task(buyer(seats[i::16])) for i in range(16)]
    await wait_until(lambda: len(answered) >= 100, 20, "100 holds answered before SIGTERM")
    code = await asyncio.to_thread(instance.process.terminate, 15)
    await asyncio.gather(*buyers)

    assert code == 0, f"exit code {code} after SIGTERM:\n{instance.process.log_tail()}"
    assert {status for status, _ in answered} <= {201, 503}, "a request in flight got something else"
    held = {body["id"] for status, body in answered if status == 201}
    stored = {str(r["id"]) for r in await cluster.sql("SELECT id FROM reservations")}
    assert held <= stored, "a hold the client was told about is not in the database"
    assert len(answered) + refused == len(seats)
    print(f"{len(answered)} answered, {refused} refused after SIGTERM")
