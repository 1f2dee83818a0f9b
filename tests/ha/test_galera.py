"""MariaDB Galera x3 behind HAProxy's single-writer port, on private ports and a private directory.

Only the Galera nodes and HAProxy run here (no etcd or Patroni: their HAProxy sections point at private
ports nothing listens on). The second test SIGKILLs the writer under a write load.
The cluster is the `galera` fixture of tests/ha/conftest.py.
"""

from __future__ import annotations

import asyncio
import time

import aiomysql
import pytest

from deploy.ops.stack.galera import GaleraNode
from deploy.ops.stack.topology import HATopology, galera_problems

pytestmark = [pytest.mark.stack, pytest.mark.slow]


async def connect(port: int, topology: HATopology, **kwargs) -> aiomysql.Connection:
    s = topology.proxy.settings
    return await aiomysql.connect(host="127.0.0.1", port=port, user=s.user, password=s.password, db=s.database,
                                  autocommit=True, connect_timeout=2, **kwargs)


async def query(port: int, topology: HATopology, sql: str, *args) -> list[tuple]:
    conn = await connect(port, topology)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, args or None)
            return list(await cur.fetchall())
    finally:
        conn.close()


def node(topology: HATopology, name: str) -> GaleraNode:
    return next(n for n in topology.galera.nodes if n.name == name)


def writer_backends(topology: HATopology) -> dict[str, str]:
    return {b["server"]: b["status"] for b in topology.proxy.backends() if b["proxy"] == "mariadb_writer"}


def wait_until(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s"
        time.sleep(0.2)


def test_cluster_of_three_synced_one_writer_and_a_write_reaches_every_node(galera):
    report = galera.galera.report()
    assert galera_problems(report) == [], report
    assert [(n["state"], n["cluster_size"], n["cluster_status"]) for n in report["nodes"]] == \
        [("Synced", 3, "Primary")] * 3, report
    writer = report["writer"]
    port = galera.proxy.ha.mariadb_writer_port

    # The frontend sends every connection to the same single node.
    async def landings() -> set[str]:
        conns = [await connect(port, galera) for _ in range(8)]
        try:
            names = set()
            for conn in conns:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT @@wsrep_node_name")
                    names.add((await cur.fetchone())[0])
            return names
        finally:
            for conn in conns:
                conn.close()

    assert asyncio.run(landings()) == {writer}
    wait_until(lambda: list(writer_backends(galera).values()).count("UP") == 3, "all three nodes UP in HAProxy")

    asyncio.run(query(port, galera, "CREATE TABLE marks (id INT PRIMARY KEY, v VARCHAR(20))"))
    asyncio.run(query(port, galera, "INSERT INTO marks VALUES (1, 'everywhere')"))
    for n in galera.galera.nodes:  # wsrep_sync_wait=1: a read on any node sees the committed write
        assert asyncio.run(query(n.port, galera, "SELECT v FROM marks WHERE id = 1")) == [("everywhere",)], n.name


async def write_load(port: int, topology: HATopology, stop: asyncio.Event, acked: list[tuple[int, float]]) -> None:
    """Insert rows one by one through the writer port, reconnecting on failure; record each acknowledged one."""
    conn = None
    i = 0
    while not stop.is_set():
        try:
            if conn is None:
                conn = await connect(port, topology)
            i += 1
            async with conn.cursor() as cur:
                await cur.execute("INSERT INTO writes (id) VALUES (%s)", (i,))
            acked.append((i, time.monotonic()))
        except (aiomysql.Error, OSError, asyncio.TimeoutError):
            if conn is not None:
                conn.close()
                conn = None
            await asyncio.sleep(0.02)  # a retry's pacing, not synchronisation


def test_writer_kill_writes_continue_on_another_node_and_the_killed_node_rejoins_by_ist(galera):
    port = galera.proxy.ha.mariadb_writer_port
    asyncio.run(query(port, galera, "CREATE TABLE writes (id INT PRIMARY KEY)"))
    old = galera.galera.wait_writer()

    async def scenario() -> tuple[list[tuple[int, float]], float]:
        stop, acked = asyncio.Event(), []
        load = asyncio.create_task(write_load(port, galera, stop, acked))
        deadline = time.monotonic() + 30
        while len(acked) < 50:
            assert time.monotonic() < deadline and not load.done(), "the write load never got going"
            await asyncio.sleep(0.05)
        killed_at = time.monotonic()
        assert node(galera, old).kill()
        while not acked or acked[-1][1] < killed_at or len([a for a in acked if a[1] > killed_at]) < 50:
            assert time.monotonic() < killed_at + 30, "writes never continued after the writer was killed"
            await asyncio.sleep(0.05)
        stop.set()
        await load
        return acked, killed_at

    acked, killed_at = asyncio.run(scenario())
    before = max(t for _, t in acked if t <= killed_at)
    gap = min(t for _, t in acked if t > killed_at) - before
    print(f"Galera writer kill: write gap {gap:.2f}s, {len(acked)} rows acknowledged")
    new = galera.galera.wait_writer()
    assert new != old, "the writer port still reaches the killed node"

    # The killed node rejoins: --wsrep-recover gives its position, so it catches up by IST, not SST.
    log_size = node(galera, old).logfile.stat().st_size
    assert galera.galera.up(new) == {old: "started"}
    rejoin_log = node(galera, old).logfile.read_text(errors="replace")[log_size:]
    assert "--wsrep-recover" not in rejoin_log  # (the recovery run logs to its own file)
    assert "IST received" in rejoin_log or "Receiving IST" in rejoin_log, rejoin_log[-3000:]
    report = wait_until(lambda: (r := galera.galera.report()) and not galera_problems(r) and r,
                        "the cluster back to three Synced nodes")
    wait_until(lambda: writer_backends(galera).get(old) == "UP", f"HAProxy sees {old} UP again")
    assert galera.galera.writer() == new, "the writer flapped back to the rejoined node"

    ids = {i for i, _ in acked}
    for n in galera.galera.nodes:
        rows = {r[0] for r in asyncio.run(query(n.port, galera, "SELECT id FROM writes"))}
        assert ids <= rows, f"{n.name} lacks acknowledged rows {sorted(ids - rows)[:10]}"
    assert report["nodes"][0]["cluster_size"] == 3


def test_a_survivor_without_quorum_is_made_primary_again_never_a_second_cluster_from_a_stopped_node(galera):
    """Two nodes lost at once (or a partition under load) leave the third running but non-Primary. `up` must
    restore the primary component on that survivor (Galera's quorum reset, pc.bootstrap) and let the others
    rejoin it -- not bootstrap a stopped node into a new cluster beside it (seen in CI: the survivors were then
    refused, "Local state UUID ... is different from group state UUID", and their newest writes forked away)."""
    writer = galera.galera.wait_writer()
    port = galera.proxy.ha.mariadb_writer_port
    asyncio.run(query(port, galera, "CREATE TABLE IF NOT EXISTS quorum (id INT PRIMARY KEY)"))
    asyncio.run(query(port, galera, "INSERT INTO quorum VALUES (1)"))
    survivor = next(n for n in galera.galera.nodes if n.name != writer)
    history = asyncio.run(survivor.wsrep())["wsrep_cluster_state_uuid"]
    for victim in [n for n in galera.galera.nodes if n is not survivor]:
        assert victim.kill()
    wait_until(lambda: asyncio.run(survivor.wsrep()).get("wsrep_cluster_status") == "non-Primary",
               f"{survivor.name} non-Primary after losing both others")

    states = galera.galera.up(survivor.name)
    assert states[survivor.name].startswith("primary component restored"), states
    wait_until(lambda: (r := galera.galera.report()) and not galera_problems(r) and r,
               "the cluster back to three Synced nodes")
    for n in galera.galera.nodes:  # one history: the survivor's, with the row written before
        assert asyncio.run(n.wsrep())["wsrep_cluster_state_uuid"] == history, n.name
        assert asyncio.run(query(n.port, galera, "SELECT id FROM quorum")) == [(1,)], n.name
    galera.galera.wait_writer()
