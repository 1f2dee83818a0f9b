"""The project's stack as the tests see it: connection settings and per-test databases."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator

import asyncpg

from deploy.stack.topology import local


def stack_env() -> dict[str, str]:
    return local().env()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_dsn(database: str) -> str:
    return local().server("postgres").dsn(database)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def fresh_pg_database(prefix: str = "tf_test") -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(pg_dsn("postgres"), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(f"the stack's PostgreSQL is not reachable ({exc!r}): run `ticketflow stack up` "
                           "(make test does it for you)") from None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield pg_dsn(name)
    finally:
        admin = await asyncpg.connect(pg_dsn("postgres"), timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
