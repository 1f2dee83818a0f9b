"""`ticketflow stack` end to end, on a private stack (own directory, own ports).

The shared stack that other tests use is left alone: this one is created,
taken down and brought back by the test itself.
"""

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import aiomysql
import asyncpg
import pytest

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PORTS = {
    "TICKETFLOW_STACK_PG_PORT": "18432",
    "TICKETFLOW_STACK_MARIADB_PORT": "18306",
    "TICKETFLOW_STACK_AMQP_PORT": "18672",
    "TICKETFLOW_STACK_AMQP_DIST_PORT": "18682",
    "TICKETFLOW_STACK_EPMD_PORT": "18369",
    "TICKETFLOW_STACK_CTL_PORT_MIN": "18690",
}


@pytest.fixture
def private_stack(tmp_path):
    env = dict(os.environ, TICKETFLOW_STACK_DIR=str(tmp_path / "stack"), **PORTS)

    def ticketflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "deploy.ops.cli", "stack", *args], env=env, capture_output=True, text=True, timeout=180
        )

    yield ticketflow
    ticketflow("down")
    # When the test directory is not traversable by the service users, the data
    # lives under /var/lib/ticketflow (see Server.private_dir): remove it too.
    for link in (tmp_path / "stack").glob("*/private"):
        shutil.rmtree(link.resolve().parent, ignore_errors=True)


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


async def write_marks(urls: dict[str, str]) -> None:
    pg = await asyncpg.connect(urls["TICKETFLOW_PG_DSN"])
    await pg.execute("CREATE TABLE marks (v text); INSERT INTO marks VALUES ('pg survived')")
    await pg.close()
    my = await aiomysql.connect(host="127.0.0.1", port=int(PORTS["TICKETFLOW_STACK_MARIADB_PORT"]),
                                user="ticketflow", password="ticketflow", db="ticketflow", autocommit=True)
    async with my.cursor() as cur:
        await cur.execute("CREATE TABLE marks (v VARCHAR(40)) ENGINE=InnoDB")
        await cur.execute("INSERT INTO marks VALUES ('mariadb survived')")
    my.close()
    amqp = await aio_pika.connect(urls["TICKETFLOW_AMQP_URL"])
    channel = await amqp.channel()
    await channel.declare_queue("marks", durable=True)
    await channel.default_exchange.publish(
        aio_pika.Message(b"rabbitmq survived", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="marks"
    )
    await amqp.close()


async def read_marks(urls: dict[str, str]) -> list[str]:
    pg = await asyncpg.connect(urls["TICKETFLOW_PG_DSN"])
    found = [await pg.fetchval("SELECT v FROM marks")]
    await pg.close()
    my = await aiomysql.connect(host="127.0.0.1", port=int(PORTS["TICKETFLOW_STACK_MARIADB_PORT"]),
                                user="ticketflow", password="ticketflow", db="ticketflow")
    async with my.cursor() as cur:
        await cur.execute("SELECT v FROM marks")
        found.append((await cur.fetchone())[0])
    my.close()
    amqp = await aio_pika.connect(urls["TICKETFLOW_AMQP_URL"])
    channel = await amqp.channel()
    queue = await channel.declare_queue("marks", durable=True)
    message = await queue.get(timeout=5)
    found.append(message.body.decode())
    await amqp.close()
    return found


def test_up_twice_status_down_up_keeps_data(private_stack):
    first = private_stack("up")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("initialised and started") == 3, first.stdout

    started = time.monotonic()
    again = private_stack("up")
    took = time.monotonic() - started
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already up") == 3, again.stdout
    print(f"second `stack up` took {took:.2f}s")

    status = private_stack("status")
    assert status.returncode == 0 and status.stdout.count(" up (pid") == 3, status.stdout

    urls = parse_env(private_stack("env").stdout)
    assert set(urls) == {"TICKETFLOW_PG_DSN", "TICKETFLOW_MARIADB_DSN", "TICKETFLOW_AMQP_URL",
                         "TICKETFLOW_TOKEN_SIGNING_KEY", "TICKETFLOW_TOKEN_PUBLIC_KEYS", "TICKETFLOW_SERVICE_TOKEN_FILE"}
    assert all(PORTS[k] in urls[v] for k, v in [
        ("TICKETFLOW_STACK_PG_PORT", "TICKETFLOW_PG_DSN"),
        ("TICKETFLOW_STACK_MARIADB_PORT", "TICKETFLOW_MARIADB_DSN"),
        ("TICKETFLOW_STACK_AMQP_PORT", "TICKETFLOW_AMQP_URL"),
    ])
    asyncio.run(write_marks(urls))

    down = private_stack("down")
    assert down.returncode == 0 and down.stdout.count("stopped") == 3, down.stdout
    status = private_stack("status")
    assert status.returncode == 3 and status.stdout.count("down") == 3, status.stdout

    back = private_stack("up")
    assert back.returncode == 0, back.stderr
    assert back.stdout.count("started") == 3 and "initialised" not in back.stdout, back.stdout
    assert asyncio.run(read_marks(urls)) == ["pg survived", "mariadb survived", "rabbitmq survived"]


def test_a_bad_port_value_names_the_variable(tmp_path):
    env = dict(os.environ, TICKETFLOW_STACK_DIR=str(tmp_path), TICKETFLOW_STACK_PG_PORT="eighty")
    result = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "stack", "status"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "TICKETFLOW_STACK_PG_PORT" in result.stderr


def test_status_of_a_stack_never_started_is_down_without_side_effects(tmp_path):
    env = dict(os.environ, TICKETFLOW_STACK_DIR=str(tmp_path / "never"), **PORTS)
    result = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "stack", "status"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 3 and result.stdout.count("down") == 3


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; this test process just has not reaped it


async def test_a_private_server_is_its_own_and_leaves_nothing_behind(tmp_path):
    from tests.support.stack import private_server, stack_env

    root = tmp_path / "private"
    async with private_server("postgres", root) as postgres:
        assert postgres.dsn() != stack_env()["TICKETFLOW_PG_DSN"], "it is the shared stack's server"
        conn = await asyncpg.connect(postgres.dsn())
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        pid, data = postgres.pid(), postgres.data
        assert pid is not None and data.is_dir()
    assert not process_alive(pid), "the server still runs"
    assert not data.exists() and not root.exists(), "its files are left behind"
    with pytest.raises(OSError):
        await asyncpg.connect(postgres.dsn(), timeout=2)
