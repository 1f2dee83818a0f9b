"""Where the stack keeps its files and which loopback ports it uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploy.runtime.config import load, port, setting

CHECKOUT = Path(__file__).resolve().parents[3]  # deploy/ops/stack/settings.py -> the checkout


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class StackSettings:
    root: Path = setting("TICKETFLOW_STACK_DIR", CHECKOUT / ".stack", _path,
                         "data, logs, sockets and pid files of the stack's servers")
    pg_port: int = setting("TICKETFLOW_STACK_PG_PORT", 17432, port, "PostgreSQL")
    mariadb_port: int = setting("TICKETFLOW_STACK_MARIADB_PORT", 17306, port, "MariaDB")
    amqp_port: int = setting("TICKETFLOW_STACK_AMQP_PORT", 17672, port, "RabbitMQ AMQP")
    amqp_dist_port: int = setting("TICKETFLOW_STACK_AMQP_DIST_PORT", 17682, port,
                                  "RabbitMQ inter-node (Erlang distribution)")
    epmd_port: int = setting("TICKETFLOW_STACK_EPMD_PORT", 17369, port, "the stack's private epmd")
    ctl_port_min: int = setting("TICKETFLOW_STACK_CTL_PORT_MIN", 17690, port,
                                "first of ten ports for rabbitmqctl's own distribution")
    user: str = setting("TICKETFLOW_STACK_USER", "ticketflow", str, "user created on every server")
    password: str = setting("TICKETFLOW_STACK_PASSWORD", "ticketflow", str,
                            "its password (the servers listen on loopback only)")
    database: str = setting("TICKETFLOW_STACK_DATABASE", "ticketflow", str, "database created on PostgreSQL and MariaDB")


def stack_settings() -> StackSettings:
    return load(StackSettings)


def _rabbit_nodes(raw: str) -> int:
    nodes = int(raw)
    if nodes not in (0, 3):
        raise ValueError("3 (a RabbitMQ cluster) or 0 (the local topology's RabbitMQ)")
    return nodes


@dataclass(frozen=True)
class HASettings:
    """The HA topology's own directory and ports (node ``i`` of 3 uses ``base + i - 1``)."""

    root: Path | None = setting("TICKETFLOW_HA_STACK_DIR", None, _path,
                                "data, logs and pid files of the HA servers (default: <stack dir>/ha)")
    nodes: int = 3
    etcd_client_port: int = setting("TICKETFLOW_HA_ETCD_CLIENT_PORT", 17501, port, "etcd client, first node")
    etcd_peer_port: int = setting("TICKETFLOW_HA_ETCD_PEER_PORT", 17511, port, "etcd peer, first node")
    pg_port: int = setting("TICKETFLOW_HA_PG_PORT", 17521, port, "PostgreSQL under Patroni, first node")
    rest_port: int = setting("TICKETFLOW_HA_PATRONI_PORT", 17531, port, "Patroni REST API, first node")
    rw_port: int = setting("TICKETFLOW_HA_RW_PORT", 17540, port, "HAProxy: PostgreSQL primary (read-write)")
    ro_port: int = setting("TICKETFLOW_HA_RO_PORT", 17541, port, "HAProxy: PostgreSQL replicas (read-only)")
    stats_port: int = setting("TICKETFLOW_HA_STATS_PORT", 17549, port, "HAProxy statistics (HTML; CSV at /;csv)")
    galera: bool = setting("TICKETFLOW_HA_GALERA", True, lambda raw: _flag(raw),
                           "run MariaDB Galera x3 behind HAProxy's writer port (0: the local MariaDB instead)")
    galera_port: int = setting("TICKETFLOW_HA_GALERA_PORT", 17601, port, "Galera MariaDB, first node")
    galera_repl_port: int = setting("TICKETFLOW_HA_GALERA_REPL_PORT", 17611, port, "Galera replication, first node")
    galera_ist_port: int = setting("TICKETFLOW_HA_GALERA_IST_PORT", 17621, port, "Galera IST receiver, first node")
    galera_sst_port: int = setting("TICKETFLOW_HA_GALERA_SST_PORT", 17631, port, "Galera SST (rsync), first node")
    mariadb_writer_port: int = setting("TICKETFLOW_HA_MARIADB_WRITER_PORT", 17640, port,
                                       "HAProxy: the one Galera writer node")
    scope: str = setting("TICKETFLOW_HA_SCOPE", "ticketflow", str, "Patroni cluster name (etcd key prefix)")
    # name=public port:replica port,replica port;... -> one HTTP frontend per daemon with /ready checks
    frontends: str = setting("TICKETFLOW_HA_FRONTENDS", "", str,
                             "HTTP frontends, e.g. 'reservation=8083:18083,18093;billing=8084:18084,18094'")

    # RabbitMQ x3 (issue 12): 0 leaves the daemons on the local topology's single RabbitMQ.
    rabbit_nodes: int = setting("TICKETFLOW_HA_RABBITMQ_NODES", 3, _rabbit_nodes,
                                "RabbitMQ cluster nodes (3, or 0: use the local topology's RabbitMQ)")
    rabbit_amqp_port: int = setting("TICKETFLOW_HA_RABBITMQ_AMQP_PORT", 17701, port, "RabbitMQ AMQP, first node")
    rabbit_dist_port: int = setting("TICKETFLOW_HA_RABBITMQ_DIST_PORT", 17711, port,
                                    "RabbitMQ inter-node (Erlang distribution), first node")
    rabbit_epmd_port: int = setting("TICKETFLOW_HA_RABBITMQ_EPMD_PORT", 17720, port,
                                    "the RabbitMQ cluster's private epmd")
    rabbit_ctl_port_min: int = setting("TICKETFLOW_HA_RABBITMQ_CTL_PORT_MIN", 17740, port,
                                       "first of ten ports for rabbitmqctl's own distribution")

    def directory(self, stack: StackSettings) -> Path:
        return self.root if self.root is not None else stack.root / "ha"


def _flag(raw: str) -> bool:
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("want 1 or 0")


def ha_settings() -> HASettings:
    return load(HASettings)
