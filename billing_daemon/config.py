"""Every setting of the billing daemon, read once from ``TICKETFLOW_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.runtime.config import (ConfigError, ServiceSettings, LinkSenderSettings, LinkReceiverSettings, StoreSettings, Rate, check_link_receiver, check_link_sender, fraction, host_list,
                                   load,
                                   logins_per_address_setting, logins_per_email_setting,
                                   non_negative_int, page_origins_setting, port, positive_float, positive_int, rate_limit_setting,
                                   trusted_proxies_setting,
                                   rate, rate_limits_enabled_setting, setting, token_public_keys_setting)


def optional_int(raw: str) -> int | None:
    return None if raw.strip() == "" else int(raw)


@dataclass(frozen=True)
class Settings(ServiceSettings, LinkSenderSettings, LinkReceiverSettings, StoreSettings):
    http_host: str = setting("TICKETFLOW_BILLING_HOST", "127.0.0.1", str, "HTTP listen address")
    http_port: int = setting("TICKETFLOW_BILLING_PORT", 8084, port, "HTTP listen port")
    mariadb_dsn: str = setting("TICKETFLOW_MARIADB_DSN", "mysql://ticketflow:ticketflow@127.0.0.1:17306/ticketflow",
                               str, "MariaDB DSN; a load balancer or several comma-separated hosts")
    pool_size: int = setting("TICKETFLOW_BILLING_POOL_SIZE", 20, positive_int, "database connections per instance")
    link_host: str = setting("TICKETFLOW_BILLING_LINK_LISTEN_HOST", "127.0.0.1", str,
                             "where the reservation stream is received")
    link_port: int = setting("TICKETFLOW_BILLING_LINK_PORT", 7001, port, "port of the reservation stream receiver")
    bridge_host: str = setting("TICKETFLOW_BRIDGE_LINK_HOST", "127.0.0.1", host_list,
                               "the bridge's stream receiver; several as host1[:port],host2[:port],... are tried "
                               "in turn")
    bridge_port: int = setting("TICKETFLOW_BRIDGE_LINK_PORT", 7002, port, "the bridge's stream receiver port")
    relay_poll: float = setting("TICKETFLOW_BILLING_RELAY_POLL_SECONDS", 0.25, positive_float,
                                "outbox poll interval (MariaDB has no LISTEN; local writes wake the relay at once)")
    relay_lease_ttl: float = setting("TICKETFLOW_BILLING_RELAY_LEASE_SECONDS", 3.0, positive_float,
                                     "the relay lease's lifetime on MariaDB's clock: a standby takes over this long "
                                     "after a holder dies without giving it up (SIGKILL, a lost host); more than "
                                     "three renew intervals")
    relay_lease_renew: float = setting("TICKETFLOW_BILLING_RELAY_LEASE_RENEW_SECONDS", 0.5, positive_float,
                                       "how often the relay holder renews its lease; it stops relaying by its own "
                                       "clock TTL - 2 x this after its last successful renewal was sent, even if "
                                       "MariaDB cannot be reached")
    payment_success_rate: float = setting("TICKETFLOW_PAYMENT_SUCCESS_RATE", 1.0, fraction,
                                          "share of mock charges approved")
    payment_seed: int | None = setting("TICKETFLOW_PAYMENT_SEED", None, optional_int,
                                       "seed for the mock gateway's decisions (unset: random)")
    payment_latency_ms: int = setting("TICKETFLOW_PAYMENT_LATENCY_MS", 0, non_negative_int,
                                      "simulated gateway latency")
    pay_margin: float = setting("TICKETFLOW_PAY_SAFETY_MARGIN_SECONDS", 30.0, positive_float,
                                "payments are refused this close to a hold's expiry")
    mock_gateway_ledger: str = setting("TICKETFLOW_MOCK_GATEWAY_LEDGER", "", str,
                                       "the mock gateway's durable ledger (JSON lines, fsynced; replicas on one host "
                                       "may share it); unset: the mock forgets everything when billing stops")
    resume_after: float = setting("TICKETFLOW_PAY_RESUME_AFTER_SECONDS", 30.0, positive_float,
                                  "a retry resumes a payment charging this long even if the replica that started "
                                  "it is alive (abandoned ones, whose process died or whose request failed, are "
                                  "resumed at once)")
    resolve_after: float = setting("TICKETFLOW_PAY_RESOLVE_AFTER_SECONDS", 10.0, positive_float,
                                   "the resolver asks the gateway about a payment charging this long (abandoned "
                                   "ones at once) and records the answer")
    resolve_interval: float = setting("TICKETFLOW_PAY_RESOLVE_INTERVAL_SECONDS", 1.0, positive_float,
                                      "how often the resolver looks for payments left charging")
    token_signing_key: str = setting("TICKETFLOW_TOKEN_SIGNING_KEY", "", str,
                                     "Ed25519 private key (PEM) billing signs tokens with; re-read when the file "
                                     "changes, so a rotation needs no restart (`ticketflow stack up` makes one)")
    token_public_keys: str = token_public_keys_setting()
    token_ttl: float = setting("TICKETFLOW_TOKEN_TTL_SECONDS", 900.0, positive_float,
                               "lifetime of a login token; other daemons honour a logout when it ends")
    rate_limit: int = rate_limit_setting()
    trusted_proxies: tuple = trusted_proxies_setting()
    page_origins: tuple[str, ...] = page_origins_setting()
    rate_limits_enabled: bool = rate_limits_enabled_setting()
    logins_per_address: Rate = logins_per_address_setting()
    logins_per_email: Rate = logins_per_email_setting()
    signups_per_address: Rate = setting("TICKETFLOW_RATE_LIMIT_SIGNUPS_PER_ADDRESS", rate("10/min burst 10"), rate,
                                        "sign-ups per client address (each costs an argon2 hash; 0 = off)")

    def __post_init__(self) -> None:
        check_link_receiver(self, "TICKETFLOW_BILLING_LINK_LISTEN_HOST", self.link_host)
        check_link_sender(self, "TICKETFLOW_BRIDGE_LINK_HOST", self.bridge_host, self.bridge_port)
        if self.relay_lease_ttl <= 3 * self.relay_lease_renew:
            raise ConfigError("TICKETFLOW_BILLING_RELAY_LEASE_SECONDS", str(self.relay_lease_ttl),
                              "must be more than three times TICKETFLOW_BILLING_RELAY_LEASE_RENEW_SECONDS")


def load_settings() -> Settings:
    return load(Settings)
