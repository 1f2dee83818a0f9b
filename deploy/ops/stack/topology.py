"""Topologies: which servers make up a stack, brought up and down together.

``local`` is one server of each kind. An HA topology (Patroni-managed
PostgreSQL with etcd and HAProxy, a Galera cluster, a RabbitMQ cluster) is a
longer server list with its own ``env`` (multi-host DSNs) — same launcher.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deploy.ops.stack import packages
from deploy.ops.stack.keys import Keys
from deploy.ops.stack.mariadb import MariaDB
from deploy.ops.stack.postgres import Postgres
from deploy.ops.stack.rabbitmq import RabbitMQ
from deploy.ops.stack.server import Server
from deploy.ops.stack.settings import StackSettings, stack_settings


@dataclass
class Topology:
    name: str
    servers: list[Server]
    keys: Keys | None = field(default=None)  # development token keys and service tokens

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers)

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(f"no server {name!r} in topology {self.name!r}")

    def install(self) -> list[str]:
        wanted: dict[str, list[str]] = {}
        for server in self.servers:
            wanted.update(server.packages)
        names = packages.missing(wanted)
        packages.install(names)
        return names

    def up(self) -> dict[str, str]:
        """Start every server at once (the slowest, RabbitMQ, sets the pace)."""
        self.install()
        with ThreadPoolExecutor(len(self.servers)) as pool:
            results = {s.name: pool.submit(s.up) for s in self.servers}
            states = {name: future.result() for name, future in results.items()}
        if self.keys is not None:
            states["keys"] = self.keys.ensure()
        return states

    def down(self) -> dict[str, bool]:
        with ThreadPoolExecutor(len(self.servers)) as pool:
            results = {s.name: pool.submit(s.stop) for s in self.servers}
            return {name: future.result() for name, future in results.items()}

    def status(self) -> dict[str, str]:
        with ThreadPoolExecutor(len(self.servers)) as pool:
            results = {s.name: pool.submit(s.status) for s in self.servers}
            return {name: future.result() for name, future in results.items()}

    def env(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for server in self.servers:
            merged.update(server.env())
        if self.keys is not None:
            merged.update(self.keys.env())
        return merged


def local(settings: StackSettings | None = None) -> Topology:
    settings = settings or stack_settings()
    return Topology("local", [Postgres(settings), MariaDB(settings), RabbitMQ(settings)], Keys(settings.root))


TOPOLOGIES = {"local": local}
