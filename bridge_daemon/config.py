"""Every setting of the bridge daemon, read once from ``TICKETFLOW_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.runtime.config import load, port, positive_float, secret, setting

DEV_LINK_SECRET = b"ticketflow-dev-link-secret-change-me"


@dataclass(frozen=True)
class Settings:
    http_host: str = setting("TICKETFLOW_BRIDGE_HOST", "127.0.0.1", str, "HTTP (health) listen address")
    http_port: int = setting("TICKETFLOW_BRIDGE_PORT", 8085, port, "HTTP port for /health and /ready")
    link_host: str = setting("TICKETFLOW_BRIDGE_LINK_LISTEN_HOST", "127.0.0.1", str,
                             "where the payments stream is received")
    link_port: int = setting("TICKETFLOW_BRIDGE_LINK_PORT", 7002, port, "port of the payments stream receiver")
    link_secret: bytes = setting("TICKETFLOW_LINK_SECRET", DEV_LINK_SECRET, secret,
                                 "shared secret of the links (at least 16 bytes)")
    amqp_url: str = setting("TICKETFLOW_AMQP_URL", "amqp://ticketflow:ticketflow@127.0.0.1:17672/", str,
                            "RabbitMQ URL")
    amqp_prefix: str = setting("TICKETFLOW_AMQP_PREFIX", "ticketflow", str,
                               "prefix of exchange and queue names (ticketflow.events, ...)")
    confirm_timeout: float = setting("TICKETFLOW_BRIDGE_CONFIRM_TIMEOUT_SECONDS", 10.0, positive_float,
                                     "how long to wait for RabbitMQ's confirms of a batch")
    instance: str = setting("TICKETFLOW_INSTANCE", "", str, "name of this replica (default host:port)")
    log_level: str = setting("TICKETFLOW_LOG_LEVEL", "info", str, "debug, info, warning or error")
