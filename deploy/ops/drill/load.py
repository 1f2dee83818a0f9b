"""The purchase load a drill drives: N buyers doing reserve -> wait for the order -> pay -> wait finalized.

Through the daemons' public HTTP ports, as the operator's service credential acting for a fresh user id
per purchase (so every effect in the final state is attributable to one attempt). Every write is
recorded with its start and end on the drill's clock and its outcome:

- ``ok``: a 2xx answer;
- ``failed``: an error answer (its status and code are kept);
- ``unknown``: no answer (timeout, connection refused or reset): it may or may not have happened.

Writes carry an Idempotency-Key and are retried with the same key while the answer is unknown or
says "try again" (503, 429, 409 REQUEST_IN_PROGRESS / PAYMENT_IN_PROGRESS, 500), so an unknown
outcome is usually resolved by the retry's answer; the audit resolves the rest against the final
state. Polls (the order arriving in billing, the sale being finalized) are reads and not recorded.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import aiohttp

# billing's GET /api/events/{id}/orders answers at most this many (billing_daemon/store/orders.py event_orders)
EVENT_ORDERS_CAP = 1000
RETRYABLE_CODES = {"REQUEST_IN_PROGRESS", "PAYMENT_IN_PROGRESS", "DEPENDENCY_UNAVAILABLE", "RATE_LIMITED"}


@dataclass
class Op:
    purchase: str  # the purchase's user id
    kind: str  # reserve | pay
    attempt: int
    t0: float
    t1: float
    outcome: str  # ok | failed | unknown
    status: int | None = None
    code: str | None = None


@dataclass
class Purchase:
    user_id: str
    seat_id: str
    reservation_id: str | None = None
    hold: str | None = None  # the last outcome the client saw: ok | failed | unknown | None (never sent)
    pay: str | None = None
    finalized: bool = False


@dataclass
class History:
    started: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    purchases: list[Purchase] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started

    def as_dicts(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return [asdict(o) for o in self.ops], [asdict(p) for p in self.purchases]


class Load:
    def __init__(self, urls: dict[str, str], token: str, *, buyers: int = 6, probers: int = 2, timeout: float = 3.0,
                 purchase_deadline: float = 45.0, history: History | None = None) -> None:
        self.urls = urls
        self.token = token
        self.buyers = buyers
        self.probers = probers
        self.timeout = timeout
        self.purchase_deadline = purchase_deadline
        self.history = history or History()
        self.run_id = os.urandom(3).hex()
        self.stopping = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None

    # --- plumbing ------------------------------------------------------------

    def open(self) -> aiohttp.ClientSession:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self.session

    async def request(self, method: str, url: str, body: dict | None = None, key: str | None = None,
                      timeout: float | None = None) -> tuple[str, int | None, str | None, dict]:
        """(outcome, status, error code, body) of one request, never raising for the network."""
        assert self.session is not None
        headers = {"Idempotency-Key": key} if key else {}
        extra = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {}
        try:
            async with self.session.request(method, url, json=body, headers=headers, **extra) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = {}
                data = data if isinstance(data, dict) else {}
                if 200 <= resp.status < 300:
                    return "ok", resp.status, None, data
                return "failed", resp.status, (data.get("error") or {}).get("code"), data
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return "unknown", None, type(exc).__name__, {}

    async def write(self, purchase: Purchase, kind: str, method: str, url: str, body: dict | None,
                    key: str) -> tuple[str, dict]:
        """One write, retried with its key until a definite answer or the purchase's deadline."""
        deadline = time.monotonic() + self.purchase_deadline
        pause, attempt = 0.1, 0
        while True:
            attempt += 1
            t0 = self.history.now()
            outcome, status, code, data = await self.request(method, url, body, key)
            self.history.ops.append(Op(purchase.user_id, kind, attempt, t0, self.history.now(), outcome, status, code))
            retry = outcome == "unknown" or status in (500, 502, 503, 504) or code in RETRYABLE_CODES
            if not retry or time.monotonic() >= deadline:
                return outcome, data
            await asyncio.sleep(pause)
            pause = min(0.5, pause * 2)  # the gap is measured to within half a second

    async def poll(self, url: str, done, deadline: float) -> dict | None:
        pause = 0.02
        while time.monotonic() < deadline:
            outcome, _, _, data = await self.request("GET", url)
            if outcome == "ok" and done(data):
                return data
            await asyncio.sleep(pause)
            pause = min(0.25, pause * 2)
        return None

    # --- the buyers ------------------------------------------------------------

    async def purchase(self, seat_id: str, user_id: str) -> None:
        r, b = self.urls["reservation"], self.urls["billing"]
        p = Purchase(user_id, seat_id)
        self.history.purchases.append(p)
        outcome, hold = await self.write(p, "reserve", "POST", f"{r}/api/reserve",
                                         {"seat_id": seat_id, "user_id": user_id}, f"{user_id}-hold")
        p.hold = outcome
        if outcome != "ok":
            return
        p.reservation_id = hold["id"]
        deadline = time.monotonic() + self.purchase_deadline
        if await self.poll(f"{b}/api/orders/{p.reservation_id}", lambda o: True, deadline) is None:
            return
        p.pay, _ = await self.write(p, "pay", "POST", f"{b}/api/orders/{p.reservation_id}/pay", None,
                                    f"{user_id}-pay")
        if p.pay == "ok":
            confirmed = await self.poll(f"{r}/api/reservations/{p.reservation_id}",
                                        lambda res: res.get("status") == "confirmed", deadline)
            p.finalized = confirmed is not None

    async def buyer(self, index: int, seats: asyncio.Queue) -> None:
        n = 0
        while not self.stopping.is_set() and not seats.empty():
            n += 1
            await self.purchase(seats.get_nowait(), f"drill-{self.run_id}-{index}-{n}")

    async def prober(self, index: int, seats: asyncio.Queue) -> None:
        """Holds only, one after another: a buyer waiting for its order sends no writes, a prober
        keeps writing, so the write gap is seen when it opens, not when the next buyer gets there."""
        n = 0
        while not self.stopping.is_set() and not seats.empty():
            n += 1
            p = Purchase(f"drill-{self.run_id}-probe{index}-{n}", seats.get_nowait())
            self.history.purchases.append(p)
            p.hold, hold = await self.write(p, "reserve", "POST", f"{self.urls['reservation']}/api/reserve",
                                            {"seat_id": p.seat_id, "user_id": p.user_id}, f"{p.user_id}-hold")
            p.reservation_id = hold.get("id") if p.hold == "ok" else None
            await asyncio.sleep(0.1)

    async def run(self, seats: list[str]) -> None:
        """Buy until ``stop()`` (each buyer finishes the purchase it is in) or the seats run out."""
        queue: asyncio.Queue = asyncio.Queue()
        for seat in seats:
            queue.put_nowait(seat)
        await asyncio.gather(*(self.buyer(i, queue) for i in range(self.buyers)),
                             *(self.prober(i, queue) for i in range(self.probers)))

    def stop(self) -> None:
        self.stopping.set()

    # --- the drill's event and the final state -----------------------------------

    async def create_event(self, seats: int) -> tuple[str, list[str]]:
        """An event of its own for the drill (rows of 100 seats); its id and seat ids."""
        r = self.urls["reservation"]
        rows = max(1, -(-seats // 100))
        outcome, status, code, event = await self.request("POST", f"{r}/api/events", {
            "name": f"drill {self.run_id} {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
            "venue": "drill", "starts_at": "2030-01-01T00:00:00Z",
            "layout": {"sections": [{"name": "D", "rows": rows, "seats_per_row": 100, "price_minor": 100,
                                     "currency": "EUR"}]}}, key=f"drill-{self.run_id}-event")
        if outcome != "ok":
            raise RuntimeError(f"could not create the drill's event: {status} {code}")
        return event["id"], [s["id"] for s in (await self.seat_map(event["id"]))]

    async def seat_map(self, event_id: str) -> list[dict]:
        seats: list[dict] = []
        while True:
            after = f"&after={seats[-1]['id']}" if seats else ""
            outcome, status, code, page = await self.request(
                "GET", f"{self.urls['reservation']}/api/events/{event_id}/seats?limit=5000{after}")
            if outcome != "ok":
                raise RuntimeError(f"could not read the seat map: {status} {code}")
            seats += page["seats"]
            if page["next"] is None:
                return seats

    async def final_state(self, event_id: str) -> dict[str, Any]:
        """Orders (billing), every reservation they or the clients name (reservation), the seat map."""
        for _ in range(3):  # the read-back is not measured: a loaded machine may take longer than the load's timeout
            outcome, status, code, body = await self.request(
                "GET", f"{self.urls['billing']}/api/events/{event_id}/orders", timeout=30)
            if outcome == "ok":
                break
            await asyncio.sleep(0.5)
        if outcome != "ok":
            raise RuntimeError(f"could not read the event's orders: {status} {code}")
        orders = body["orders"]
        fetched_one_by_one = 0
        if len(orders) >= EVENT_ORDERS_CAP:  # the listing stops there: ask for every order a client knows of
            listed = {o["reservation_id"] for o in orders}  # an order's id is its reservation's
            missing = sorted({p.reservation_id for p in self.history.purchases if p.reservation_id} - listed)
            found: dict[str, dict] = {}

            async def order(oid: str) -> None:
                for _ in range(10):
                    outcome, status, _, got = await self.request("GET", f"{self.urls['billing']}/api/orders/{oid}")
                    if outcome == "ok" or status == 404:
                        if outcome == "ok":
                            found[oid] = got
                        return
                    await asyncio.sleep(0.2)
                raise RuntimeError(f"could not read order {oid}")

            for start in range(0, len(missing), 32):
                await asyncio.gather(*(order(oid) for oid in missing[start:start + 32]))
            orders = [*orders, *found.values()]
            fetched_one_by_one = len(found)
        ids = {o["reservation_id"] for o in orders} | {p.reservation_id for p in self.history.purchases
                                                        if p.reservation_id}
        reservations: dict[str, Any] = {}

        async def read(rid: str) -> None:
            for _ in range(10):
                outcome, status, _, res = await self.request("GET", f"{self.urls['reservation']}/api/reservations/{rid}")
                if outcome == "ok" or status == 404:
                    reservations[rid] = res if outcome == "ok" else None
                    return
                await asyncio.sleep(0.2)
            raise RuntimeError(f"could not read reservation {rid}")

        ids_list = sorted(ids)
        for start in range(0, len(ids_list), 32):
            await asyncio.gather(*(read(rid) for rid in ids_list[start:start + 32]))
        seats = {s["id"]: s["status"] for s in await self.seat_map(event_id)}
        return {"orders": orders, "reservations": reservations, "seats": seats,
                "orders_fetched_one_by_one": fetched_one_by_one}

    async def settle(self, deadline_s: float = 60.0) -> bool:
        """Wait until every paid purchase's sale is finalized (the pipeline drained it)."""
        deadline = time.monotonic() + deadline_s
        for p in self.history.purchases:
            if p.pay == "ok" and not p.finalized:
                done = await self.poll(f"{self.urls['reservation']}/api/reservations/{p.reservation_id}",
                                       lambda res: res.get("status") == "confirmed", deadline)
                p.finalized = done is not None
        return all(p.finalized for p in self.history.purchases if p.pay == "ok")


async def seed_concurrency(urls: dict[str, str], token: str, n: int, timeout: float = 10.0) -> dict[str, Any]:
    """The seed's drill: ``n`` simultaneous holds of one seat by ``n`` buyers; exactly one may win."""
    load = Load(urls, token, timeout=timeout)
    async with load.open():
        event_id, seats = await load.create_event(1)
        seat = seats[0]
        gate = asyncio.Event()
        results: list[tuple[str, int | None, str | None, dict]] = []

        async def one(i: int) -> None:
            await gate.wait()
            results.append(await load.request("POST", f"{urls['reservation']}/api/reserve",
                                              {"seat_id": seat, "user_id": f"drill-{load.run_id}-seed-{i}"},
                                              key=f"drill-{load.run_id}-seed-{i}"))

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(0)  # every task is waiting at the gate
        gate.set()
        await asyncio.gather(*tasks)
        winners = [body for outcome, _, _, body in results if outcome == "ok"]
        seat_state = {s["id"]: s["status"] for s in await load.seat_map(event_id)}[seat]
        errors: dict[str, int] = {}
        for outcome, status, code, _ in results:
            if outcome != "ok":
                errors[f"{status or outcome} {code}"] = errors.get(f"{status or outcome} {code}", 0) + 1
        return {"n": n, "winners": len(winners), "seat_status": seat_state, "errors": errors,
                "winner_user": winners[0]["user_id"] if len(winners) == 1 else None, "event_id": event_id}
