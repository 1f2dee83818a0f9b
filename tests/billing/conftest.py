import uuid
from dataclasses import dataclass

import aiohttp
import aiomysql
import asyncpg
import pytest

from billing_daemon.openapi import SPEC as BILLING_SPEC
from reservation_daemon.openapi import SPEC as RESERVATION_SPEC
from tests.support.api import ApiClient
from tests.support.daemons import DaemonProcess
from tests.support.stack import free_port, fresh_mariadb_database, fresh_pg_database

# Marks by directory: tests/conftest.py (a conftest's pytestmark has no effect).


@dataclass
class Service:
    process: DaemonProcess
    api: ApiClient


class Pipeline:
    """A reservation daemon and billing daemon on fresh databases, and a stand-in for the bridge.

    The stand-in is the test receiver (its own PostgreSQL database) serving the
    ``payments`` stream on the bridge's port, so a test sees exactly what billing sent.
    """

    def __init__(self, pg_dsn, maria_dsn, bridge_dsn, tmp_path, session) -> None:
        self.pg_dsn, self.maria_dsn, self.bridge_dsn = pg_dsn, maria_dsn, bridge_dsn
        self.tmp_path, self.session = tmp_path, session
        self.billing_link = free_port()
        self.bridge_link = free_port()
        self.billing_http = free_port()  # the first billing's port, known before it starts (reservation calls it)
        self.processes: list[DaemonProcess] = []
        self.bridge: DaemonProcess | None = None

    def _process(self, module: str, env: dict, port: int) -> DaemonProcess:
        process = DaemonProcess(module, env, self.tmp_path / f"{module}-{port}.log",
                                ready_url=f"http://127.0.0.1:{port}/ready")
        self.processes.append(process)
        return process

    async def reservation(self, **env: str) -> Service:
        port = free_port()
        process = self._process("reservation_daemon", {
            "TICKETFLOW_PG_DSN": self.pg_dsn, "TICKETFLOW_RESERVATION_PORT": str(port),
            "TICKETFLOW_BILLING_LINK_PORT": str(self.billing_link),
            "TICKETFLOW_BILLING_URL": f"http://127.0.0.1:{self.billing_http}", **env}, port)
        await process.start_ready()
        return Service(process, ApiClient(f"http://127.0.0.1:{port}", RESERVATION_SPEC, self.session))

    async def billing(self, **env: str) -> Service:
        first = not any(p.module == "billing_daemon" for p in self.processes)
        port = self.billing_http if first else free_port()
        process = self._process("billing_daemon", {
            "TICKETFLOW_MARIADB_DSN": self.maria_dsn, "TICKETFLOW_BILLING_PORT": str(port),
            "TICKETFLOW_BILLING_LINK_PORT": str(self.billing_link),
            "TICKETFLOW_BRIDGE_LINK_PORT": str(self.bridge_link), "TICKETFLOW_RELAY_LOCK_RETRY_SECONDS": "0.2",
            **env}, port)
        await process.start_ready()
        return Service(process, ApiClient(f"http://127.0.0.1:{port}", BILLING_SPEC, self.session))

    def start_bridge_stand_in(self) -> DaemonProcess:
        self.bridge = DaemonProcess("tests.support.pg_receiver", {
            "TF_RECV_DSN": self.bridge_dsn, "TF_RECV_PORT": str(self.bridge_link), "TF_RECV_STREAM": "payments"},
            self.tmp_path / "bridge-stand-in.log")
        self.bridge.start()
        self.processes.append(self.bridge)
        return self.bridge

    async def bridge_events(self) -> list[dict]:
        conn = await asyncpg.connect(self.bridge_dsn)
        try:
            if not await conn.fetchval("SELECT to_regclass('received') IS NOT NULL"):
                return []
            rows = await conn.fetch("SELECT seq, type, data FROM received ORDER BY seq")
            import json
            return [{"seq": r["seq"], "type": r["type"], "data": json.loads(r["data"])} for r in rows]
        finally:
            await conn.close()

    async def reservation_sql_rows(self, reservation_id: str) -> dict:
        """The reservation's row as the sweeper sees it: past its expiry yet? asked billing yet?"""
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            return dict(await conn.fetchrow(
                "SELECT status, expires_at <= now() AS past, release_check_after FROM reservations WHERE id = $1",
                uuid.UUID(reservation_id)))
        finally:
            await conn.close()

    async def maria(self, sql: str, args=None) -> list[dict]:
        from deploy.runtime.mysql import MariaDsn

        dsn = MariaDsn.parse(self.maria_dsn)
        conn = await aiomysql.connect(host=dsn.hosts[0][0], port=dsn.hosts[0][1], user=dsn.user,
                                      password=dsn.password, db=dsn.database, autocommit=True)
        try:
            async with conn.cursor(aiomysql.DictCursor) as cur:
                await cur.execute(sql, args)
                return list(await cur.fetchall())
        finally:
            conn.close()

    def stop(self) -> None:
        for process in self.processes:
            process.kill()


@pytest.fixture
async def pipeline(tmp_path):
    async with fresh_pg_database("tf_bres") as pg, fresh_mariadb_database("tf_bill") as maria, \
            fresh_pg_database("tf_bbridge") as bridge, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        p = Pipeline(pg, maria, bridge, tmp_path, session)
        try:
            yield p
        finally:
            p.stop()


async def hold_one(reservation: Service, user_id: str, seats: int = 1) -> dict:
    """Create an event and hold ``seats`` of its seats for ``user_id``."""
    event = await reservation.api.post("/api/events", {
        "name": "Show", "venue": "Hall", "starts_at": "2027-01-01T20:00:00Z",
        "layout": {"sections": [{"name": "A", "rows": 1, "seats_per_row": max(seats, 2), "price_minor": 2500,
                                 "currency": "EUR"}]}})
    seat_ids = [s["id"] for s in (await reservation.api.get(f"/api/events/{event.body['id']}/seats")).body["seats"]]
    held = await reservation.api.post("/api/reservations", {"event_id": event.body["id"], "seat_ids": seat_ids[:seats],
                                                            "user_id": user_id})
    assert held.status == 201, held.body
    return held.body


async def order_appears(billing: Service, order_id: str) -> bool:
    return (await billing.api.get(f"/api/orders/{order_id}")).status == 200
