"""One PostgreSQL node of the HA topology, run by Patroni (Debian ``patroni`` 3.0.x) as ``postgres``.

Patroni initialises the first node to take the leader lock in etcd and clones
the others from it; it starts, promotes and demotes PostgreSQL itself, so the
server process we record and stop is Patroni (SIGTERM: it stops PostgreSQL
and, on the leader, releases the lock). Its config is rendered from
``deploy/conf/patroni.yml`` into the node's private directory, beside the
pgpass file Patroni writes and PostgreSQL's own log (outside the data
directory, which pg_rewind overwrites).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from deploy.ops.stack import conf
from deploy.ops.stack.postgres import _bindir
from deploy.ops.stack.server import Server, ensure_system_user
from deploy.ops.stack.settings import HASettings, StackSettings

PATRONI = "/usr/bin/patroni"
PYTHON = "/usr/bin/python3"  # the interpreter of Debian's patroni package (/usr/bin/patroni's shebang)
REPLICATION_USER = "replicator"


def rest(port: int, path: str, method: str = "GET", timeout: float = 2.0) -> tuple[int, dict]:
    """Status and JSON body of a Patroni REST call (error statuses too: /health answers 503 with a body)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else {}
        except ValueError:
            return exc.code, {}


def _log_level() -> str:
    """Patroni's log level for this stack: WARNING, or TICKETFLOW_HA_PATRONI_LOG_LEVEL (DEBUG to see every step
    of a switchover), read when a node's config is rendered (at each start)."""
    level = os.environ.get("TICKETFLOW_HA_PATRONI_LOG_LEVEL", "WARNING").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"TICKETFLOW_HA_PATRONI_LOG_LEVEL={level!r}: want DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PatroniNode(Server):
    packages = {"patroni": [PATRONI]}
    run_as = "postgres"

    def __init__(self, settings: StackSettings, ha: HASettings, index: int) -> None:
        self.name = f"pg{index}"
        super().__init__(settings)
        self.ha = ha
        self.index = index
        self.pg_port = ha.pg_port + index - 1
        self.rest_port = ha.rest_port + index - 1

    @property
    def home(self) -> Path:
        return self.private_dir()

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def config(self) -> Path:
        return self.home / "patroni.yml"

    @property
    def launcher(self) -> Path:
        return self.home / "patroni-launch.py"

    @property
    def pre_promote(self) -> Path:
        return self.home / "pre-promote.sh"

    def initialized(self) -> bool:
        return self.config.exists()

    def initialize(self) -> None:
        ensure_system_user("postgres")
        self.render()

    def render(self) -> None:
        s, ha = self.settings, self.ha
        etcd_hosts = ",".join(f"127.0.0.1:{ha.etcd_client_port + i}" for i in range(ha.nodes))
        log_dir = self.private_dir("log")
        self.private_dir("data")  # 0700, owned by postgres: initdb and pg_basebackup accept it empty
        rendered = conf.render(
            "patroni.yml", SCOPE=ha.scope, NODE_NAME=self.name, REST_PORT=self.rest_port, ETCD_HOSTS=etcd_hosts,
            PG_PORT=self.pg_port, DATA_DIR=self.data, BIN_DIR=_bindir(), PGPASS=self.home / "pgpass",
            LOG_DIR=log_dir, SUPERUSER=s.user, SUPERUSER_PASSWORD=s.password,
            REPLICATION_USER=REPLICATION_USER, REPLICATION_PASSWORD=s.password,
            PRE_PROMOTE=self.pre_promote, HOST="127.0.0.1", LISTEN_HOST="127.0.0.1", CLIENT_CIDR="127.0.0.1/32",
        )
        if _log_level() in ("DEBUG", "INFO"):  # PostgreSQL's LOG lines too (streaming started, promote, ...)
            rendered = rendered.replace("log_min_messages: warning", "log_min_messages: log")
        conf.write(self.config, rendered, owner=self.run_as)
        self.render_pre_promote()
        # Patroni's main with two of 3.0.2's fixed sleeps in a planned switchover cut short (see the file).
        conf.write(self.launcher, (conf.CONF_DIR / "patroni-launch.py").read_text(), mode=0o644, owner=self.run_as)

    def render_pre_promote(self) -> None:
        """The pre_promote hook that creates the other members' replication slots before this node promotes
        (see deploy/conf/patroni-pre-promote.sh), with a pgpass of its own: Patroni rewrites its own."""
        s, ha = self.settings, self.ha
        passfile = self.home / "pre-promote.pgpass"
        conf.write(passfile, f"127.0.0.1:{self.pg_port}:*:{_pgpass_escape(s.user)}:{_pgpass_escape(s.password)}\n",
                   owner=self.run_as)
        # Patroni names each member's slot after the member (names here are pg1..pgN: valid slot names).
        slots = ",".join(f"'pg{i}'" for i in range(1, ha.nodes + 1) if i != self.index)
        conf.write(self.pre_promote, conf.render(
            "patroni-pre-promote.sh", PGPASSFILE=passfile, PSQL=Path(_bindir()) / "psql", PG_PORT=self.pg_port,
            SUPERUSER=s.user, SLOTS=slots,
        ), mode=0o700, owner=self.run_as)

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        self.render()  # settings may have changed since the first start; Patroni reads the file at start
        # No PG* variables of the operator's shell may steer Patroni's own connections.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PATRONI_"))}
        env["HOME"] = str(self.home)
        env["PATRONI_LOG_LEVEL"] = _log_level()  # overrides log.level of patroni.yml
        return [PYTHON, str(self.launcher), str(self.config)], env

    async def probe(self) -> None:
        # 200 once PostgreSQL runs on this node (a replica answers 503 until its clone is done).
        status, body = await asyncio.to_thread(rest, self.rest_port, "/health")
        if status != 200:
            raise RuntimeError(f"{self.name}: {body.get('state', status)}")

    def env(self) -> dict[str, str]:
        return {}


def cluster(nodes: list[PatroniNode]) -> dict:
    """Patroni's ``/cluster`` from the first node that answers: each member's role, state, timeline, lag."""
    last: Exception | None = None
    for node in nodes:
        try:
            status, body = rest(node.rest_port, "/cluster")
            if status == 200:
                return body
        except OSError as exc:
            last = exc
    return {"members": [], "error": f"no Patroni REST API answered ({last!r})"}
