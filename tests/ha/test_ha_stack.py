"""`ticketflow stack up|status|down --topology ha` end to end on the fixed HA ports, a private directory.

One HA stack at a time (the ports are fixed); MariaDB is the stack's own Galera cluster, RabbitMQ the
shared local stack's, which this test must find running and leave running.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time

import asyncpg
import pytest

from deploy.ops.stack.settings import HASettings
from deploy.ops.stack.topology import ha, report_problems

pytestmark = [pytest.mark.stack, pytest.mark.slow]

HA = HASettings()
HA_PORTS = [HA.rw_port, HA.ro_port, HA.stats_port, HA.mariadb_writer_port,
            *(base + i for base in (HA.etcd_client_port, HA.etcd_peer_port, HA.pg_port, HA.rest_port,
                                    HA.galera_port, HA.galera_repl_port, HA.rabbit_amqp_port,
                                    HA.rabbit_dist_port) for i in range(3))]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def ha_stack(tmp_path, monkeypatch):
    busy = [p for p in HA_PORTS if listening(p)]
    assert not busy, f"another HA stack (or something else) listens on the HA ports {busy}; stop it first"
    directory = tmp_path / "ha"
    monkeypatch.setenv("TICKETFLOW_HA_STACK_DIR", str(directory))
    env = dict(os.environ)

    def ticketflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.ops.cli", "stack", *args, "--topology", "ha"],
                              env=env, capture_output=True, text=True, timeout=300)

    yield ticketflow
    ticketflow("down")
    # When the test directory is not traversable by postgres, Patroni's data lives under
    # /var/lib/ticketflow (see Server.private_dir): remove it too.
    for link in directory.glob("*/private"):
        shutil.rmtree(link.resolve().parent, ignore_errors=True)


async def wait_for_row(dsn: str, deadline_s: float = 10.0) -> str:
    deadline = time.monotonic() + deadline_s
    while True:
        conn = await asyncpg.connect(dsn)
        try:
            if await conn.fetchval("SELECT to_regclass('marks') IS NOT NULL"):
                value = await conn.fetchval("SELECT v FROM marks")
                if value is not None:
                    return value
        finally:
            await conn.close()
        assert time.monotonic() < deadline, f"the row written through HAProxy never reached a replica ({dsn})"
        await asyncio.sleep(0.1)


async def write_through_rw(dsn: str, leader_port: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        assert not await conn.fetchval("SELECT pg_is_in_recovery()"), "the read-write port reached a replica"
        assert await conn.fetchval("SELECT inet_server_port()") == leader_port, "rw port is not on the leader"
        await conn.execute("CREATE TABLE marks (v text); INSERT INTO marks VALUES ('survived')")
    finally:
        await conn.close()


def test_ha_stack_comes_up_with_a_synchronous_standby_writes_and_keeps_data_across_down_up(ha_stack):
    started = time.monotonic()
    up = ha_stack("up")
    bootstrap = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    print(f"HA bootstrap from nothing: {bootstrap:.1f}s")
    # etcd x3, pg x3, galera x3, haproxy, rabbitmq x3
    assert up.stdout.count("initialised and started") == 13, up.stdout

    topology = ha()
    report = topology.report()
    assert report_problems(report) == [], report
    roles = sorted(m["role"] for m in report["postgres"])
    assert roles == ["leader", "replica", "sync_standby"], report["postgres"]
    leader = next(m for m in report["postgres"] if m["role"] == "leader")
    assert [e["healthy"] and e["in_member_list"] for e in report["etcd"]] == [True, True, True], report["etcd"]
    rw_up = [b["server"] for b in report["haproxy"] if b["proxy"] == "postgres_rw" and b["status"] == "UP"]
    assert rw_up == [leader["name"]], report["haproxy"]
    assert [(n["state"], n["cluster_size"]) for n in report["galera"]["nodes"]] == [("Synced", 3)] * 3, report

    status = ha_stack("status")
    assert status.returncode == 0 and "sync_standby" in status.stdout and "cluster healthy" in status.stdout, \
        status.stdout
    assert "mariadb (Galera), writer galera" in status.stdout and status.stdout.count("Synced   cluster Primary size 3") == 3, \
        status.stdout

    env = dict(line.split("=", 1) for line in ha_stack("env").stdout.splitlines())
    assert f":{HA.rw_port}/" in env["TICKETFLOW_PG_DSN"], env
    assert f":{HA.mariadb_writer_port}/" in env["TICKETFLOW_MARIADB_DSN"], env  # billing on the Galera writer
    assert {"TICKETFLOW_MARIADB_DSN", "TICKETFLOW_AMQP_URL", "TICKETFLOW_AMQP_URLS",
            "TICKETFLOW_TOKEN_PUBLIC_KEYS"} <= set(env)
    asyncio.run(write_through_rw(env["TICKETFLOW_PG_DSN"], int(leader["host"].rsplit(":", 1)[1])))
    assert asyncio.run(wait_for_row(env["TICKETFLOW_PG_REPLICA_DSN"])) == "survived"

    down = ha_stack("down")
    assert down.returncode == 0 and down.stdout.count("stopped") == 13, down.stdout
    assert [s for s in topology.servers if s.running()] == []
    assert [p for p in HA_PORTS if listening(p)] == [], "an HA server still listens after down"
    shared = {s.name: s.status() for s in topology.shared}
    assert all(state.startswith("up") for state in shared.values()), f"down stopped a shared server: {shared}"
    assert ha_stack("status").returncode == 3

    back = ha_stack("up")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "initialised" not in back.stdout, back.stdout
    assert report_problems(ha().report()) == []
    assert asyncio.run(wait_for_row(env["TICKETFLOW_PG_DSN"])) == "survived"
