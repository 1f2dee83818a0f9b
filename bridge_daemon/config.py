"""Every setting of the bridge daemon, read once from ``TICKETFLOW_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.runtime.amqp import amqp_urls_setting, url_list
from deploy.runtime.config import (ServiceSettings, LinkReceiverSettings, amqp_prefix_setting, amqp_url_setting, check_link_receiver,
                                   port, positive_float, setting, token_public_keys_setting)


@dataclass(frozen=True)
class Settings(ServiceSettings, LinkReceiverSettings):
    http_host: str = setting("TICKETFLOW_BRIDGE_HOST", "127.0.0.1", str, "HTTP (health) listen address")
    http_port: int = setting("TICKETFLOW_BRIDGE_PORT", 8085, port, "HTTP port for /health and /ready")
    link_host: str = setting("TICKETFLOW_BRIDGE_LINK_LISTEN_HOST", "127.0.0.1", str,
                             "where the payments stream is received")
    link_port: int = setting("TICKETFLOW_BRIDGE_LINK_PORT", 7002, port, "port of the payments stream receiver")
    amqp_url: str = amqp_url_setting()
    amqp_urls: str = amqp_urls_setting()
    amqp_prefix: str = amqp_prefix_setting()
    # Only GET /metrics needs a caller (a service token); without keys it answers 401 to everyone.
    token_public_keys: str = token_public_keys_setting()
    confirm_timeout: float = setting("TICKETFLOW_BRIDGE_CONFIRM_TIMEOUT_SECONDS", 10.0, positive_float,
                                     "how long to wait for RabbitMQ's confirms of a batch")

    @property
    def amqp_nodes(self) -> list[str]:
        return url_list(self.amqp_url, self.amqp_urls)

    def __post_init__(self) -> None:
        check_link_receiver(self, "TICKETFLOW_BRIDGE_LINK_LISTEN_HOST", self.link_host)
