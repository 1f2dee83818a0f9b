"""A private PostgreSQL server (15 or newer) from Debian's binaries, run as ``postgres``."""

from __future__ import annotations

import glob
import re
import tempfile
from pathlib import Path

import asyncpg

from deploy.ops.stack.server import Server, StackError, ensure_system_user

MIN_VERSION = 15


def _bindir() -> Path:
    found = []
    for path in glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        match = re.search(r"/postgresql/(\d+)/bin/", path)
        if match and int(match.group(1)) >= MIN_VERSION:
            found.append((int(match.group(1)), Path(path).parent))
    if not found:
        raise StackError(f"no PostgreSQL {MIN_VERSION}+ server binaries under /usr/lib/postgresql")
    return max(found)[1]


class Postgres(Server):
    name = "postgres"
    packages = {"postgresql": [f"/usr/lib/postgresql/{v}/bin/postgres" for v in range(MIN_VERSION, 30)]}
    run_as = "postgres"
    stop_signal = "SIGINT"  # "fast" shutdown: roll back open transactions, checkpoint, exit

    @property
    def data(self) -> Path:
        return self.private_dir("data")

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def initialize(self) -> None:
        ensure_system_user("postgres")
        data = self.data
        with tempfile.NamedTemporaryFile("w", dir="/tmp", prefix="tf-pw-") as pwfile:
            pwfile.write(self.settings.password + "\n")
            pwfile.flush()
            Path(pwfile.name).chmod(0o644)  # initdb runs as postgres and must read it
            self.run_setup([
                str(_bindir() / "initdb"), "-D", str(data), "-U", self.settings.user,
                f"--pwfile={pwfile.name}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--no-locale",
            ])

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        return [
            str(_bindir() / "postgres"), "-D", str(self.data),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self.settings.pg_port}",
            # TCP only: a socket path inside a deep checkout can exceed the 107-byte limit.
            "-c", "unix_socket_directories=",
            "-c", "max_connections=400",
            "-c", "shared_buffers=128MB",
            "-c", "log_min_messages=warning",
        ], None

    def dsn(self, database: str | None = None) -> str:
        s = self.settings
        return f"postgresql://{s.user}:{s.password}@127.0.0.1:{s.pg_port}/{database or s.database}"

    async def probe(self) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=3)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    async def after_ready(self) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=5)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.settings.database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.settings.database}"')
        finally:
            await conn.close()

    def env(self) -> dict[str, str]:
        return {"TICKETFLOW_PG_DSN": self.dsn()}
