"""HAProxy in front of the HA topology: PostgreSQL read-write / read-only ports, daemon frontends.

The read-write port sends connections to the one node whose Patroni answers
``OPTIONS /primary`` with 200, the read-only port to the replicas. Config from
``deploy/conf/haproxy.cfg``; each entry of ``TICKETFLOW_HA_FRONTENDS`` adds an
HTTP frontend from ``deploy/conf/haproxy-frontend.cfg`` (a daemon's public port
before its replicas, checked on ``/ready``). Backend states come from the stats
page's CSV.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import urllib.request
from pathlib import Path

from deploy.ops.stack import conf
from deploy.ops.stack.server import Server, StackError
from deploy.ops.stack.settings import HASettings, StackSettings

HAPROXY = "/usr/sbin/haproxy"
LOOPBACK = "127.0.0.1"  # every bind of the local stack (a container binds 0.0.0.0: deploy/docker/haproxy.sh)


def parse_frontends(spec: str) -> list[tuple[str, int, list[int]]]:
    """``'reservation=8083:18083,18093;billing=8084:18084'`` -> [(name, public port, replica ports)]."""
    frontends = []
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        try:
            name, _, ports = entry.partition("=")
            public, _, replicas = ports.partition(":")
            frontends.append((name.strip(), int(public), [int(p) for p in replicas.split(",") if p.strip()]))
        except ValueError:
            raise StackError(f"bad TICKETFLOW_HA_FRONTENDS entry {entry!r}: want name=port:replica,replica") from None
        if not name.strip() or not frontends[-1][2]:
            raise StackError(f"bad TICKETFLOW_HA_FRONTENDS entry {entry!r}: want name=port:replica,replica")
    return frontends


def galera_section(ha: HASettings, check_script: Path) -> str:
    """The MariaDB writer frontend before the Galera nodes (empty when the topology runs no Galera)."""
    if not ha.galera:
        return ""
    servers = "\n".join(f"    server galera{i} 127.0.0.1:{ha.galera_port + i - 1} check"
                        for i in range(1, ha.nodes + 1))
    return conf.render("galera-haproxy.cfg", BIND_HOST=LOOPBACK, WRITER_PORT=ha.mariadb_writer_port, CHECK_SCRIPT=check_script,
                       SERVERS=servers)


def render(ha: HASettings, directory: Path | None = None) -> str:
    pg_nodes = range(1, ha.nodes + 1)

    def pg_servers() -> str:
        return "\n".join(f"    server pg{i} 127.0.0.1:{ha.pg_port + i - 1} check port {ha.rest_port + i - 1}"
                         for i in pg_nodes)

    frontends = "".join(
        conf.render("haproxy-frontend.cfg", BIND_HOST=LOOPBACK, NAME=name, PORT=public, SERVERS="\n".join(
            f"    server {name}{n} 127.0.0.1:{port} check" for n, port in enumerate(replicas, 1)))
        for name, public, replicas in parse_frontends(ha.frontends))
    return conf.render("haproxy.cfg", BIND_HOST=LOOPBACK, STATS_PORT=ha.stats_port, RW_PORT=ha.rw_port, RO_PORT=ha.ro_port,
                       PG_RW_SERVERS=pg_servers(), PG_RO_SERVERS=pg_servers(),
                       HTTP_FRONTENDS=frontends + galera_section(ha, (directory or Path(".")) / "galera-check.sh"))


def stats(port: int, timeout: float = 2.0) -> list[dict[str, str]]:
    """The stats page's CSV: one row per frontend, server and backend."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/;csv", timeout=timeout) as response:
        text = response.read().decode()
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


class HAProxy(Server):
    name = "haproxy"
    packages = {"haproxy": [HAPROXY]}

    def __init__(self, settings: StackSettings, ha: HASettings) -> None:
        super().__init__(settings)
        self.ha = ha
        self.config = self.dir / "haproxy.cfg"

    def initialized(self) -> bool:
        return self.config.exists()

    def initialize(self) -> None:
        self.render()

    def render(self) -> None:
        if self.ha.galera:  # the writer port's external check and the credentials it logs in with
            from deploy.ops.stack.galera import client_cnf

            cnf = self.dir / "galera-client.cnf"
            conf.write(cnf, client_cnf(self.settings))
            conf.write(self.dir / "galera-check.sh", (conf.CONF_DIR / "galera-check.sh").read_text(), mode=0o700)
        conf.write(self.config, render(self.ha, self.dir))
        self.run_setup([HAPROXY, "-c", "-q", "-f", str(self.config)])

    def serve_frontends(self, frontends: str) -> str:
        """Serve these daemon frontends (``TICKETFLOW_HA_FRONTENDS`` syntax); restart only if the config changes.

        ``run all --topology ha`` calls it before starting the replicas: HAProxy's PostgreSQL
        sessions are cut by the restart, which no daemon of that run has opened yet.
        """
        self.ha = dataclasses.replace(self.ha, frontends=frontends)
        wanted = render(self.ha, self.dir)
        if self.running() and self.config.exists() and self.config.read_text() == wanted:
            return "frontends already served"
        if not self.running():
            raise StackError("HAProxy is not running: start the HA stack first (ticketflow stack up --topology ha)")
        self.stop()
        self.up()
        names = ", ".join(f"{name} :{public} -> {','.join(map(str, ports))}"
                          for name, public, ports in parse_frontends(frontends))
        return f"restarted with frontends {names}"

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        self.render()
        return [HAPROXY, "-db", "-f", str(self.config)], None

    async def probe(self) -> None:
        await asyncio.to_thread(stats, self.ha.stats_port)

    def dsn(self, port: int, database: str | None = None) -> str:
        s = self.settings
        return f"postgresql://{s.user}:{s.password}@127.0.0.1:{port}/{database or s.database}"

    def env(self) -> dict[str, str]:
        return {"TICKETFLOW_PG_DSN": self.dsn(self.ha.rw_port),
                "TICKETFLOW_PG_REPLICA_DSN": self.dsn(self.ha.ro_port)}

    def backends(self) -> list[dict[str, str]]:
        """Each backend server's state: proxy, server, status (UP/DOWN/...), last check, current sessions."""
        return [{"proxy": row["pxname"], "server": row["svname"], "status": row["status"],
                 "check": row.get("check_status", ""), "sessions": row.get("scur", "")}
                for row in stats(self.ha.stats_port) if row["svname"] not in ("FRONTEND", "BACKEND")
                and row["pxname"] != "stats"]
