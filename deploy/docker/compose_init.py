"""docker-compose.yml's ``init`` service: the shared secrets and the PostgreSQL database, then it exits.

- the token signing key pair and a service token per daemon (``ticketflow keys ensure``'s ``Keys``) under
  ``$TICKETFLOW_STACK_DIR/keys`` (the ``keys`` volume every daemon mounts read-only);
- the database ``TICKETFLOW_DB_NAME`` on the Patroni cluster's primary, through HAProxy (Galera's is created by
  the node that bootstraps it), waiting for a primary up to ``TICKETFLOW_INIT_TIMEOUT`` seconds;
- every RabbitMQ node of ``TICKETFLOW_AMQP_URLS`` accepting an AMQP connection (a joining node opens its
  listener only once it is in the cluster): the daemons declare their quorum queues when they start, with the
  cluster's nodes of that moment as members, so a queue declared before the last node joined would have two
  members and lose its majority with one node (found by tests/compose: the portal's queue on 2 of 3 nodes);
- LAST, the links' shared secret, ``keys/link.secret``, made once: the image's entry point exports it and waits
  for it, so its existence also says that the steps before it are done.
Every step is idempotent: a second ``up`` keeps what exists.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

import asyncpg

from deploy.ops.stack.keys import Keys
from deploy.runtime.amqp import node_label, url_list


def ensure_link_secret(directory: Path) -> str:
    path = directory / "link.secret"
    if path.exists():
        return "present"
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32))
    os.replace(path.with_suffix(".tmp"), path)
    return "created"


async def ensure_database(dsn: str, name: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=3)
            try:
                if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                    return "present"
                await conn.execute(f'CREATE DATABASE "{name}"')
                return "created"
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"init: no PostgreSQL primary within {timeout:.0f}s ({exc!r})") from None
            await asyncio.sleep(1)


async def wait_for_rabbitmq(urls: list[str], timeout: float) -> str:
    import aio_pika

    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            try:
                connection = await aio_pika.connect(url, timeout=3)
                await connection.close()
                break
            except Exception as exc:  # noqa: BLE001 -- not booted (or not joined) yet: wait, bounded
                if time.monotonic() > deadline:
                    raise SystemExit(f"init: RabbitMQ node {node_label(url)} not up within {timeout:.0f}s "
                                     f"({type(exc).__name__})") from None
                await asyncio.sleep(1)
    return f"{len(urls)} nodes up"


def main() -> None:
    root = Path(os.environ.get("TICKETFLOW_STACK_DIR", "/var/lib/ticketflow"))
    keys = Keys(root)
    print(f"init: keys {keys.ensure()}", flush=True)
    database = asyncio.run(ensure_database(os.environ["TICKETFLOW_INIT_PG_DSN"], os.environ["TICKETFLOW_DB_NAME"],
                                           float(os.environ.get("TICKETFLOW_INIT_TIMEOUT", "300"))))
    print(f"init: database {database}", flush=True)
    urls = url_list(os.environ.get("TICKETFLOW_AMQP_URL", ""), os.environ.get("TICKETFLOW_AMQP_URLS", ""))
    if any(urls):
        rabbit = asyncio.run(wait_for_rabbitmq(urls, float(os.environ.get("TICKETFLOW_INIT_TIMEOUT", "300"))))
        print(f"init: rabbitmq {rabbit}", flush=True)
    print(f"init: link secret {ensure_link_secret(keys.dir)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
