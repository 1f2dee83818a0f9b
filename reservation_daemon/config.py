"""Every setting of the reservation daemon, read once from ``TICKETFLOW_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.runtime.config import load, non_negative_int, port, positive_float, positive_int, secret, setting

DEV_LINK_SECRET = b"ticketflow-dev-link-secret-change-me"


@dataclass(frozen=True)
class Settings:
    http_host: str = setting("TICKETFLOW_RESERVATION_HOST", "127.0.0.1", str, "HTTP listen address")
    http_port: int = setting("TICKETFLOW_RESERVATION_PORT", 8083, port, "HTTP listen port")
    pg_dsn: str = setting("TICKETFLOW_PG_DSN", "postgresql://ticketflow:ticketflow@127.0.0.1:17432/ticketflow", str,
                          "PostgreSQL DSN; several hosts and target_session_attrs=read-write follow a failover")
    pool_size: int = setting("TICKETFLOW_RESERVATION_POOL_SIZE", 20, positive_int, "database connections per instance")
    hold_ttl: float = setting("TICKETFLOW_HOLD_TTL_SECONDS", 600.0, positive_float, "how long a hold lasts")
    max_seats: int = setting("TICKETFLOW_MAX_SEATS_PER_HOLD", 10, positive_int, "seats in one multi-seat hold")
    max_layout_seats: int = setting("TICKETFLOW_MAX_LAYOUT_SEATS", 100_000, positive_int, "seats in one event")
    sweep_interval: float = setting("TICKETFLOW_SWEEP_INTERVAL_SECONDS", 1.0, positive_float,
                                    "how often expired holds are released")
    sweep_batch: int = setting("TICKETFLOW_SWEEP_BATCH", 500, positive_int, "holds released per sweep transaction")
    billing_host: str = setting("TICKETFLOW_BILLING_LINK_HOST", "127.0.0.1", str, "billing's stream receiver host")
    billing_port: int = setting("TICKETFLOW_BILLING_LINK_PORT", 7001, port, "billing's stream receiver port")
    link_secret: bytes = setting("TICKETFLOW_LINK_SECRET", DEV_LINK_SECRET, secret,
                                 "shared secret of the links (at least 16 bytes)")
    link_window: int = setting("TICKETFLOW_LINK_WINDOW", 256, positive_int, "events in flight before an ack")
    relay_poll: float = setting("TICKETFLOW_RELAY_POLL_SECONDS", 1.0, positive_float,
                                "outbox poll interval when LISTEN/NOTIFY is quiet")
    relay_lock_retry: float = setting("TICKETFLOW_RELAY_LOCK_RETRY_SECONDS", 1.0, positive_float,
                                      "how often a standby replica tries to become the relay")
    retention_hours: float = setting("TICKETFLOW_OUTBOX_RETENTION_HOURS", 168.0, positive_float,
                                     "acknowledged outbox rows are kept this long for replays")
    idempotency_hours: float = setting("TICKETFLOW_IDEMPOTENCY_HOURS", 24.0, positive_float,
                                       "how long an Idempotency-Key is remembered")
    rate_limit: int = setting("TICKETFLOW_RATE_LIMIT_PER_SECOND", 0, non_negative_int,
                              "requests per second per client address (0 = unlimited)")
    instance: str = setting("TICKETFLOW_INSTANCE", "", str,
                            "name of this replica in /api/instance and logs (default host:port)")
    log_level: str = setting("TICKETFLOW_LOG_LEVEL", "info", str, "debug, info, warning or error")


def load_settings() -> Settings:
    return load(Settings)
