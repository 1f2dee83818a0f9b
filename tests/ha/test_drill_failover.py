"""`pg-failover`, `pg-switchover` and `pg-replica-loss` under load, each on a private HA stack (its own ports
and directory), audited to zero anomalies.

The four daemons run as real processes: reservation and portal on the HA cluster through HAProxy's
read-write port, billing on a fresh MariaDB database, RabbitMQ names of their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid

import aiohttp
import asyncpg
import pytest

from deploy.ops.drill.faults import (STANDBY_ROLES, SYNC_ROLES, PgFailover, PgReplicaLoss, PgSwitchover, Target,
                                     members)
from deploy.ops.drill.report import render
from deploy.ops.drill.run import run_fault_drill
from deploy.ops.stack.topology import ha
from deploy.runtime.auth import SERVICE
from tests.e2e.conftest import FullPipeline
from tests.support.auth import token
from tests.support.stack import free_port, free_port_block, fresh_mariadb_database, stack_env

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture
def private_ha(tmp_path, monkeypatch):
    """An HA stack of its own: private ports (so it runs beside another HA stack), directory and scope."""
    directory = tmp_path / "ha"
    for name, value in {
        "TICKETFLOW_HA_STACK_DIR": str(directory), "TICKETFLOW_HA_SCOPE": f"drill-{uuid.uuid4().hex[:6]}",
        "TICKETFLOW_HA_ETCD_CLIENT_PORT": free_port_block(3), "TICKETFLOW_HA_ETCD_PEER_PORT": free_port_block(3),
        "TICKETFLOW_HA_PG_PORT": free_port_block(3), "TICKETFLOW_HA_PATRONI_PORT": free_port_block(3),
        "TICKETFLOW_HA_RW_PORT": free_port(), "TICKETFLOW_HA_RO_PORT": free_port(),
        "TICKETFLOW_HA_STATS_PORT": free_port(),
        "TICKETFLOW_HA_GALERA": 0,  # PostgreSQL drills: billing runs on a fresh database of the local MariaDB
        "TICKETFLOW_HA_RABBITMQ_NODES": 0,  # these drills' daemons use the local RabbitMQ
    }.items():
        monkeypatch.setenv(name, str(value))

    def ticketflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.ops.cli", "stack", *args, "--topology", "ha"],
                              env=dict(os.environ), capture_output=True, text=True, timeout=300)

    up = ticketflow("up")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield ha()
    finally:
        ticketflow("down")
        keep_node_logs(directory, tmp_path / "node-logs")
        for link in directory.glob("*/private"):
            shutil.rmtree(link.resolve().parent, ignore_errors=True)


def keep_node_logs(directory, into) -> None:
    """Patroni's and PostgreSQL's logs of every node, kept under the test's tmp_path (pytest keeps the last
    runs' directories) for building a failover's timeline; the stack's own directory is removed."""
    for node in sorted(directory.glob("pg*")):
        for log in [node / "server.log", *(node / "private" / "log").glob("*.log")]:
            with contextlib.suppress(OSError):
                (into / node.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, into / node.name / log.name)


async def create_database(topology, name: str) -> str:
    proxy = topology.proxy
    conn = await asyncpg.connect(proxy.dsn(proxy.ha.rw_port, "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return proxy.dsn(proxy.ha.rw_port, name)


@contextlib.asynccontextmanager
async def drill_target(topology, tmp_path):
    """The four daemons as real processes on the private HA cluster (billing on MariaDB), as a drill Target."""
    reservation_dsn = await create_database(topology, "drill_reservation")
    portal_dsn = await create_database(topology, "drill_portal")
    async with fresh_mariadb_database("tf_drill_bill") as maria, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        pipeline = FullPipeline(reservation_dsn, maria, reservation_dsn, tmp_path, session, portal_dsn=portal_dsn)
        try:
            await pipeline.start_all()
            yield Target(
                urls={name: service.api.base_url for name, service in pipeline.services.items()},
                token=token(SERVICE), topology=topology,
                env={"TICKETFLOW_PG_DSN": reservation_dsn, "TICKETFLOW_MARIADB_DSN": maria,
                     "TICKETFLOW_AMQP_URL": stack_env()["TICKETFLOW_AMQP_URL"],
                     "TICKETFLOW_AMQP_PREFIX": pipeline.names.prefix})
        finally:
            pipeline.stop()
            await pipeline.delete_amqp_names()


def assert_clean(report) -> None:
    audit = report["audit"]
    assert (audit["lost"], audit["duplicated"], audit["double_sold"]) == (0, 0, 0), audit["details"]
    assert audit["acknowledged_purchases"] > 0, "the load bought nothing: the drill proved nothing"
    assert report["healthy_after"], report["problems_after"]
    assert report["all_sales_finalized"] and report["links_drained"]
    assert report["time_to_detect_s"] is not None and report["recovery_s"] is not None
    assert "500 INTERNAL" not in report["errors"], report["errors"]  # a failover is never a bug's answer


async def test_pg_failover_drill_loses_nothing_and_the_old_leader_rejoins_as_a_replica(private_ha, tmp_path):
    topology = private_ha
    async with drill_target(topology, tmp_path) as target:
        old_leader = next(m["name"] for m in members(topology) if m["role"] == "leader")

        report = await run_fault_drill(PgFailover(), target, duration=6, buyers=4)
        print(render(report))

        assert_clean(report)
        assert report["facts"]["victim"] == old_leader and report["facts"]["killed"] == {
            "patroni": True, "postmaster": True}, report["facts"]
        roles = {m["name"]: m["role"] for m in members(topology)}
        assert roles[old_leader] in ("replica", "sync_standby"), roles
        assert report["facts"]["rejoined"]


async def test_pg_switchover_drill_moves_the_leader_to_the_sync_standby_and_loses_nothing(private_ha, tmp_path):
    topology = private_ha
    async with drill_target(topology, tmp_path) as target:
        cluster = members(topology)
        old = next(m["name"] for m in cluster if m["role"] == "leader")
        sync = next(m["name"] for m in cluster if m["role"] in SYNC_ROLES)

        report = await run_fault_drill(PgSwitchover(), target, duration=4, buyers=4)
        print(render(report))

        assert_clean(report)
        assert report["facts"] == {"old_leader": old, "new_leader": sync, "rejoined": True}, report["facts"]
        roles = {m["name"]: m["role"] for m in members(topology)}
        assert roles[sync] == "leader" and roles[old] in STANDBY_ROLES, roles


async def test_pg_replica_loss_drill_keeps_writing_through_another_sync_standby(private_ha, tmp_path):
    topology = private_ha
    async with drill_target(topology, tmp_path) as target:
        sync = next(m["name"] for m in members(topology) if m["role"] in SYNC_ROLES)

        report = await run_fault_drill(PgReplicaLoss(), target, duration=4, buyers=4)
        print(render(report))

        assert_clean(report)
        assert report["facts"]["victim"] == sync and report["facts"]["rejoined"], report["facts"]


def render_pre_promote(tmp_path, port: int, user: str, password: str, slots: list[str]):
    from deploy.ops.stack import conf
    from deploy.ops.stack.postgres import _bindir

    passfile, script = tmp_path / "pgpass", tmp_path / "pre-promote.sh"
    conf.write(passfile, f"127.0.0.1:{port}:*:{user}:{password}\n")
    conf.write(script, conf.render("patroni-pre-promote.sh", PGPASSFILE=passfile, PSQL=_bindir() / "psql",
                                   PG_PORT=port, SUPERUSER=user, SLOTS=",".join(f"'{s}'" for s in slots)),
               mode=0o700)
    return script


async def test_the_pre_promote_hook_creates_the_standbys_slots_and_never_blocks_a_promotion(tmp_path):
    """The hook Patroni runs before promoting: the other members' physical slots exist afterwards (so standbys
    stream from the new primary at once), an existing one is kept, and a failure still exits 0 (a non-zero exit
    would make Patroni give up the leader lock)."""
    from urllib.parse import urlsplit

    dsn = urlsplit(stack_env()["TICKETFLOW_PG_DSN"])
    slots = [f"tf_hook_{uuid.uuid4().hex[:8]}_{i}" for i in range(2)]
    admin = await asyncpg.connect(stack_env()["TICKETFLOW_PG_DSN"])
    try:
        await admin.execute("SELECT pg_create_physical_replication_slot($1)", slots[0])  # already there: kept
        script = render_pre_promote(tmp_path, dsn.port, dsn.username, dsn.password, slots)
        done = subprocess.run(["/bin/sh", str(script)], capture_output=True, timeout=10)
        assert done.returncode == 0, done
        found = await admin.fetch("SELECT slot_name, slot_type FROM pg_replication_slots "
                                  "WHERE slot_name = ANY($1::text[])", slots)
        assert sorted((r["slot_name"], r["slot_type"]) for r in found) == sorted((s, "physical") for s in slots)

        unreachable = render_pre_promote(tmp_path / "down", free_port(), dsn.username, dsn.password, ["x"])
        assert subprocess.run(["/bin/sh", str(unreachable)], timeout=10).returncode == 0
    finally:
        for slot in slots:
            await admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                "WHERE slot_name = $1", slot)
        await admin.close()


LAUNCHER_CHECK = r"""
import runpy, sys, types
launcher = runpy.run_path(sys.argv[1])  # not __main__: defines patch() and main() without starting Patroni
assert launcher["patch"]() is None, "the launcher did not patch this Patroni"
from patroni import ha, postgresql
assert postgresql.STOP_POLLING_INTERVAL == 0.1, postgresql.STOP_POLLING_INTERVAL


class Dcs:
    def __init__(self, leader_after):
        self.polls, self.leader_after = 0, leader_after

    def get_cluster(self):
        self.polls += 1
        return types.SimpleNamespace(leader="pg1" if self.polls >= self.leader_after else None)


def not_the_candidate(dcs):
    # The path of a standby that is not a manual switchover's candidate and finds no leader key.
    node = types.SimpleNamespace(
        dcs=dcs, cluster=types.SimpleNamespace(failover=True), patroni=types.SimpleNamespace(nofailover=False),
        _rewind=types.SimpleNamespace(trigger_check_diverged_lsn=lambda: None),
        is_healthiest_node=lambda: False, follow=lambda demoted, following: following)
    return ha.Ha.process_unhealthy_cluster(node)


soon = Dcs(leader_after=3)
assert not_the_candidate(soon) == "following a different leader because i am not the healthiest node"
never = Dcs(leader_after=10**6)
not_the_candidate(never)
print(soon.polls, never.polls)
"""


def test_the_patroni_launcher_polls_the_shutdown_often_and_follows_as_soon_as_a_leader_is_named(tmp_path):
    """deploy/conf/patroni-launch.py under the Patroni the stack runs: the stop poll is 0.1 s, and a standby that
    is not a switchover's candidate stops waiting for a new leader the moment the DCS names one (three polls
    here), but still waits Patroni's full 2 s (about 40 polls of 0.05 s) while none is named."""
    from deploy.ops.stack import conf
    from deploy.ops.stack.patroni import PYTHON

    done = subprocess.run([PYTHON, "-c", LAUNCHER_CHECK, str(conf.CONF_DIR / "patroni-launch.py")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    soon, never = map(int, done.stdout.split())
    assert soon == 3, done.stdout
    assert never >= 20, done.stdout
