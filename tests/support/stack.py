"""The project's stack as the tests see it: connection settings, per-test databases, private servers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from deploy.ops.stack.server import Server
from deploy.ops.stack.settings import StackSettings
from deploy.ops.stack.topology import local
from deploy.runtime.config import load


def stack_env() -> dict[str, str]:
    return local().env()


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port no one is using and no earlier call returned.

    Not port 0's pick: that comes from the kernel's ephemeral range, where outgoing
    connections take ports too, and a port handed out before its owner binds it can
    be handed out again (seen: a relay connecting to a daemon's HTTP port).
    """
    low, high = 20000, 32000  # below the ephemeral range (32768+), above the stack's own ports
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port between 20000 and 32000")


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free ports (rabbitmqctl wants a range), handed out like free_port."""
    for _ in range(1000):
        first = random.randint(20000, 32000 - count)
        block = range(first, first + count)
        if _handed_out.intersection(block):
            continue
        try:
            for port in block:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.update(block)
        return first
    raise RuntimeError(f"no {count} consecutive free ports between 20000 and 32000")


@contextlib.asynccontextmanager
async def private_server(kind: str, root: Path) -> AsyncIterator[Server]:
    """One server of ``kind`` (postgres, mariadb, rabbitmq) of the test's own, up and answering.

    For tests that stop or restart a server: the shared stack's servers serve every
    other test at the same time and are never disturbed. It has its own directory
    (``root``) and ports, the stack's usual user, password and database, and is
    stopped and its data removed afterwards. ``server.up()`` / ``server.stop()``
    restart it; ``server.env()`` (or ``dsn()``, ``url()``) says how to reach it.
    """
    env = {"TICKETFLOW_STACK_DIR": str(root)}
    if kind == "postgres":
        env["TICKETFLOW_STACK_PG_PORT"] = str(free_port())
    elif kind == "mariadb":
        env["TICKETFLOW_STACK_MARIADB_PORT"] = str(free_port())
    elif kind == "rabbitmq":
        env.update(TICKETFLOW_STACK_AMQP_PORT=str(free_port()), TICKETFLOW_STACK_AMQP_DIST_PORT=str(free_port()),
                   TICKETFLOW_STACK_EPMD_PORT=str(free_port()),
                   TICKETFLOW_STACK_CTL_PORT_MIN=str(free_port_block(10)))
    else:
        raise ValueError(f"no server kind {kind!r}")
    server = local(load(StackSettings, env)).server(kind)
    try:
        await asyncio.to_thread(server.up)
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        # A service user that cannot traverse ``root`` keeps the data under /var/lib/ticketflow
        # (Server.private_dir), linked from ``root``: remove it there too.
        for link in root.glob("*/private"):
            shutil.rmtree(link.resolve().parent, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


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


@contextlib.asynccontextmanager
async def fresh_mariadb_database(prefix: str = "tf_test") -> AsyncIterator[str]:
    """A new, empty MariaDB database for one test; dropped afterwards."""
    import aiomysql

    server = local().server("mariadb")
    settings = server.settings
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await aiomysql.connect(host="127.0.0.1", port=settings.mariadb_port, user=settings.user,
                                      password=settings.password, autocommit=True, connect_timeout=10)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
        finally:
            conn.close()

    await admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield server.dsn(name)  # type: ignore[attr-defined]
    finally:
        await admin(f"DROP DATABASE IF EXISTS `{name}`")


def private_server_fixture(kind: str):
    """A fixture giving the test a ``private_server(kind)``: ``private_postgres = private_server_fixture("postgres")``."""

    @pytest.fixture
    async def server(tmp_path):
        async with private_server(kind, tmp_path / f"private-{kind}") as started:
            yield started

    return server
