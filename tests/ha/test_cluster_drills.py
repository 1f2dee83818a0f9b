"""`mariadb-node`, `mariadb-writer` and `rabbitmq-node` under purchase load on ONE private full HA stack, each
audited to zero anomalies with its victim rejoined and the stack healthy afterwards.

The stack (etcd, Patroni PostgreSQL, Galera x3, RabbitMQ x3, HAProxy; every port private) and the four daemons
(real processes: reservation and portal on PostgreSQL through HAProxy's read-write port, billing on a database of
the Galera cluster through HAProxy's writer port, all of them on the RabbitMQ cluster's node list) come up once
for the module; the drills then run in file order, each leaving the stack as it found it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import aiohttp
import aiomysql
import pytest

from deploy.ops.drill.cluster_faults import (
    MariadbNode,
    MariadbWriter,
    RabbitmqNode,
    dead_letters,
)
from deploy.ops.drill.faults import FAULTS, Target
from deploy.ops.drill.report import render
from deploy.ops.drill.run import health_problems, run_fault_drill
from deploy.ops.stack.topology import HATopology, ha
from deploy.runtime.auth import SERVICE
from tests.e2e.conftest import FullPipeline
from tests.ha.test_drill_failover import assert_clean, create_database
from tests.support.auth import token
from tests.support.stack import free_port, free_port_block

pytestmark = [pytest.mark.stack, pytest.mark.slow]

BLOCKS = ("ETCD_CLIENT_PORT", "ETCD_PEER_PORT", "PG_PORT", "PATRONI_PORT", "GALERA_PORT", "GALERA_REPL_PORT",
          "GALERA_IST_PORT", "GALERA_SST_PORT", "RABBITMQ_AMQP_PORT", "RABBITMQ_DIST_PORT")
SINGLE = ("RW_PORT", "RO_PORT", "STATS_PORT", "MARIADB_WRITER_PORT", "RABBITMQ_EPMD_PORT")


@dataclass
class Drills:
    topology: HATopology
    target: Target
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)


async def create_galera_database(topology: HATopology, name: str) -> str:
    s, port = topology.galera.settings, topology.galera.ha.mariadb_writer_port
    conn = await aiomysql.connect(host="127.0.0.1", port=port, user=s.user, password=s.password, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()
    return topology.galera.dsn(name)


@pytest.fixture(scope="module")
def drills(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster-drills")
    directory = tmp / "ha"
    env = {"TICKETFLOW_HA_STACK_DIR": str(directory), "TICKETFLOW_HA_SCOPE": f"cdrill-{uuid.uuid4().hex[:6]}",
           "TICKETFLOW_HA_GALERA": "1", "TICKETFLOW_HA_RABBITMQ_NODES": "3",
           "TICKETFLOW_HA_RABBITMQ_CTL_PORT_MIN": str(free_port_block(10)),
           **{f"TICKETFLOW_HA_{name}": str(free_port_block(3)) for name in BLOCKS},
           **{f"TICKETFLOW_HA_{name}": str(free_port()) for name in SINGLE}}

    def ticketflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.ops.cli", "stack", *args, "--topology", "ha"],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False)

    loop = asyncio.new_event_loop()  # one loop for the module: the daemons' session and processes outlive a test
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        up = ticketflow("up")
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            topology = ha()
            session = loop.run_until_complete(_session())
            pipeline = None
            try:
                pipeline, target = loop.run_until_complete(_daemons(topology, session, tmp))
                yield Drills(topology, target, loop)
            finally:
                if pipeline is not None:
                    pipeline.stop()
                loop.run_until_complete(session.close())
        finally:
            ticketflow("down")
            for link in directory.glob("*/private"):
                shutil.rmtree(link.resolve().parent, ignore_errors=True)
            loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def _daemons(topology: HATopology, session: aiohttp.ClientSession, tmp) -> tuple[FullPipeline, Target]:
    """The four daemons on the private stack: PostgreSQL through HAProxy, billing on the Galera writer port,
    the RabbitMQ cluster's node list (names of their own)."""
    reservation_dsn = await create_database(topology, "cdrill_reservation")
    portal_dsn = await create_database(topology, "cdrill_portal")
    maria = await create_galera_database(topology, "cdrill_billing")
    amqp = topology.rabbit.env()
    pipeline = FullPipeline(reservation_dsn, maria, reservation_dsn, tmp, session, portal_dsn=portal_dsn)
    pipeline.amqp_url = amqp["TICKETFLOW_AMQP_URL"]
    try:
        await pipeline.start_all(TICKETFLOW_AMQP_URLS=amqp["TICKETFLOW_AMQP_URLS"])
    except BaseException:
        pipeline.stop()
        raise
    target = Target(urls={name: service.api.base_url for name, service in pipeline.services.items()},
                    token=token(SERVICE), topology=topology,
                    env={"TICKETFLOW_PG_DSN": reservation_dsn, "TICKETFLOW_MARIADB_DSN": maria, **amqp,
                         "TICKETFLOW_AMQP_PREFIX": pipeline.names.prefix})
    return pipeline, target


def test_the_three_cluster_faults_are_registered_by_name_for_the_chaos_drill():
    assert (FAULTS["mariadb-writer"], FAULTS["mariadb-node"], FAULTS["rabbitmq-node"]) == (
        MariadbWriter, MariadbNode, RabbitmqNode)


def assert_rejoined_and_healthy(drills: Drills, report: dict) -> None:
    assert_clean(report)
    assert report["facts"]["rejoined"], report["facts"]
    started = time.monotonic()
    assert drills.run(health_problems(drills.target, drained=True)) == []
    print(f"one health check of the whole stack: {time.monotonic() - started:.2f} s")


def test_mariadb_node_drill_writes_go_on_and_the_node_rejoins(drills):
    writer = drills.topology.galera.writer()
    report = drills.run(run_fault_drill(MariadbNode(), drills.target, duration=3, buyers=4))
    print(render(report))

    assert_rejoined_and_healthy(drills, report)
    facts = report["facts"]
    assert facts["victim"] != writer and facts["writer"] == writer and not facts["writer_moved"], facts
    assert facts["rejoin"]["donor"] != writer, facts  # an rsync or IST donor is never the writer
    assert report["by_kind"]["pay"]["write_gap_s"] == 0, report["by_kind"]  # no payment failed


def test_mariadb_writer_drill_moves_the_writes_and_the_old_writer_rejoins_by_ist(drills):
    old = drills.topology.galera.writer()
    report = drills.run(run_fault_drill(MariadbWriter(), drills.target, duration=3, buyers=4))
    print(render(report))

    assert_rejoined_and_healthy(drills, report)
    facts = report["facts"]
    assert facts["victim"] == old and facts["new_writer"] not in (None, old), facts
    assert not facts["writer_flapped_back"] and facts["rejoin"]["by"] == "IST", facts
    assert report["milestones_s"]["detect"] <= report["milestones_s"]["rejoined"]


def test_rabbitmq_node_drill_kills_the_portal_queues_leader_and_loses_nothing(drills):
    report = drills.run(run_fault_drill(RabbitmqNode(), drills.target, duration=3, buyers=4))
    print(render(report))

    assert_rejoined_and_healthy(drills, report)
    facts = report["facts"]
    assert facts["new_leader"] not in (None, facts["node"]), facts
    assert not facts["publishing"]["unresolved"] and facts["publishing"]["stretches"] > 0, facts["publishing"]
    assert facts["dead_letters"] == 0 and drills.run(dead_letters(drills.target)) == 0
