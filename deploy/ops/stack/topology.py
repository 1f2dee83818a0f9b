"""Topologies: which servers make up a stack, brought up and down together.

``local`` is one server of each kind. An HA topology (Patroni-managed
PostgreSQL with etcd and HAProxy, a Galera cluster, a RabbitMQ cluster) is a
longer server list with its own ``env`` (multi-host DSNs) — same launcher.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deploy.ops.stack import packages
from deploy.ops.stack.etcd import EtcdMember, cluster_members
from deploy.ops.stack.galera import GaleraCluster, GaleraNode
from deploy.ops.stack.haproxy import HAProxy
from deploy.ops.stack.keys import Keys
from deploy.ops.stack.mariadb import MariaDB
from deploy.ops.stack.patroni import PatroniNode, cluster
from deploy.ops.stack.postgres import Postgres
from deploy.ops.stack.rabbitmq import RabbitMQ
from deploy.ops.stack.rabbitmq_cluster import RabbitCluster
from deploy.ops.stack.server import Server, StackError
from deploy.ops.stack.settings import HASettings, StackSettings, ha_settings, stack_settings


@dataclass
class Topology:
    name: str
    servers: list[Server]
    keys: Keys | None = field(default=None)  # development token keys and service tokens

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers)

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(f"no server {name!r} in topology {self.name!r}")

    def install(self) -> list[str]:
        wanted: dict[str, list[str]] = {}
        for server in self.servers:
            wanted.update(server.packages)
        names = packages.missing(wanted)
        packages.install(names)
        return names

    def up(self) -> dict[str, str]:
        """Start every server at once (the slowest, RabbitMQ, sets the pace)."""
        self.install()
        with ThreadPoolExecutor(len(self.servers)) as pool:
            results = {s.name: pool.submit(s.up) for s in self.servers}
            states = {name: future.result() for name, future in results.items()}
        if self.keys is not None:
            states["keys"] = self.keys.ensure()
        return states

    def down(self) -> dict[str, bool]:
        with ThreadPoolExecutor(len(self.servers)) as pool:
            results = {s.name: pool.submit(s.stop) for s in self.servers}
            return {name: future.result() for name, future in results.items()}

    def status(self) -> dict[str, str]:
        with ThreadPoolExecutor(len(self.servers)) as pool:
            results = {s.name: pool.submit(s.status) for s in self.servers}
            return {name: future.result() for name, future in results.items()}

    def env(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for server in self.servers:
            merged.update(server.env())
        if self.keys is not None:
            merged.update(self.keys.env())
        return merged


def local(settings: StackSettings | None = None) -> Topology:
    settings = settings or stack_settings()
    return Topology("local", [Postgres(settings), MariaDB(settings), RabbitMQ(settings)], Keys(settings.root))


def _each(servers: list[Server], action: str) -> dict:
    with ThreadPoolExecutor(len(servers)) as pool:
        results = {s.name: pool.submit(getattr(s, action)) for s in servers}
        return {name: future.result() for name, future in results.items()}


@dataclass
class HATopology(Topology):
    """etcd x3, PostgreSQL x3 under Patroni, MariaDB Galera x3, HAProxy; RabbitMQ shared with ``local``.

    Its own servers live under their own directory (``<stack dir>/ha`` by default), so
    it runs beside the local topology. Until the RabbitMQ cluster exists (issue 12) the
    daemons' RabbitMQ is the local topology's (and so is MariaDB with
    ``TICKETFLOW_HA_GALERA=0``): ``up`` starts the local MariaDB and RabbitMQ if nothing
    answers on their ports, ``down`` leaves them running (the local topology may be
    serving), and ``ticketflow stop`` stops both.
    """

    etcd: list[EtcdMember] = field(default_factory=list)
    nodes: list[PatroniNode] = field(default_factory=list)
    proxy: HAProxy | None = None
    galera: GaleraCluster | None = None  # MariaDB Galera x3 behind HAProxy's writer port (TICKETFLOW_HA_GALERA)
    shared: list[Server] = field(default_factory=list)
    ready_timeout: float = 120.0
    rabbit: RabbitCluster | None = None  # RabbitMQ x3 (TICKETFLOW_HA_RABBITMQ_NODES=0: the shared local one)

    def up(self) -> dict[str, str]:
        self.install()
        states = {s.name: (s.up() if not s._probe_ok() else "already up (shared with the local topology)")
                  for s in self.shared}
        # Galera and the RabbitMQ cluster beside etcd and Patroni (they depend on neither); Galera's
        # writer is known once HAProxy runs.
        with ThreadPoolExecutor(2) as pool:
            galera = pool.submit(self.galera.up, self.galera.writer()) if self.galera else None
            rabbit = pool.submit(self.rabbit.up) if self.rabbit is not None else None
            # etcd before Patroni (it holds the leader lock), Patroni before HAProxy (its health checks).
            states.update(_each(list(self.etcd), "up"))
            states.update(_each(list(self.nodes), "up"))
            states[self.proxy.name] = self.proxy.up()
            states["cluster"] = self.wait_synchronous()
            if galera is not None:
                states.update(galera.result())
                states["galera writer"] = self.galera.wait_writer()
            if rabbit is not None:
                states.update(rabbit.result())
        asyncio.run(self._ensure_database())
        if self.keys is not None:
            states["keys"] = self.keys.ensure()
        return states

    def wait_synchronous(self) -> str:
        """Wait until Patroni reports a leader and a synchronous standby (strict mode: no writes before)."""
        deadline = time.monotonic() + self.ready_timeout
        roles: dict[str, str] = {}
        while time.monotonic() < deadline:
            roles = {m["name"]: m.get("role", "?") for m in cluster(self.nodes).get("members", [])}
            leaders = [n for n, r in roles.items() if r == "leader"]
            syncs = [n for n, r in roles.items() if r in ("sync_standby", "synchronous_standby")]
            if leaders and syncs:
                return f"leader {leaders[0]}, synchronous standby {', '.join(syncs)}"
            time.sleep(0.3)
        raise StackError(f"no leader with a synchronous standby within {self.ready_timeout:.0f}s (roles: {roles})")

    async def _ensure_database(self) -> None:
        import asyncpg

        proxy = self.proxy
        dsn = proxy.dsn(proxy.ha.rw_port, "postgres")
        deadline = time.monotonic() + 30
        last: object = None
        while time.monotonic() < deadline:  # HAProxy routes to the leader after its next check (1 s)
            try:
                conn = await asyncpg.connect(dsn, timeout=3)
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                last = exc
            else:
                try:
                    if await conn.fetchval("SELECT NOT pg_is_in_recovery()"):
                        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                                   proxy.settings.database):
                            await conn.execute(f'CREATE DATABASE "{proxy.settings.database}"')
                        return
                    last = "a replica answered"
                finally:
                    await conn.close()
            await asyncio.sleep(0.2)
        raise StackError(f"HAProxy's read-write port {proxy.ha.rw_port} reaches no primary ({last!r})")

    def down(self) -> dict[str, bool]:
        """HAProxy, then the replicas, then the leader (so no failover starts), then etcd; Galera beside them
        (the writer last, so it is the node safe to bootstrap from)."""
        writer = self.galera.writer() if self.galera else None
        with ThreadPoolExecutor(1) as pool:
            galera = pool.submit(self.galera.down, writer) if self.galera else None
            states = self._down_postgres()
            if galera is not None:
                states.update(galera.result())
        return {s.name: states[s.name] for s in self.servers}

    def _down_postgres(self) -> dict[str, bool]:
        states = {self.proxy.name: self.proxy.stop()}
        leaders = {m["name"] for m in cluster(self.nodes).get("members", []) if m.get("role") == "leader"}
        replicas = [n for n in self.nodes if n.name not in leaders]
        if replicas:
            states.update(_each(replicas, "stop"))
        for node in self.nodes:
            if node.name in leaders:
                states[node.name] = node.stop()
        # etcd followers before the leader: a stopping leader hands leadership to a live follower
        # first, and waits for that hand-over when the followers are stopping too (8 s seen).
        etcd_leaders = {e["name"] for e in cluster_members(self.etcd) if e.get("leader")}
        followers = [e for e in self.etcd if e.name not in etcd_leaders]
        if followers:
            states.update(_each(followers, "stop"))
        states.update({e.name: e.stop() for e in self.etcd if e.name in etcd_leaders})
        if self.rabbit is not None:
            states.update(self.rabbit.down())
        return states

    def status(self) -> dict[str, str]:
        return {**_each(self.shared, "status"), **_each(self.servers, "status")}

    def server(self, name: str) -> Server:
        for server in [*self.shared, *self.servers]:
            if server.name == name:
                return server
        raise KeyError(f"no server {name!r} in topology {self.name!r}")

    def env(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for server in [*self.shared, *self.servers]:
            merged.update(server.env())
        if self.galera is not None:  # billing's MariaDB: the Galera writer, through HAProxy
            merged.update(self.galera.env())
        if self.rabbit is not None:
            merged.update(self.rabbit.env())
        if self.keys is not None:
            merged.update(self.keys.env())
        return merged

    def report(self) -> dict:
        """PostgreSQL nodes (role, state, timeline, lag from Patroni's /cluster), etcd members, HAProxy backends."""
        pg = cluster(self.nodes)
        try:
            backends = self.proxy.backends()
        except OSError as exc:
            backends = [{"error": f"HAProxy stats unreachable: {exc}"}]
        galera = {"galera": self.galera.report()} if self.galera else {}
        return {
            **galera,
            "postgres": [{"name": m.get("name"), "role": m.get("role"), "state": m.get("state"),
                          "timeline": m.get("timeline"), "lag_bytes": m.get("lag", 0 if m.get("role") == "leader" else None),
                          "host": f"{m.get('host')}:{m.get('port')}"} for m in pg.get("members", [])]
            + ([{"error": pg["error"]}] if "error" in pg else []),
            "etcd": cluster_members(self.etcd),
            "haproxy": backends,
            **({"rabbitmq": self.rabbit.report()} if self.rabbit is not None else {}),
        }


def ha(settings: StackSettings | None = None, ha_config: HASettings | None = None) -> HATopology:
    settings = settings or stack_settings()
    ha_config = ha_config or ha_settings()
    own = dataclasses.replace(settings, root=ha_config.directory(settings))
    etcd = [EtcdMember(own, ha_config, i) for i in range(1, ha_config.nodes + 1)]
    nodes = [PatroniNode(own, ha_config, i) for i in range(1, ha_config.nodes + 1)]
    proxy = HAProxy(own, ha_config)
    galera_nodes = [GaleraNode(own, ha_config, i) for i in range(1, ha_config.nodes + 1)] if ha_config.galera else []
    galera = GaleraCluster(galera_nodes, ha_config, own) if galera_nodes else None
    rabbit = RabbitCluster(own, ha_config) if ha_config.rabbit_nodes else None
    # The local MariaDB and RabbitMQ stay shared servers beside Galera and the RabbitMQ cluster: what an
    # operator's explicit TICKETFLOW_MARIADB_DSN / TICKETFLOW_AMQP_URL (or a test's fresh database) may
    # point at; env() names the Galera writer and the cluster's nodes.
    return HATopology("ha", [*etcd, *nodes, *galera_nodes, proxy, *(rabbit.nodes if rabbit else [])],
                      Keys(settings.root), etcd=etcd, nodes=nodes, proxy=proxy, galera=galera, rabbit=rabbit,
                      shared=[MariaDB(settings), RabbitMQ(settings)])


def report_problems(report: dict) -> list[str]:
    """What keeps a ``report()`` from a healthy HA cluster (empty: a leader, a sync standby, etcd quorum, rw routed)."""
    roles = [m.get("role") for m in report["postgres"]]
    problems = [m["error"] for m in report["postgres"] if "error" in m]
    if roles.count("leader") != 1:
        problems.append(f"{roles.count('leader')} PostgreSQL leaders")
    if not any(r in ("sync_standby", "synchronous_standby") for r in roles):
        problems.append("no synchronous standby: writes block (strict synchronous mode)")
    unhealthy = [e["name"] for e in report["etcd"] if not e["healthy"]]
    if len(unhealthy) * 2 >= len(report["etcd"]):
        problems.append(f"etcd has no quorum ({', '.join(unhealthy)} unhealthy)")
    elif unhealthy:
        problems.append(f"etcd members unhealthy: {', '.join(unhealthy)}")
    rw_up = [b["server"] for b in report["haproxy"] if b.get("proxy") == "postgres_rw" and b.get("status") == "UP"]
    if len(rw_up) != 1:
        problems.append(f"HAProxy's read-write port routes to {len(rw_up)} nodes")
    rabbit = report.get("rabbitmq")
    if rabbit is not None:
        down = [n["name"] for n in rabbit["nodes"] if not n["running"]]
        if down:
            problems.append(f"RabbitMQ nodes not running in the cluster: {', '.join(down)}")
        problems += [f"quorum queue {q['name']} has no leader" for q in rabbit["quorum_queues"] if not q["leader"]]
    return problems + galera_problems(report.get("galera"))


def galera_problems(galera: dict | None) -> list[str]:
    """What keeps the Galera part of a report from healthy: every node Synced in a Primary component of all, a writer."""
    if galera is None:
        return []
    problems = [f"galera {n['name']}: {n['error']}" for n in galera["nodes"] if "error" in n]
    up = [n for n in galera["nodes"] if "error" not in n]
    problems += [f"galera {n['name']} is {n['state']} ({n['cluster_status']})" for n in up
                 if n["local_state"] != 4 or n["cluster_status"] != "Primary"]
    problems += [f"galera {n['name']} sees a cluster of {n['cluster_size']} of {len(galera['nodes'])}"
                 for n in up if n["cluster_size"] != len(galera["nodes"])]
    if galera["writer"] is None:
        problems.append("HAProxy's MariaDB writer port reaches no Galera node: billing writes fail")
    return problems


def format_report(report: dict) -> str:
    """``report()`` as the lines ``ticketflow stack status --topology ha`` prints."""
    lines = ["postgres (Patroni):"]
    for m in report["postgres"]:
        if "error" in m:
            lines.append(f"  {m['error']}")
            continue
        lag = m["lag_bytes"]
        lines.append(f"  {m['name']:<6} {m['role'] or '?':<13} {m['state'] or '?':<10} timeline {m['timeline']}"
                     f"  lag {lag if lag is not None else '-'}{' bytes' if isinstance(lag, int) else ''}  {m['host']}")
    lines.append("etcd:")
    for e in report["etcd"]:
        state = ("healthy" if e["healthy"] else "UNHEALTHY") + (" leader" if e.get("leader") else "")
        extra = e.get("error") or ("" if e.get("in_member_list") else "not in the member list")
        lines.append(f"  {e['name']:<6} {state:<16} {e['client_url']}  {extra}".rstrip())
    if "galera" in report:
        lines.append(f"mariadb (Galera), writer {report['galera']['writer'] or 'NONE'}:")
        for n in report["galera"]["nodes"]:
            lines.append(f"  {n['name']:<8} " + (n["error"] if "error" in n else
                         f"{n['state']:<8} cluster {n['cluster_status']} size {n['cluster_size']}  127.0.0.1:{n['port']}"))
    lines.append("haproxy backends:")
    for b in report["haproxy"]:
        if "error" in b:
            lines.append(f"  {b['error']}")
            continue
        lines.append(f"  {b['proxy'] + '/' + b['server']:<20} {b['status']:<6} {b['check']}  sessions {b['sessions']}")
    if "rabbitmq" in report:
        lines += format_rabbit(report["rabbitmq"])
    return "\n".join(lines)


def format_rabbit(rabbit: dict) -> list[str]:
    lines = ["rabbitmq cluster:"]
    for n in rabbit["nodes"]:
        lines.append(f"  {n['name']:<8} {'running' if n['running'] else 'DOWN':<8} {n['node']}  port {n['port']}")
    lines.append("quorum queues (leader, members online):")
    if not rabbit["quorum_queues"]:
        lines.append("  none declared yet (the bridge and the portal declare theirs)")
    for q in rabbit["quorum_queues"]:
        lines.append(f"  {q['name']:<40} leader {q['leader'] or 'NONE'}  {len(q['online'])}/{len(q['members'])}")
    return lines


TOPOLOGIES = {"local": local, "ha": ha}
