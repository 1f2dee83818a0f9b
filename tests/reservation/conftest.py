import asyncio
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest

from reservation_daemon.openapi import SPEC
from tests.support.api import ApiClient
from tests.support.billing_stub import BillingStub
from tests.support.daemons import DaemonProcess
from tests.support.stack import free_port, fresh_pg_database

# Marks by directory: tests/conftest.py (a conftest's pytestmark has no effect).


@dataclass
class Reservation:
    process: DaemonProcess
    api: ApiClient
    port: int
    url: str


class Cluster:
    """Reservation daemons sharing one fresh database, plus an optional test receiver."""

    def __init__(self, dsn: str, tmp_path, session: aiohttp.ClientSession) -> None:
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.session = session
        self.link_port = free_port()  # where billing would listen; nothing does unless a test starts a receiver
        self.instances: list[Reservation] = []
        self.receivers: list[DaemonProcess] = []
        self.billing = BillingStub()  # asked before any hold is released; answers "released" by default

    async def start(self, **env: str) -> Reservation:
        port = free_port()
        if self.billing._runner is None:
            await self.billing.start()
        settings = {
            "TICKETFLOW_BILLING_URL": self.billing.url,
            "TICKETFLOW_PG_DSN": self.dsn,
            "TICKETFLOW_RESERVATION_PORT": str(port),
            "TICKETFLOW_BILLING_LINK_PORT": str(self.link_port),
            "TICKETFLOW_INSTANCE": f"reservation-{len(self.instances) + 1}",
            "TICKETFLOW_RELAY_LOCK_RETRY_SECONDS": "0.2",
            **env,
        }
        url = f"http://127.0.0.1:{port}"
        process = DaemonProcess("reservation_daemon", settings, self.tmp_path / f"reservation-{port}.log",
                                ready_url=url + "/ready")
        await process.start_ready()
        instance = Reservation(process, ApiClient(url, SPEC, self.session), port, url)
        self.instances.append(instance)
        return instance

    async def start_receiver(self, dsn: str) -> DaemonProcess:
        receiver = DaemonProcess("tests.support.pg_receiver", {"TF_RECV_DSN": dsn, "TF_RECV_PORT": str(self.link_port)},
                                 self.tmp_path / f"receiver-{len(self.receivers)}.log")
        receiver.start()
        self.receivers.append(receiver)
        return receiver

    async def sql(self, query: str, *args):
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    def stop(self) -> None:
        for thing in [*(i.process for i in self.instances), *self.receivers]:
            thing.kill()


@pytest.fixture
async def cluster(tmp_path):
    async with fresh_pg_database("tf_res") as dsn, aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        c = Cluster(dsn, tmp_path, session)
        try:
            yield c
        finally:
            c.stop()
            await c.billing.stop()


@pytest.fixture
async def reservation(cluster) -> Reservation:
    return await cluster.start()


@pytest.fixture
async def receiver_db():
    async with fresh_pg_database("tf_recv") as dsn:
        yield dsn


async def create_event(api: ApiClient, sections=None, name="Concert") -> dict:
    sections = sections or [{"name": "A", "rows": 2, "seats_per_row": 5, "price_minor": 5000, "currency": "EUR"}]
    reply = await api.post("/api/events", {"name": name, "venue": "Hall", "starts_at": "2027-01-01T20:00:00Z",
                                           "layout": {"sections": sections}})
    assert reply.status == 201, reply.body
    return reply.body


async def seats_of(api: ApiClient, event_id: str, status: str | None = None) -> list[dict]:
    """Every seat of the event (following the pages)."""
    seats: list[dict] = []
    query = "?limit=5000" + (f"&status={status}" if status else "")
    while True:
        reply = await api.get(f"/api/events/{event_id}/seats{query}" + (f"&after={seats[-1]['id']}" if seats else ""))
        assert reply.status == 200, reply.body
        seats += reply.body["seats"]
        if reply.body["next"] is None:
            return seats
        assert reply.body["next"] == seats[-1]["id"]


async def gather_limited(coros, limit: int):
    semaphore = asyncio.Semaphore(limit)

    async def run(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))
