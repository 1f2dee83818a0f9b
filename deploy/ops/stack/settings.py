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
