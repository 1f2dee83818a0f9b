"""The daemons and links the tooling knows: written once, read by every command.

``ticketflow run``, ``run all``, ``stop``, ``status``, ``bench`` and ``link``
all iterate these; a new daemon or link is one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DaemonSpec:
    name: str
    module: str  # ``python -m <module>`` runs it; ``<module>.__main__.run()`` too
    http_port_env: str
    default_port: int

    def port(self, env: Mapping[str, str]) -> int:
        return int(env.get(self.http_port_env, self.default_port))

    def url(self, env: Mapping[str, str]) -> str:
        return f"http://127.0.0.1:{self.port(env)}"

    def run(self) -> None:
        """Run the daemon in this process, in the foreground."""
        importlib.import_module(f"{self.module}.__main__").run()


# In start order: each one's peers downstream of it come after it.
DAEMONS = [
    DaemonSpec("reservation", "reservation_daemon", "TICKETFLOW_RESERVATION_PORT", 8083),
    DaemonSpec("billing", "billing_daemon", "TICKETFLOW_BILLING_PORT", 8084),
    DaemonSpec("bridge", "bridge_daemon", "TICKETFLOW_BRIDGE_PORT", 8085),
    DaemonSpec("portal", "portal_consumer", "TICKETFLOW_PORTAL_PORT", 8086),
]
BY_NAME = {spec.name: spec for spec in DAEMONS}


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
