import uuid

import aio_pika
import aiohttp
import asyncpg
import pytest

from deploy.runtime.amqp import Names
from tests.billing.conftest import Pipeline, Service
from tests.support.api import ApiClient
from tests.support.stack import free_port, fresh_mariadb_database, fresh_pg_database, stack_env

# Marks by directory: tests/conftest.py (a conftest's pytestmark has no effect).


class FullPipeline(Pipeline):
    """All four daemons as real processes, on fresh databases and their own RabbitMQ names."""

    def __init__(self, *args, portal_dsn: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.portal_dsn = portal_dsn
        self.amqp_url = stack_env()["TICKETFLOW_AMQP_URL"]
        self.names = Names(f"tf-e2e-{uuid.uuid4().hex[:8]}")
        self.services: dict[str, Service] = {}

    async def start_all(self, **env: str) -> None:
        common = {"TICKETFLOW_AMQP_PREFIX": self.names.prefix, "TICKETFLOW_AMQP_URL": self.amqp_url, **env}
        self.services["reservation"] = await self.reservation(**common)
        self.services["billing"] = await self.billing(**common)
        self.services["bridge"] = await self._start("bridge_daemon", "TICKETFLOW_BRIDGE_PORT", {
            "TICKETFLOW_BRIDGE_LINK_PORT": str(self.bridge_link), **common})
        self.services["portal"] = await self._start("portal_consumer", "TICKETFLOW_PORTAL_PORT", {
            "TICKETFLOW_PORTAL_PG_DSN": self.portal_dsn,
            "TICKETFLOW_RESERVATION_URL": self.services["reservation"].api.base_url,
            "TICKETFLOW_BILLING_URL": self.services["billing"].api.base_url, **common})

    async def start_with_console(self, drill_dir, **portal_env: str) -> None:
        """All four daemons, the portal knowing every daemon's port and store as `run all` tells it, so that
        the `ticketflow status` its operators' console runs sees this pipeline (and the local stack's servers)."""
        from portal_consumer.api import SPEC

        common = {"TICKETFLOW_AMQP_PREFIX": self.names.prefix, "TICKETFLOW_AMQP_URL": self.amqp_url}
        portal = free_port()
        origin = f"http://127.0.0.1:{portal}"
        self.services["reservation"] = await self.reservation(**common)
        self.services["billing"] = await self.billing(TICKETFLOW_PAGE_ORIGINS=origin, **common)
        self.services["bridge"] = await self._start("bridge_daemon", "TICKETFLOW_BRIDGE_PORT", {
            "TICKETFLOW_BRIDGE_LINK_PORT": str(self.bridge_link), **common})
        ports = {f"TICKETFLOW_{name.upper()}_PORT": self.services[name].api.base_url.rsplit(":", 1)[1]
                 for name in ("reservation", "billing", "bridge")}
        process = self._process("portal_consumer", {
            "TICKETFLOW_PORTAL_PORT": str(portal), "TICKETFLOW_PORTAL_PG_DSN": self.portal_dsn,
            "TICKETFLOW_PG_DSN": self.pg_dsn, "TICKETFLOW_MARIADB_DSN": self.maria_dsn, **ports,
            "TICKETFLOW_RESERVATION_URL": self.services["reservation"].api.base_url,
            "TICKETFLOW_BILLING_URL": self.services["billing"].api.base_url,
            "TICKETFLOW_DRILL_REPORTS_DIR": str(drill_dir), **common, **portal_env}, portal)
        await process.start_ready()
        self.services["portal"] = Service(process, ApiClient(origin, SPEC, self.session))

    async def _start(self, module: str, port_env: str, env: dict) -> Service:
        from portal_consumer.api import SPEC

        port = free_port()
        process = self._process(module, {port_env: str(port), **env}, port)
        await process.start_ready()
        return Service(process, ApiClient(f"http://127.0.0.1:{port}", SPEC, self.session))

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    async def portal_sql(self, query: str, *args):
        conn = await asyncpg.connect(self.portal_dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def reservation_sql(self, query: str, *args):
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def queue_depth(self, queue: str) -> int:
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count
        finally:
            await connection.close()

    async def delete_amqp_names(self) -> None:
        try:
            connection = await aio_pika.connect(self.amqp_url, timeout=5)
        except Exception:
            return
        try:
            channel = await connection.channel()
            for queue in (self.names.portal_queue, self.names.dead_letter_queue,
                          self.names.position_queue("payments")):
                await channel.queue_delete(queue)
            for exchange in (self.names.exchange, self.names.dead_letter_exchange):
                await channel.exchange_delete(exchange)
        finally:
            await connection.close()


@pytest.fixture
async def full(tmp_path):
    async with fresh_pg_database("tf_e2e_res") as pg, fresh_mariadb_database("tf_e2e_bill") as maria, \
            fresh_pg_database("tf_e2e_bridge") as bridge, fresh_pg_database("tf_e2e_portal") as portal, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        p = FullPipeline(pg, maria, bridge, tmp_path, session, portal_dsn=portal)
        try:
            yield p
        finally:
            p.stop()
            await p.delete_amqp_names()
