"""Every setting of the portal consumer, read once from ``TICKETFLOW_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.runtime.amqp import amqp_urls_setting, url_list
from deploy.runtime.config import (ServiceSettings, amqp_prefix_setting, amqp_url_setting, port,
                                   positive_float, positive_int, service_token_setting, setting,
                                   token_public_keys_setting)


@dataclass(frozen=True)
class Settings(ServiceSettings):
    http_host: str = setting("TICKETFLOW_PORTAL_HOST", "127.0.0.1", str, "HTTP listen address")
    http_port: int = setting("TICKETFLOW_PORTAL_PORT", 8086, port, "HTTP port (notifications, probes)")
    pg_dsn: str = setting("TICKETFLOW_PORTAL_PG_DSN", "postgresql://ticketflow:ticketflow@127.0.0.1:17432/ticketflow",
                          str, "PostgreSQL for the dedupe record and notifications")
    amqp_url: str = amqp_url_setting()
    amqp_urls: str = amqp_urls_setting()
    amqp_prefix: str = amqp_prefix_setting()
    prefetch: int = setting("TICKETFLOW_PORTAL_PREFETCH", 32, positive_int, "unacked messages held at once")
    max_attempts: int = setting("TICKETFLOW_PORTAL_MAX_ATTEMPTS", 5, positive_int,
                                "deliveries of a message that crashes processing before it is dead-lettered "
                                "(unavailable peers and unexpected answers are retried without limit)")
    retry_cap: float = setting("TICKETFLOW_PORTAL_RETRY_CAP_SECONDS", 30.0, positive_float,
                               "longest pause between retries of a message whose peer is down or answers "
                               "unexpectedly (exponential backoff with full jitter up to this)")
    stuck_log_interval: float = setting("TICKETFLOW_PORTAL_STUCK_LOG_SECONDS", 60.0, positive_float,
                                        "how often a message that stays stuck is logged again")
    reservation_url: str = setting("TICKETFLOW_RESERVATION_URL", "http://127.0.0.1:8083", str,
                                   "the reservation daemon's API")
    billing_url: str = setting("TICKETFLOW_BILLING_URL", "http://127.0.0.1:8084", str, "the billing daemon's API")
    http_timeout: float = setting("TICKETFLOW_PORTAL_HTTP_TIMEOUT_SECONDS", 5.0, positive_float,
                                  "timeout of each call to reservation, billing and the webhook")
    public_billing_url: str = setting("TICKETFLOW_PUBLIC_BILLING_URL", "", str,
                                      "billing's API as a browser reaches it (the operators' console logs in "
                                      "there); empty: TICKETFLOW_BILLING_URL")
    webhook: str = setting("TICKETFLOW_NOTIFY_WEBHOOK", "", str,
                           "POST each notification here as JSON (retried with backoff); unset: log only")
    ops_command: str = setting("TICKETFLOW_PORTAL_OPS_COMMAND", "", str,
                               "the ticketflow command the operators' console runs (status, drills), as "
                               "words split on spaces; empty: this Python with -m deploy.ops.cli")
    ops_topology: str = setting("TICKETFLOW_TOPOLOGY", "local", str,
                                "the topology `run all` started (local or ha): what the console's status reads")
    ops_sample_seconds: float = setting("TICKETFLOW_PORTAL_OPS_SAMPLE_SECONDS", 5.0, positive_float,
                                        "how often the console's lag chart is sampled (while it is in use)")
    ops_history: int = setting("TICKETFLOW_PORTAL_OPS_HISTORY", 120, positive_int,
                               "lag samples kept for the chart (120 x 5 s: the last 10 minutes)")
    ops_idle_seconds: float = setting("TICKETFLOW_PORTAL_OPS_IDLE_SECONDS", 1800.0, positive_float,
                                      "the lag sampler stops this long after the console's last request")
    status_timeout: float = setting("TICKETFLOW_PORTAL_STATUS_TIMEOUT_SECONDS", 30.0, positive_float,
                                    "longest a `ticketflow status` run for the console may take")
    drill_timeout: float = setting("TICKETFLOW_PORTAL_DRILL_TIMEOUT_SECONDS", 1800.0, positive_float,
                                   "longest a drill started from the console may run before it is stopped")
    drill_dir: str = setting("TICKETFLOW_DRILL_REPORTS_DIR", ".stack/drills", str,
                             "where drills keep their reports and the console its drill logs")
    token_public_keys: str = token_public_keys_setting()
    service_token_file: str = service_token_setting()

    @property
    def amqp_nodes(self) -> list[str]:
        return url_list(self.amqp_url, self.amqp_urls)
