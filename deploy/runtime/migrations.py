"""Schema migrations: versioned files applied once each, and stored functions re-applied when they change.

- ``NNNN_name.sql`` in a daemon's migrations package: tables, indexes, triggers and other
  DDL, applied in order, each once, each in its own transaction. They are history: an
  applied file is never edited.
- PostgreSQL only: one ``<function>.sql`` file per stored function in the daemon's
  functions package (``CREATE OR REPLACE FUNCTION ...``). The file is the function's one
  source of truth. After the versioned migrations, every function file whose text
  changed since it was last applied (its SHA-256 is recorded in ``functions_table``) is
  applied again, in file-name order, in one transaction; after a run that applied any
  versioned migration, every function file is (a migration may have dropped or changed
  what one depends on). Bodies are not checked at creation (``check_function_bodies``
  off, as pg_dump does), so the order never has to follow calls between functions. A
  migration that changes a function's signature or result type drops the old function;
  its file then creates the new one.

Safe with several replicas starting at once: the runner holds a database-wide lock
while it looks and applies, so the second replica waits and then finds nothing left
to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_FUNCTION = re.compile(r"^([a-z_][a-z0-9_]*)\.sql$")
_PG_LOCK_KEY = 0x7469636B6574  # "ticket": one lock for the migrations of a database


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class FunctionFile:
    """One stored function's source: its name (the file's), text and the text's SHA-256."""

    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(package: str) -> list[Migration]:
    found = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {package}: {versions}")
    return found


def discover_functions(package: str) -> list[FunctionFile]:
    """The function files of ``package`` in the order they are applied (by name)."""
    found = [FunctionFile(m.group(1), entry.read_text()) for entry in resources.files(package).iterdir()
             if (m := _FUNCTION.match(entry.name))]
    return sorted(found, key=lambda f: f.name)


async def migrate_postgres(conn: asyncpg.Connection, package: str, table: str = "schema_migrations", *,
                           functions: str | None = None, functions_table: str = "schema_functions") -> list[str]:
    """Apply pending migrations from ``package``, then changed function files from ``functions``.

    Returns the names applied (``NNNN_name`` for migrations, ``function name`` for functions).
    ``table`` and ``functions_table`` record what was applied; daemons sharing a database each
    use their own.
    """
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", _PG_LOCK_KEY)
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {table}")}
        for migration in discover(package):
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {table} (version, name) VALUES ($1, $2)", migration.version, migration.name
                )
            log.info("migration_applied", version=migration.version, name=migration.name)
            applied_now.append(f"{migration.version:04d}_{migration.name}")
        if functions is not None:
            applied_now += await _apply_functions(conn, functions, functions_table, everything=bool(applied_now))
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _PG_LOCK_KEY)
    return applied_now


async def _apply_functions(conn: asyncpg.Connection, package: str, table: str, *, everything: bool) -> list[str]:
    """Apply the function files whose text changed (all of them if ``everything``), in one transaction."""
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " name text PRIMARY KEY, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    recorded = {r["name"]: r["sha256"] for r in await conn.fetch(f"SELECT name, sha256 FROM {table}")}
    due = [f for f in discover_functions(package) if everything or recorded.get(f.name) != f.sha256]
    if not due:
        return []
    async with conn.transaction():
        await conn.execute("SET LOCAL check_function_bodies = off")
        for function in due:
            await conn.execute(function.sql)
            await conn.execute(
                f"INSERT INTO {table} (name, sha256) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, applied_at = now()",
                function.name, function.sha256)
    for function in due:
        log.info("function_applied", function=function.name, sha256=function.sha256[:12])
    return [f"function {f.name}" for f in due]


_MARIADB_LOCK = "ticketflow.migrations"


def split_statements(sql: str) -> list[str]:
    """Statements of a MariaDB migration file: each ends with ';' at the end of a line."""
    statements, current = [], []
    for line in sql.splitlines():
        if not current and (not line.strip() or line.strip().startswith("--")):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    if any(line.strip() for line in current):
        statements.append("\n".join(current))
    return statements


async def migrate_mariadb(conn, package: str) -> list[str]:
    """Apply pending migrations to MariaDB under a named lock.

    MariaDB commits DDL implicitly, so a migration that fails half-way is not
    rolled back: keep each file to statements that can be re-run
    (IF NOT EXISTS) and fix forward.
    """
    from deploy.runtime.mysql import execute, fetchall, fetchval

    applied_now = []
    if await fetchval(conn, "SELECT GET_LOCK(%s, 60)", (_MARIADB_LOCK,)) != 1:
        raise RuntimeError("could not take the migration lock within 60 s")
    try:
        await execute(conn, "CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, "
                            "name VARCHAR(200) NOT NULL, applied_at DATETIME(6) NOT NULL DEFAULT NOW(6))"
                            " ENGINE=InnoDB")
        await conn.commit()
        done = {r["version"] for r in await fetchall(conn, "SELECT version FROM schema_migrations")}
        for migration in discover(package):
            if migration.version in done:
                continue
            for statement in split_statements(migration.sql):
                await execute(conn, statement)
            await execute(conn, "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                          (migration.version, migration.name))
            await conn.commit()
            log.info("migration_applied", version=migration.version, name=migration.name)
            applied_now.append(f"{migration.version:04d}_{migration.name}")
    finally:
        await fetchval(conn, "SELECT RELEASE_LOCK(%s)", (_MARIADB_LOCK,))
    return applied_now
