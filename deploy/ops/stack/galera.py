"""MariaDB Galera x3 (Debian ``galera-4`` + ``mariadb-server``'s mariadbd), plain processes run as ``mysql``.

Each node reads only its own rendered ``deploy/conf/galera.cnf`` (``--defaults-file``: nothing from
/etc/mysql, also not in the SST script, which reads the same file). HAProxy sends all writes to one node
at a time (``deploy/conf/galera-haproxy.cfg``, checked by ``galera-check.sh``).

Starting (``GaleraCluster.up``):
- a node of a running Primary component exists: every other node joins it;
- otherwise the cluster is bootstrapped (``--wsrep-new-cluster``) from the node whose ``grastate.dat``
  says ``safe_to_bootstrap: 1`` (the last one stopped), or, after a crash of all of them, the one with the
  highest recovered position (marked safe first); from nothing, node 1 (the only one initialised: the
  others receive everything by SST).
A node that was killed (``seqno: -1``) first runs ``--wsrep-recover`` and starts with
``--wsrep_start_position`` so it rejoins by IST (only the missing write sets); without a position it gets
a full SST by rsync, from a donor that is not the writer when there is one.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiomysql

from deploy.ops.stack import conf
from deploy.ops.stack.server import Server, StackError, ensure_system_user, which
from deploy.ops.stack.settings import HASettings, StackSettings

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
HOST = "127.0.0.1"
SYNCED = 4  # wsrep_local_state
_RECOVERED = re.compile(r"Recovered position:?\s+([0-9a-f-]{36}:-?\d+)")


class GaleraNode(Server):
    packages = {
        "galera-4": [PROVIDER],
        "mariadb-server": ["/usr/sbin/mariadbd"],
        "mariadb-client": ["/usr/bin/mariadb"],
        "rsync": ["/usr/bin/rsync"],  # SST
    }
    run_as = "mysql"

    def __init__(self, settings: StackSettings, ha: HASettings, index: int) -> None:
        self.name = f"galera{index}"
        super().__init__(settings)
        self.ha = ha
        self.index = index
        self.port = ha.galera_port + index - 1
        self.bootstrap = False  # set by GaleraCluster.up: start a new cluster from this node
        self.donors: list[str] = []  # preferred SST donors (nodes that are not the writer)

    @property
    def data(self) -> Path:
        return self.private_dir("data")

    @property
    def run_dir(self) -> Path:
        return self.private_dir("run")

    @property
    def cnf(self) -> Path:
        return self.run_dir / "galera.cnf"

    @property
    def grastate(self) -> Path:
        return self.data / "grastate.dat"

    def initialized(self) -> bool:
        return (self.data / "mysql").is_dir()

    def initialize(self) -> None:
        """Only a bootstrapping node needs system tables: a joiner receives the whole data directory by SST."""
        ensure_system_user("mysql")
        if self.bootstrap:
            self.run_setup([which("mariadb-install-db", "mysql_install_db"), "--no-defaults",
                            f"--datadir={self.data}", "--auth-root-authentication-method=socket", "--skip-test-db"])

    def render(self) -> None:
        h = self.ha
        peers = ",".join(f"{HOST}:{h.galera_repl_port + i}" for i in range(h.nodes))
        conf.write(self.cnf, conf.render(
            "galera.cnf", DATADIR=self.data, SOCKET=self.run_dir / "mariadb.sock", HOST=HOST, BIND_HOST=HOST, PORT=self.port,
            PROVIDER=PROVIDER, CLUSTER=f"{h.scope}-galera", PEERS=peers, NAME=self.name,
            REPL_PORT=h.galera_repl_port + self.index - 1, IST_PORT=h.galera_ist_port + self.index - 1,
            SST_PORT=h.galera_sst_port + self.index - 1), mode=0o600, owner="mysql")

    def state(self) -> dict[str, str]:
        """``grastate.dat`` as a dict (uuid, seqno, safe_to_bootstrap); empty if there is none."""
        try:
            text = self.grastate.read_text()
        except OSError:
            return {}
        return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())
                if v and not k.startswith("#")}

    def mark_safe_to_bootstrap(self) -> None:
        text = self.grastate.read_text()
        self.grastate.write_text(re.sub(r"safe_to_bootstrap:\s*\d", "safe_to_bootstrap: 1", text))

    def recover(self) -> str | None:
        """``uuid:seqno`` InnoDB has committed (``mariadbd --wsrep-recover``), for a node stopped uncleanly."""
        self.render()
        log = self.run_dir / "recover.log"
        result = subprocess.run([which("/usr/sbin/mariadbd", "mariadbd"), f"--defaults-file={self.cnf}",
                                 "--wsrep-recover", f"--log-error={log}"],
                                capture_output=True, text=True, user=self.run_as, cwd="/", timeout=120, check=False)
        try:
            text = log.read_text(errors="replace")
        except OSError:
            text = result.stderr
        found = _RECOVERED.findall(text)
        return found[-1] if found and not found[-1].endswith(":-1") else None

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        s = self.settings
        self.render()
        argv = [which("/usr/sbin/mariadbd", "mariadbd"), f"--defaults-file={self.cnf}"]
        if self.bootstrap:
            init = self.run_dir / "init.sql"
            init.write_text(
                f"CREATE USER IF NOT EXISTS '{s.user}'@'{HOST}' IDENTIFIED BY '{s.password}';\n"
                f"GRANT ALL PRIVILEGES ON *.* TO '{s.user}'@'{HOST}' WITH GRANT OPTION;\n"
                f"CREATE DATABASE IF NOT EXISTS `{s.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n")
            argv += ["--wsrep-new-cluster", f"--init-file={init}"]
        elif self.state().get("seqno") == "-1" and self.initialized():
            # Killed: without a start position the node would ask for a full SST.
            position = self.recover()
            if position:
                argv.append(f"--wsrep_start_position={position}")
        if self.donors:
            argv.append(f"--wsrep-sst-donor={','.join(self.donors)},")  # trailing comma: any other if none of these
        return argv, None

    async def wsrep(self) -> dict[str, str]:
        """This node's wsrep status variables (state, cluster size and status, ...)."""
        s = self.settings
        conn = await aiomysql.connect(host=HOST, port=self.port, user=s.user, password=s.password,
                                      connect_timeout=2)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_%'")
                return {k: v for k, v in await cur.fetchall()}
        finally:
            conn.close()

    async def reset_quorum(self) -> None:
        """Galera's documented quorum reset: this running but non-primary node (the most advanced survivor)
        becomes a primary component by itself; survivors still in its group join it, the stopped nodes rejoin
        it by IST. Never a new cluster beside them: that would fork the data."""
        s = self.settings
        conn = await aiomysql.connect(host=HOST, port=self.port, user=s.user, password=s.password,
                                      connect_timeout=2)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'")
        finally:
            conn.close()

    def last_committed(self) -> int:
        """The last write set this running node committed (-1 if it does not answer)."""
        try:
            return int(asyncio.run(asyncio.wait_for(self.wsrep(), 5)).get("wsrep_last_committed", -1))
        except Exception:  # noqa: BLE001 -- a node that cannot say is not a candidate
            return -1

    async def probe(self) -> None:
        status = await self.wsrep()
        if status.get("wsrep_local_state") != str(SYNCED) or status.get("wsrep_cluster_status") != "Primary":
            raise StackError(f"{self.name} is {status.get('wsrep_local_state_comment')} "
                             f"({status.get('wsrep_cluster_status')})")

    def dsn(self, database: str | None = None) -> str:
        s = self.settings
        return f"mysql://{s.user}:{s.password}@{HOST}:{self.port}/{database or s.database}"

    def env(self) -> dict[str, str]:
        return {}

    def report(self) -> dict:
        try:
            status = asyncio.run(asyncio.wait_for(self.wsrep(), 3))
        except Exception as exc:  # a dead or starting node: say so
            return {"name": self.name, "port": self.port, "error": f"{type(exc).__name__}: {exc}"}
        return {"name": self.name, "port": self.port, "state": status.get("wsrep_local_state_comment"),
                "local_state": int(status.get("wsrep_local_state", 0)),
                "cluster_size": int(status.get("wsrep_cluster_size", 0)),
                "cluster_status": status.get("wsrep_cluster_status")}


class GaleraCluster:
    """Brings the three nodes up in a safe order and finds the writer HAProxy uses."""

    def __init__(self, nodes: list[GaleraNode], ha: HASettings, settings: StackSettings) -> None:
        self.nodes = nodes
        self.ha = ha
        self.settings = settings

    def up(self, writer: str | None = None) -> dict[str, str]:
        states: dict[str, str] = {}
        running = [n for n in self.nodes if n.running() and n._probe_ok()]
        survivors = [n for n in self.nodes if n.running()]
        if not running and survivors:
            # Nodes still run but none is Primary (the others were lost at once, or a partition under load):
            # restore the primary component on the most advanced survivor rather than bootstrap a stopped
            # node, which would start a second cluster with a new history.
            positions = {n.name: n.last_committed() for n in survivors}
            best = max(survivors, key=lambda n: positions[n.name])
            if positions[best.name] < 0:
                raise StackError(f"Galera nodes {', '.join(n.name for n in survivors)} run but none answers; "
                                 "stop them (or find the most advanced by hand) before starting the cluster")
            asyncio.run(best.reset_quorum())
            best.wait_ready()
            states[best.name] = f"primary component restored (pc.bootstrap at seqno {positions[best.name]})"
            for node in survivors:
                if node is not best:
                    node.wait_ready()
                    states[node.name] = "rejoined the restored primary component"
            running = survivors
        if not running:
            first = self._bootstrap_node()
            first.bootstrap = True
            try:
                states[first.name] = first.up()
            finally:
                first.bootstrap = False
            running = [first]
        others = [n for n in self.nodes if n not in running]
        for node in others:
            node.donors = [n.name for n in self.nodes if n is not node and n.name != writer]
        if others:  # joiners one after the other: a donor serves one SST at a time
            for node in others:
                states[node.name] = node.up()
        return states

    def _bootstrap_node(self) -> GaleraNode:
        initialized = [n for n in self.nodes if n.initialized()]
        if not initialized:
            return self.nodes[0]
        for node in initialized:
            if node.state().get("safe_to_bootstrap") == "1":
                return node
        # Every node stopped uncleanly: the most advanced recovered position starts the new cluster.
        positions = {}
        for node in initialized:
            position = node.recover() or f"{node.state().get('uuid', '')}:{node.state().get('seqno', '-1')}"
            positions[node.name] = int(position.rsplit(":", 1)[1])
        best = max(initialized, key=lambda n: positions[n.name])
        best.mark_safe_to_bootstrap()
        return best

    def stop_order(self, writer: str | None) -> list[list[GaleraNode]]:
        """Non-writers together, then the writer last (its grastate then says safe_to_bootstrap: 1)."""
        last = [n for n in self.nodes if n.name == writer] or self.nodes[:1]
        return [[n for n in self.nodes if n not in last], last]

    def down(self, writer: str | None) -> dict[str, bool]:
        states: dict[str, bool] = {}
        for group in self.stop_order(writer):
            # One at a time: each leaves the cluster cleanly before the next.
            for node in group:
                states[node.name] = node.stop()
        return states

    def writer(self) -> str | None:
        """The node HAProxy's writer port sends to right now (asked through that port)."""
        s = self.settings

        async def ask() -> str:
            conn = await aiomysql.connect(host=HOST, port=self.ha.mariadb_writer_port, user=s.user,
                                          password=s.password, connect_timeout=2)
            try:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT @@wsrep_node_name")
                    return (await cur.fetchone())[0]
            finally:
                conn.close()

        try:
            return asyncio.run(asyncio.wait_for(ask(), 3))
        except Exception:
            return None

    def wait_writer(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.writer()
            if name:
                return name
            time.sleep(0.2)
        raise StackError(f"HAProxy's MariaDB writer port {self.ha.mariadb_writer_port} reaches no Galera node")

    def report(self) -> dict:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            nodes = list(pool.map(GaleraNode.report, self.nodes))
        return {"nodes": nodes, "writer": self.writer()}

    def dsn(self, database: str | None = None) -> str:
        s = self.settings
        return f"mysql://{s.user}:{s.password}@{HOST}:{self.ha.mariadb_writer_port}/{database or s.database}"

    def env(self) -> dict[str, str]:
        return {"TICKETFLOW_MARIADB_DSN": self.dsn()}


def client_cnf(settings: StackSettings) -> str:
    """The HAProxy check's client options (the stack's user; HAProxy runs as the stack's owner)."""
    return f"[client]\nuser={settings.user}\npassword={settings.password}\n"
