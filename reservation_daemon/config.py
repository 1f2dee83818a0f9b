"""Every setting of the reservation daemon, read once from ``TICKETFLOW_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.runtime.config import (ServiceSettings, LinkSenderSettings, StoreSettings, Rate, check_link_sender, holds_per_address_setting, holds_per_subject_setting,
                                   host_list, load, port, positive_float, positive_int,
                                   rate_limit_setting, rate_limits_enabled_setting, service_token_setting, setting,
                                   trusted_proxies_setting,
                                   token_public_keys_setting)


@dataclass(frozen=True)
class Settings(ServiceSettings, LinkSenderSettings, StoreSettings):
    http_host: str = setting("TICKETFLOW_RESERVATION_HOST", "127.0.0.1", str, "HTTP listen address")
    http_port: int = setting("TICKETFLOW_RESERVATION_PORT", 8083, port, "HTTP listen port")
    pg_dsn: str = setting("TICKETFLOW_PG_DSN", "postgresql://ticketflow:ticketflow@127.0.0.1:17432/ticketflow", str,
                          "PostgreSQL DSN; several hosts and target_session_attrs=read-write follow a failover")
    pool_size: int = setting("TICKETFLOW_RESERVATION_POOL_SIZE", 20, positive_int, "database connections per instance")
    hold_ttl: float = setting("TICKETFLOW_HOLD_TTL_SECONDS", 600.0, positive_float, "how long a hold lasts")
    max_seats: int = setting("TICKETFLOW_MAX_SEATS_PER_HOLD", 10, positive_int, "seats in one multi-seat hold")
    max_layout_seats: int = setting("TICKETFLOW_MAX_LAYOUT_SEATS", 100_000, positive_int, "seats in one event")
    sweep_interval: float = setting("TICKETFLOW_SWEEP_INTERVAL_SECONDS", 1.0, positive_float,
                                    "how often expired holds are released (each with billing's word)")
    sweep_batch: int = setting("TICKETFLOW_SWEEP_BATCH", 500, positive_int, "holds released per sweep transaction")
    billing_host: str = setting("TICKETFLOW_BILLING_LINK_HOST", "127.0.0.1", host_list,
                                "billing's stream receiver; several replicas as host1[:port],host2[:port],... "
                                "are tried in turn")
    billing_port: int = setting("TICKETFLOW_BILLING_LINK_PORT", 7001, port, "billing's stream receiver port")
    relay_poll: float = setting("TICKETFLOW_RELAY_POLL_SECONDS", 1.0, positive_float,
                                "outbox poll interval when LISTEN/NOTIFY is quiet")
    rate_limit: int = rate_limit_setting()
    trusted_proxies: tuple = trusted_proxies_setting()
    token_public_keys: str = token_public_keys_setting()
    service_token_file: str = service_token_setting()
    billing_url: str = setting("TICKETFLOW_BILLING_URL", "http://127.0.0.1:8084", str,
                               "billing's API: asked whether a hold has a payment before it is released, and "
                               "whether a sold reservation really was refunded before its seats are released")
    peer_timeout: float = setting("TICKETFLOW_PEER_TIMEOUT_SECONDS", 5.0, positive_float,
                                  "timeout of each call to another daemon")
    seat_stream_poll: float = setting("TICKETFLOW_SEAT_STREAM_POLL_SECONDS", 0.5, positive_float,
                                      "the seat streams' reader reads new changes at least this often (the "
                                      "NOTIFY of each numbering batch wakes it at once; this covers a lost one)")
    seat_stream_heartbeat: float = setting("TICKETFLOW_SEAT_STREAM_HEARTBEAT_SECONDS", 15.0, positive_float,
                                           "a comment on a quiet seat stream this often (keeps proxies from "
                                           "closing it); a write stuck this long closes the stream")
    seat_stream_queue: int = setting("TICKETFLOW_SEAT_STREAM_QUEUE", 256, positive_int,
                                     "changes buffered per seat-stream viewer; one further behind is dropped "
                                     "(its browser reconnects and resumes)")
    seat_stream_max_viewers: int = setting("TICKETFLOW_SEAT_STREAM_MAX_VIEWERS", 10_000, positive_int,
                                           "open seat streams per process; more are 503 STREAM_CAPACITY")
    seat_stream_per_address: int = setting("TICKETFLOW_SEAT_STREAM_PER_ADDRESS", 32, positive_int,
                                           "open seat streams per client address (behind a trusted proxy: the "
                                           "forwarded one); more are 429 TOO_MANY_STREAMS")
    public_billing_url: str = setting("TICKETFLOW_PUBLIC_BILLING_URL", "", str,
                                      "billing's API as a browser reaches it (the buyer's pages sign up, log in "
                                      "and pay there); empty: TICKETFLOW_BILLING_URL")
    rate_limits_enabled: bool = rate_limits_enabled_setting()
    holds_per_subject: Rate = holds_per_subject_setting()
    holds_per_address: Rate = holds_per_address_setting()

    def __post_init__(self) -> None:
        check_link_sender(self, "TICKETFLOW_BILLING_LINK_HOST", self.billing_host, self.billing_port)


def load_settings() -> Settings:
    return load(Settings)
