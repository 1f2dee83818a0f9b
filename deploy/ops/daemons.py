"""The daemons, their replicas and the links the tooling knows: written once, read by every command.

``ticketflow run``, ``run all``, ``stop``, ``status``, ``bench``, ``link`` and the
drills all iterate these; a new daemon or link is one line here. A daemon has one
replica per topology by default; under ``ha`` reservation and billing run two each
on internal ports behind HAProxy on their usual public ports (``replicas``), and
each replica has its own name (``TICKETFLOW_INSTANCE``), pid file and log.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.runtime.config import port as parse_port


@dataclass(frozen=True)
class Replica:
    """One process of a daemon: its name (pid file, log, ``/api/instance``), its HTTP port, its own settings."""

    daemon: str
    name: str
    http_port: int
    env: Mapping[str, str] = field(default_factory=dict)  # added to the daemon's environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def pidfile(self, pids: Path) -> Path:
        return pids / f"{self.name}.pid"

    def logfile(self, logs: Path) -> Path:
        return logs / f"{self.name}.log"


@dataclass(frozen=True)
class DaemonSpec:
    name: str
    module: str  # ``python -m <module>`` runs it; ``<module>.__main__.run()`` too
    http_port_env: str
    default_port: int
    # Under the HA topology: the variable listing the replicas' internal HTTP ports, and its default
    # (empty: one process on the public port, as in the local topology).
    replica_ports_env: str = ""
    replica_ports: str = ""

    def port(self, env: Mapping[str, str]) -> int:
        return int(env.get(self.http_port_env, self.default_port))

    def url(self, env: Mapping[str, str]) -> str:
        return f"http://127.0.0.1:{self.port(env)}"

    def ha_ports(self, env: Mapping[str, str]) -> list[int]:
        """The replicas' internal HTTP ports under the HA topology ([] = a single process, no frontend)."""
        raw = env.get(self.replica_ports_env, self.replica_ports) if self.replica_ports_env else ""
        try:
            return [parse_port(p.strip()) for p in raw.split(",") if p.strip()]
        except ValueError as exc:
            raise ValueError(f"{self.replica_ports_env}={raw!r}: {exc}") from None

    def run(self) -> None:
        """Run the daemon in this process, in the foreground."""
        importlib.import_module(f"{self.module}.__main__").run()


# In start order: each one's peers downstream of it come after it.
DAEMONS = [
    DaemonSpec("reservation", "reservation_daemon", "TICKETFLOW_RESERVATION_PORT", 8083,
               "TICKETFLOW_RESERVATION_REPLICA_PORTS", "18083,18093"),
    DaemonSpec("billing", "billing_daemon", "TICKETFLOW_BILLING_PORT", 8084,
               "TICKETFLOW_BILLING_REPLICA_PORTS", "18084,18094"),
    DaemonSpec("bridge", "bridge_daemon", "TICKETFLOW_BRIDGE_PORT", 8085),
    DaemonSpec("portal", "portal_consumer", "TICKETFLOW_PORTAL_PORT", 8086),
]
BY_NAME = {spec.name: spec for spec in DAEMONS}
# billing's stream receiver, one port per billing replica under HA (reservation's relays try them in turn)
BILLING_LINK_PORTS = ("TICKETFLOW_BILLING_LINK_REPLICA_PORTS", "18001,18011")
TOPOLOGY_ENV = "TICKETFLOW_TOPOLOGY"  # set by `run|status --topology`; what `replicas` reads by default


def replicas(env: Mapping[str, str], topology: str | None = None) -> list[Replica]:
    """Every daemon process of ``topology`` (default: ``env[TICKETFLOW_TOPOLOGY]`` or local), in start order."""
    topology = topology or env.get(TOPOLOGY_ENV, "local")
    if topology == "local":
        return [Replica(spec.name, spec.name, spec.port(env)) for spec in DAEMONS]
    link_ports = [parse_port(p.strip()) for p in env.get(*BILLING_LINK_PORTS).split(",") if p.strip()]
    billing_ports = BY_NAME["billing"].ha_ports(env)
    if len(link_ports) < len(billing_ports):
        raise ValueError(f"{BILLING_LINK_PORTS[0]} needs one link port per billing replica ({len(billing_ports)})")
    link_hosts = ",".join(f"127.0.0.1:{p}" for p in link_ports[:len(billing_ports)])
    found = []
    for spec in DAEMONS:
        ports = spec.ha_ports(env)
        if not ports:
            found.append(Replica(spec.name, spec.name, spec.port(env), {"TICKETFLOW_INSTANCE": spec.name}))
            continue
        for n, http_port in enumerate(ports, 1):
            name = f"{spec.name}-{n}"
            # Behind HAProxy on this machine: count clients by the address HAProxy forwards, not HAProxy's own.
            own = {spec.http_port_env: str(http_port), "TICKETFLOW_INSTANCE": name,
                   "TICKETFLOW_TRUSTED_PROXIES": env.get("TICKETFLOW_TRUSTED_PROXIES", "127.0.0.1/32")}
            if spec.name == "reservation":
                own["TICKETFLOW_BILLING_LINK_HOST"] = link_hosts
            if spec.name == "billing":
                own["TICKETFLOW_BILLING_LINK_PORT"] = str(link_ports[n - 1])
            found.append(Replica(spec.name, name, http_port, own))
    return found


def every_replica(env: Mapping[str, str]) -> list[Replica]:
    """The replicas of every topology, each name once: what ``ticketflow stop`` looks for."""
    seen: dict[str, Replica] = {}
    for topology in ("local", "ha"):
        for replica in replicas(env, topology):
            seen.setdefault(replica.name, replica)
    return list(seen.values())


def frontends(env: Mapping[str, str]) -> str:
    """``TICKETFLOW_HA_FRONTENDS`` for the HA topology's replicas: ``name=public:replica,replica;...``."""
    return ";".join(f"{spec.name}={spec.port(env)}:{','.join(map(str, spec.ha_ports(env)))}"
                    for spec in DAEMONS if spec.ha_ports(env))


@dataclass(frozen=True)
class Link:
    name: str  # as ``ticketflow link --link`` spells it
    sender: str
    receiver: str
    stream: str

    @property
    def title(self) -> str:
        return f"{self.sender} -> {self.receiver}"


LINKS = {link.name: link for link in (
    Link("reservation-billing", "reservation", "billing", "reservations"),
    Link("billing-bridge", "billing", "bridge", "payments"),
)}
SENDS = {link.sender: link for link in LINKS.values()}  # the link each sending daemon relays
