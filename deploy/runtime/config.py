"""Typed settings read from ``TICKETFLOW_*`` environment variables.

Each daemon declares one frozen dataclass whose fields are made with
:func:`setting`; :func:`load` reads them all at start-up and fails with a
:class:`ConfigError` naming the variable when a value does not parse, so a
typo is found before the daemon accepts any work.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A ``TICKETFLOW_*`` variable holds a value the daemon cannot use."""

    def __init__(self, variable: str, value: str, reason: str) -> None:
        super().__init__(f"{variable}={value!r}: {reason}")
        self.variable = variable
        self.value = value
        self.reason = reason


def setting(env: str, default: Any, parse: Callable[[str], Any] = str, doc: str = "") -> Any:
    """Declare a dataclass field filled from the environment variable ``env``."""
    return dataclasses.field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.metadata.get("env")
        if name is None or name not in environ:
            continue
        raw = environ[name]
        try:
            values[field.name] = field.metadata["parse"](raw)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(name, raw, str(exc) or type(exc).__name__) from None
    return cls(**values)


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """(variable, default, doc) for every setting of ``cls``; used by ``--help`` and docs."""
    return [
        (f.metadata["env"], f.default, f.metadata.get("doc", ""))
        for f in dataclasses.fields(cls)
        if "env" in f.metadata
    ]


# --- parsers -----------------------------------------------------------------


def positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw.strip())
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def port(raw: str) -> int:
    value = int(raw.strip())
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port between 1 and 65535")
    return value


def positive_float(raw: str) -> float:
    value = float(raw.strip())
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def fraction(raw: str) -> float:
    value = float(raw.strip())
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0.0 and 1.0")
    return value


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


def secret(raw: str) -> bytes:
    value = raw.encode()
    if len(value) < 16:
        raise ValueError("must be at least 16 bytes long")
    return value


def log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"debug", "info", "warning", "error"}:
        raise ValueError("must be debug, info, warning or error")
    return value


def host_list(raw: str) -> str:
    """``host`` or ``host1[:port],host2[:port],...`` (validated here, split by :func:`link_targets`)."""
    link_targets(raw, 1)
    return raw.strip()


def link_targets(hosts: str, default_port: int) -> list[tuple[str, int]]:
    """``"a,b:7101,[::1]:7102"`` -> ``[("a", default_port), ("b", 7101), ("::1", 7102)]``.

    The receivers a link tries in turn; an IPv6 address goes in brackets.
    """
    targets = []
    for item in (part.strip() for part in hosts.split(",")):
        if item.startswith("["):
            host, bracket, rest = item[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"{item!r}: an IPv6 address is written [address] or [address]:port")
            port_text = rest[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError("must be host or host1[:port],host2[:port],... with no empty entries")
        targets.append((host, port(port_text) if port_text else default_port))
    return targets


# --- settings the daemons share ------------------------------------------------
# One declaration each, so a variable means the same thing with the same default
# in every daemon that reads it.

DEV_LINK_SECRET = b"ticketflow-dev-link-secret-change-me"


def link_secret_setting() -> Any:
    return setting("TICKETFLOW_LINK_SECRET", DEV_LINK_SECRET, secret, "shared secret of the links (at least 16 bytes)")


def link_max_pending_setting() -> Any:
    return setting("TICKETFLOW_LINK_MAX_PENDING", 64, positive_int,
                   "receiver: link connections not yet authenticated, in all (more are closed at once)")


def link_max_pending_per_address_setting() -> Any:
    return setting("TICKETFLOW_LINK_MAX_PENDING_PER_ADDRESS", 8, positive_int,
                   "receiver: link connections not yet authenticated from one remote address")


def link_handshake_timeout_setting() -> Any:
    return setting("TICKETFLOW_LINK_HANDSHAKE_TIMEOUT_SECONDS", 5.0, positive_float,
                   "a link connection that has not completed its handshake by then is closed")


def link_tls_cert_setting() -> Any:
    return setting("TICKETFLOW_LINK_TLS_CERT", "", readable_file,
                   "receiver: PEM certificate (chain) of its link port; with _KEY it turns TLS on")


def link_tls_key_setting() -> Any:
    return setting("TICKETFLOW_LINK_TLS_KEY", "", readable_file, "receiver: PEM private key of that certificate")


def link_tls_ca_setting() -> Any:
    return setting("TICKETFLOW_LINK_TLS_CA", "", readable_file,
                   "sender: PEM CA certificate(s) the receiver's certificate must chain to; turns TLS on")


def link_tls_server_name_setting() -> Any:
    return setting("TICKETFLOW_LINK_TLS_SERVER_NAME", "", str,
                   "sender: the name the receiver's certificate must carry (default: the link host)")


def readable_file(raw: str) -> str:
    path = raw.strip()
    if path and not os.access(path, os.R_OK):
        raise ValueError("no readable file there")
    return path


def is_loopback(host: str) -> bool:
    """True only for names that can never reach beyond this machine (not 0.0.0.0, not a host name)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_link_receiver(settings: Any, listen_variable: str, listen_host: str) -> None:
    """Refuse at start-up what would expose a receiving link port: the public development secret
    off loopback, half a TLS configuration, unreadable TLS files."""
    if settings.link_secret == DEV_LINK_SECRET and not is_loopback(listen_host):
        raise ConfigError("TICKETFLOW_LINK_SECRET", "(the public development secret)",
                          f"refused while {listen_variable}={listen_host} is not a loopback address: "
                          "anyone who can reach the port could feed the stream; set a secret of your own")
    if bool(settings.link_tls_cert) != bool(settings.link_tls_key):
        missing = "TICKETFLOW_LINK_TLS_KEY" if settings.link_tls_cert else "TICKETFLOW_LINK_TLS_CERT"
        raise ConfigError(missing, "", "TLS needs both TICKETFLOW_LINK_TLS_CERT and TICKETFLOW_LINK_TLS_KEY")
    if settings.link_tls_cert:
        from protocol.link import server_tls

        try:
            server_tls(settings.link_tls_cert, settings.link_tls_key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError("TICKETFLOW_LINK_TLS_CERT", settings.link_tls_cert,
                              f"certificate and key do not load: {exc}") from None


def check_link_sender(settings: Any, hosts_variable: str, hosts: str, default_port: int) -> None:
    """The same for a sending side: the development secret only towards loopback receivers."""
    if settings.link_secret == DEV_LINK_SECRET:
        remote = [host for host, _ in link_targets(hosts, default_port) if not is_loopback(host)]
        if remote:
            raise ConfigError("TICKETFLOW_LINK_SECRET", "(the public development secret)",
                              f"refused while {hosts_variable} names {', '.join(remote)}, which is not loopback: "
                              "a receiver elsewhere needs a secret of your own")
    if settings.link_tls_ca:
        from protocol.link import client_tls

        try:
            client_tls(settings.link_tls_ca)
        except (OSError, ValueError) as exc:
            raise ConfigError("TICKETFLOW_LINK_TLS_CA", settings.link_tls_ca,
                              f"CA certificates do not load: {exc}") from None


def receiver_link(settings: Any, node: str) -> Any:
    """The LinkSettings of a daemon's receiving port, from its ``link_*`` settings."""
    from protocol.link import LinkSettings, server_tls

    return LinkSettings(
        secret=settings.link_secret, node=node, handshake_timeout=settings.link_handshake_timeout,
        max_pending=settings.link_max_pending, max_pending_per_address=settings.link_max_pending_per_address,
        ssl=server_tls(settings.link_tls_cert, settings.link_tls_key) if settings.link_tls_cert else None)


def sender_link(settings: Any, node: str) -> Any:
    """The LinkSettings of a daemon's outgoing link (its relay), from its ``link_*`` settings."""
    from protocol.link import LinkSettings, client_tls

    return LinkSettings(
        secret=settings.link_secret, node=node, window=settings.link_window,
        handshake_timeout=settings.link_handshake_timeout,
        ssl=client_tls(settings.link_tls_ca) if settings.link_tls_ca else None,
        server_name=settings.link_tls_server_name or None)


def link_window_setting() -> Any:
    # Twice the receiver's largest batch (billing_daemon.streams.MAX_BATCH): one batch commits while the
    # next arrives. At 256 a backlog drained in batches of ~128 and one commit each (issue 13).
    return setting("TICKETFLOW_LINK_WINDOW", 8192, positive_int, "events in flight before an ack")


def relay_lock_retry_setting() -> Any:
    return setting("TICKETFLOW_RELAY_LOCK_RETRY_SECONDS", 1.0, positive_float,
                   "how often a standby replica tries to become the relay")


def retention_hours_setting() -> Any:
    return setting("TICKETFLOW_OUTBOX_RETENTION_HOURS", 168.0, positive_float,
                   "acknowledged outbox rows are kept this long for replays")


def idempotency_hours_setting() -> Any:
    return setting("TICKETFLOW_IDEMPOTENCY_HOURS", 24.0, positive_float, "how long an Idempotency-Key is remembered")


def origin_list(raw: str) -> tuple[str, ...]:
    """``scheme://host[:port]`` origins, comma-separated (a page's origin, as a browser sends it)."""
    import re

    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    for origin in origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError(f"{origin!r} is not an origin like http://host:port")
    return origins


def page_origins_setting() -> Any:
    return setting("TICKETFLOW_PAGE_ORIGINS", ("http://127.0.0.1:8083", "http://localhost:8083",
                                               "http://127.0.0.1:8086", "http://localhost:8086"), origin_list,
                   "origins of the pages whose scripts call this daemon's API from a browser (CORS); default "
                   "the reservation daemon's public URL, where the buyer's pages are served, and the "
                   "portal's (the operators' console logs in at billing)")


def _networks(raw: str) -> tuple:
    import ipaddress

    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def trusted_proxies_setting() -> Any:
    return setting("TICKETFLOW_TRUSTED_PROXIES", (), _networks,
                   "addresses or networks (comma-separated, e.g. 127.0.0.1/32) of load balancers in front of this "
                   "daemon: a request from one of them is counted against the address its X-Forwarded-For names "
                   "last (the one the balancer added), not the balancer's; empty: every request by its own peer")


def rate_limit_setting() -> Any:
    return setting("TICKETFLOW_RATE_LIMIT_PER_SECOND", 0, non_negative_int,
                   "requests per second per client address (0 = unlimited)")


def amqp_url_setting() -> Any:
    return setting("TICKETFLOW_AMQP_URL", "amqp://ticketflow:ticketflow@127.0.0.1:17672/", str, "RabbitMQ URL")


def amqp_prefix_setting() -> Any:
    return setting("TICKETFLOW_AMQP_PREFIX", "ticketflow", str,
                   "prefix of exchange and queue names (ticketflow.events, ...)")


def instance_setting() -> Any:
    return setting("TICKETFLOW_INSTANCE", "", str, "name of this replica in /api/instance and logs (default host:port)")


def log_level_setting() -> Any:
    return setting("TICKETFLOW_LOG_LEVEL", "info", log_level, "debug, info, warning or error")


def http_request_timeout_setting() -> Any:
    return setting("TICKETFLOW_HTTP_REQUEST_TIMEOUT_SECONDS", 15.0, positive_float,
                   "a request's headers, and then its body, must each arrive within this; a stalled one is closed")


def http_keepalive_setting() -> Any:
    return setting("TICKETFLOW_HTTP_KEEPALIVE_SECONDS", 30.0, positive_float,
                   "an idle keep-alive connection is closed after this")


class Rate(NamedTuple):
    """A rate limit: ``per_second`` sustained, bursts of ``burst``; ``per_second`` 0 is no limit."""

    per_second: float
    burst: int

    def __str__(self) -> str:
        if self.per_second <= 0:
            return "0"
        for unit, seconds in (("s", 1), ("min", 60), ("h", 3600)):
            count = self.per_second * seconds
            if count >= 1 and abs(count - round(count)) < 1e-9:
                return f"{round(count)}/{unit} burst {self.burst}"
        return f"{self.per_second:g}/s burst {self.burst}"


def rate(raw: str) -> Rate:
    """``"20/s burst 40"``, ``"5/min"`` (burst = the count), ``"0"`` (off) -> a :class:`Rate`."""
    text = " ".join(raw.lower().split())
    if text in {"0", "off"}:
        return Rate(0.0, 0)
    spec, _, burst_text = text.partition(" burst ")
    count_text, slash, unit = spec.partition("/")
    seconds = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
    if not slash or unit not in seconds:
        raise ValueError("must look like 20/s, 5/min or 100/h, optionally followed by 'burst N'; 0 is off")
    count = float(count_text)
    burst = int(burst_text) if burst_text else max(1, int(count))
    if count <= 0 or burst < 1:
        raise ValueError("the rate and the burst must be positive (0 alone turns the limit off)")
    return Rate(count / seconds[unit], burst)


def rate_limits_enabled_setting() -> Any:
    return setting("TICKETFLOW_RATE_LIMITS_ENABLED", True, boolean,
                   "per-route limits on holds and logins (see TICKETFLOW_RATE_LIMIT_HOLDS_*, *_LOGINS_*)")


def holds_per_subject_setting() -> Any:
    return setting("TICKETFLOW_RATE_LIMIT_HOLDS_PER_SUBJECT", rate("20/s burst 40"), rate,
                   "seat holds per token subject (e.g. '20/s burst 40'; 0 = off)")


def holds_per_address_setting() -> Any:
    return setting("TICKETFLOW_RATE_LIMIT_HOLDS_PER_ADDRESS", rate("100/s burst 200"), rate,
                   "seat holds per client address, whoever is calling (0 = off)")


def logins_per_address_setting() -> Any:
    return setting("TICKETFLOW_RATE_LIMIT_LOGINS_PER_ADDRESS", rate("30/min burst 30"), rate,
                   "login attempts per client address (0 = off)")


def logins_per_email_setting() -> Any:
    return setting("TICKETFLOW_RATE_LIMIT_LOGINS_PER_EMAIL", rate("5/min burst 5"), rate,
                   "login attempts per e-mail address, from anywhere (0 = off)")


# --- who may call: tokens (deploy.runtime.auth) ------------------------------------


def optional_path(raw: str) -> str:
    return raw.strip()


def token_public_keys_setting() -> Any:
    return setting("TICKETFLOW_TOKEN_PUBLIC_KEYS", "", optional_path,
                   "directory (or file) of Ed25519 public keys (*.pem) that verify bearer tokens; "
                   "`ticketflow stack up` creates one for development")


def service_token_setting() -> Any:
    return setting("TICKETFLOW_SERVICE_TOKEN_FILE", "", optional_path,
                   "file holding this daemon's service token for calls to other daemons (provisioned by the stack)")


def require(settings: Any, field_name: str, why: str) -> None:
    """Fail start-up with the variable's name when a setting the daemon cannot run without is empty."""
    field = next(f for f in dataclasses.fields(settings) if f.name == field_name)
    if not getattr(settings, field_name):
        raise ConfigError(field.metadata["env"], "", f"required: {why}")


# --- groups of settings, declared once ---------------------------------------------------
# A daemon's Settings subclasses the groups it needs (dataclass inheritance), so a group's
# variables mean the same thing, with the same default and help, wherever they appear.


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """What every daemon has: its name, its log level, its HTTP server's patience."""

    http_request_timeout: float = http_request_timeout_setting()
    http_keepalive: float = http_keepalive_setting()
    instance: str = instance_setting()
    log_level: str = log_level_setting()


@dataclasses.dataclass(frozen=True)
class LinkSecretSettings:
    link_secret: bytes = link_secret_setting()
    link_handshake_timeout: float = link_handshake_timeout_setting()


@dataclasses.dataclass(frozen=True)
class LinkSenderSettings(LinkSecretSettings):
    """A daemon that relays its outbox over a link (reservation, billing)."""

    link_window: int = link_window_setting()
    link_tls_ca: str = link_tls_ca_setting()
    link_tls_server_name: str = link_tls_server_name_setting()
    relay_lock_retry: float = relay_lock_retry_setting()


@dataclasses.dataclass(frozen=True)
class LinkReceiverSettings(LinkSecretSettings):
    """A daemon that receives a link (billing, bridge)."""

    link_max_pending: int = link_max_pending_setting()
    link_max_pending_per_address: int = link_max_pending_per_address_setting()
    link_tls_cert: str = link_tls_cert_setting()
    link_tls_key: str = link_tls_key_setting()


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """A daemon with an outbox and Idempotency-Keys to prune."""

    retention_hours: float = retention_hours_setting()
    idempotency_hours: float = idempotency_hours_setting()
