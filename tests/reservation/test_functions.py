"""Stored functions live one per file and the migrator re-applies a file when its text changes."""

import json
import shutil
from importlib import resources
from pathlib import Path

import asyncpg
import pytest

from deploy.runtime.migrations import migrate_postgres
from tests.support.stack import fresh_pg_database

pytestmark = pytest.mark.stack


def _package(root: Path, name: str, files: dict[str, str]) -> str:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    for file, text in files.items():
        (folder / file).write_text(text)
    return name


def _function(name: str, body: str) -> str:
    return f"CREATE OR REPLACE FUNCTION {name}() RETURNS int LANGUAGE sql AS $$ {body} $$;\n"


@pytest.fixture
async def conn():
    async with fresh_pg_database("tf_fn") as dsn:
        connection = await asyncpg.connect(dsn)
        await connection.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        try:
            yield connection
        finally:
            await connection.close()


async def test_a_changed_function_file_is_applied_again_and_an_unchanged_one_is_not(conn, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    migrations = _package(tmp_path, "fn_case_migrations", {"0001_table.sql": "CREATE TABLE t (x int);"})
    # a_caller calls z_callee, which a fresh database only gets later in file order.
    functions = _package(tmp_path, "fn_case_functions", {
        "a_caller.sql": _function("a_caller", "SELECT z_callee() + 1"),
        "f_answer.sql": _function("f_answer", "SELECT 1"),
        "z_callee.sql": _function("z_callee", "SELECT 10"),
    })
    first = await migrate_postgres(conn, migrations, functions=functions)
    assert first == ["0001_table", "function a_caller", "function f_answer", "function z_callee"]
    assert await conn.fetchval("SELECT a_caller()") == 11
    stamps = dict(await conn.fetch("SELECT name, applied_at FROM schema_functions"))

    assert await migrate_postgres(conn, migrations, functions=functions) == [], "nothing changed: nothing applied"
    assert dict(await conn.fetch("SELECT name, applied_at FROM schema_functions")) == stamps

    (tmp_path / functions / "f_answer.sql").write_text(_function("f_answer", "SELECT 2"))
    (tmp_path / functions / "g_new.sql").write_text(_function("g_new", "SELECT 3"))
    assert await migrate_postgres(conn, migrations, functions=functions) == ["function f_answer", "function g_new"]
    assert (await conn.fetchval("SELECT f_answer()"), await conn.fetchval("SELECT g_new()")) == (2, 3)
    after = dict(await conn.fetch("SELECT name, applied_at FROM schema_functions"))
    assert after["a_caller"] == stamps["a_caller"] and after["f_answer"] > stamps["f_answer"]


async def test_a_new_migration_applies_every_function_file_again(conn, tmp_path, monkeypatch):
    """A migration may drop a function (to change its result type): its file brings it back."""
    monkeypatch.syspath_prepend(str(tmp_path))
    migrations = _package(tmp_path, "fn_drop_migrations", {"0001_table.sql": "CREATE TABLE t (x int);"})
    functions = _package(tmp_path, "fn_drop_functions", {"f_answer.sql": _function("f_answer", "SELECT 1")})
    await migrate_postgres(conn, migrations, functions=functions)
    (tmp_path / migrations / "0002_drop.sql").write_text("DROP FUNCTION f_answer();")
    assert await migrate_postgres(conn, migrations, functions=functions) == ["0002_drop", "function f_answer"]
    assert await conn.fetchval("SELECT f_answer()") == 1


async def test_a_failing_function_file_applies_none_and_records_nothing(conn, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    migrations = _package(tmp_path, "fn_fail_migrations", {"0001_table.sql": "CREATE TABLE t (x int);"})
    functions = _package(tmp_path, "fn_fail_functions", {"a_fine.sql": _function("a_fine", "SELECT 1"),
                                                          "b_broken.sql": "CREATE FUNCTION nonsense"})
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await migrate_postgres(conn, migrations, functions=functions)
    assert await conn.fetchval("SELECT count(*) FROM schema_functions") == 0
    assert await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'a_fine'") == 0
    (tmp_path / functions / "b_broken.sql").write_text(_function("b_broken", "SELECT 2"))
    assert await migrate_postgres(conn, migrations, functions=functions) == ["function a_fine", "function b_broken"]


async def test_a_database_migrated_before_the_function_files_gets_their_text_and_keeps_its_keys(
        conn, tmp_path, monkeypatch):
    """Upgrade: 0001-0006 applied (functions as those migrations left them, Idempotency-Keys
    stored as HTTP answers); then the current migrator. The files' text wins, and a key
    stored before replays the same answer."""
    monkeypatch.syspath_prepend(str(tmp_path))
    source = resources.files("reservation_daemon.migrations")
    old = tmp_path / "fn_old_reservation"
    old.mkdir()
    (old / "__init__.py").write_text("")
    for entry in source.iterdir():
        if entry.name.endswith(".sql") and int(entry.name[:4]) <= 6:
            shutil.copy(str(entry), old / entry.name)
    await migrate_postgres(conn, "fn_old_reservation")
    event = await conn.fetchval("INSERT INTO events (id, name, venue, starts_at) VALUES"
                                " (gen_random_uuid(), 'e', 'v', now()) RETURNING id")
    seat = await conn.fetchval("INSERT INTO seats (event_id, section, row_number, seat_number, label, price_minor,"
                               " currency) VALUES ($1, 'A', 1, 1, 'A-1-1', 100, 'EUR') RETURNING id", event)
    hold = "SELECT * FROM tf_reserve(gen_random_uuid(), NULL, ARRAY[$1::uuid], 'u', interval '10 minutes', 's', $2, 'h')"
    won = await conn.fetchrow(hold, seat, "k1")
    lost = await conn.fetchrow(hold, seat, "k2")
    assert (won["status"], lost["status"]) == (201, 409)

    applied = await migrate_postgres(conn, "reservation_daemon.migrations",
                                     functions="reservation_daemon.sql.functions")
    assert applied[0] == "0007_functions_in_files" and "function tf_reserve" in applied
    replay_won, replay_lost = await conn.fetchrow(hold, seat, "k1"), await conn.fetchrow(hold, seat, "k2")
    assert (replay_won["outcome"], replay_won["body"]) == ("held", won["body"])
    assert (replay_lost["outcome"], replay_lost["body"]) == ("seat_unavailable", lost["body"]["error"]["details"])
    # Every function file's text is what the database runs now.
    for entry in resources.files("reservation_daemon.sql.functions").iterdir():
        if entry.name.endswith(".sql"):
            name = entry.name[:-4]
            assert await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname = $1", name) == 1, name
    assert await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'tf_error'") == 0
