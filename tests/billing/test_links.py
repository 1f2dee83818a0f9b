"""The reservation -> billing link between real daemons: TLS from TICKETFLOW_* settings, and a
receiver behind the sender's retention reported on /ready and by `ticketflow status`, then
resolved with `ticketflow link advance`."""

import asyncio
import json
import os
import ssl
import subprocess
import sys

import aiohttp
import asyncpg

from tests.billing.conftest import hold_one
from tests.helpers import wait_until
from tests.support.tls import throwaway_cert


async def billing_position(pipeline) -> int:
    rows = await pipeline.maria("SELECT position FROM stream_positions WHERE stream = 'reservations'")
    return int(rows[0]["position"]) if rows else 0


async def reservation_head(pipeline) -> tuple[int, int]:
    conn = await asyncpg.connect(pipeline.pg_dsn)
    try:
        row = await conn.fetchrow("SELECT last_seq, acked_seq FROM stream_heads WHERE stream = 'reservations'")
        return row["last_seq"], row["acked_seq"]
    finally:
        await conn.close()


async def test_reservation_relays_to_billing_over_tls(pipeline, tmp_path):
    cert, key = throwaway_cert(tmp_path, name="billing.link")
    billing = await pipeline.billing(TICKETFLOW_LINK_TLS_CERT=str(cert), TICKETFLOW_LINK_TLS_KEY=str(key))
    # The certificate names billing.link, not the address dialled: the server-name setting says what to check.
    reservation = await pipeline.reservation(TICKETFLOW_LINK_TLS_CA=str(cert),
                                             TICKETFLOW_LINK_TLS_SERVER_NAME="billing.link")
    await hold_one(reservation, "tls-buyer")
    await wait_until(lambda: _positive(billing_position(pipeline)), 20, "the hold reaching billing over TLS")
    assert any('"link_accepted"' in line for line in billing.process.log_lines())
    # The port really speaks TLS with that certificate (a plain link would pass everything above).
    reader, writer = await asyncio.open_connection("127.0.0.1", pipeline.billing_link,
                                                   ssl=ssl.create_default_context(cafile=str(cert)),
                                                   server_hostname="billing.link")
    assert writer.get_extra_info("peercert")["subject"] == ((("commonName", "billing.link"),),)
    writer.close()


async def _positive(value) -> bool:
    return await value > 0


def cli(pipeline, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TICKETFLOW_PG_DSN": pipeline.pg_dsn, "TICKETFLOW_MARIADB_DSN": pipeline.maria_dsn,
           "TICKETFLOW_RESERVATION_PORT": pipeline.reservation_port, "TICKETFLOW_BILLING_PORT": pipeline.billing_port}
    return subprocess.run([sys.executable, "-c", "import sys; from deploy.ops.cli import main; sys.exit(main())", *args],
                          env=env, capture_output=True, text=True, timeout=60)


async def test_a_billing_restored_from_an_old_backup_is_reported_and_advanced_by_the_operator(pipeline):
    reservation = await pipeline.reservation()
    billing = await pipeline.billing()
    pipeline.reservation_port = reservation.api.base_url.rsplit(":", 1)[1]
    pipeline.billing_port = billing.api.base_url.rsplit(":", 1)[1]
    for i in range(3):
        await hold_one(reservation, f"buyer-{i}")

    async def all_acked() -> bool:
        last, acked = await reservation_head(pipeline)
        return last > 0 and acked == last
    await wait_until(all_acked, 20, "every reservation event acknowledged by billing")
    head, _ = await reservation_head(pipeline)

    # Billing is restored from a backup taken before any of it; the producer has pruned what billing acked.
    billing.process.kill()
    await pipeline.maria("UPDATE stream_positions SET position = 0 WHERE stream = 'reservations'")
    conn = await asyncpg.connect(pipeline.pg_dsn)
    try:
        await conn.execute("DELETE FROM outbox WHERE seq <= $1", head)
    finally:
        await conn.close()
    await billing.process.start_ready()

    async def ready_problem():
        async with aiohttp.ClientSession() as http:
            async with http.get(reservation.api.base_url + "/ready") as r:
                return r.status, (await r.json())["checks"].get("link")
    await wait_until(lambda: _status_is(ready_problem(), 503), 20, "reservation's /ready going false")
    status, problem = await ready_problem()
    assert problem == {"stream": "reservations", "error": "POSITION_BEHIND_RETENTION", "receiver_position": 0,
                       "oldest_retained": head + 1, "missing": head, "advance_to": head}
    errors = [json.loads(line) for line in reservation.process.log_lines() if '"link_position_behind_retention"' in line]
    assert errors and errors[0]["level"] == "error" and errors[0]["stream"] == "reservations"
    assert (errors[0]["receiver_position"], errors[0]["oldest_retained"]) == (0, head + 1)

    report = cli(pipeline, "status", "--json")
    assert report.returncode == 3, report.stderr
    assert json.loads(report.stdout)["link_problems"]["reservation-billing"]["missing"] == head
    text = cli(pipeline, "status").stdout
    assert f"RECEIVER BEHIND RETENTION by {head} events" in text and "reservation -> billing" in text

    # Not by accident: a wrong position, or no --confirm, changes nothing.
    wrong = cli(pipeline, "link", "advance", "--link", "reservation-billing", "--to", str(head + 5), "--confirm")
    assert wrong.returncode == 1 and f"must be exactly {head}" in wrong.stdout
    dry = cli(pipeline, "link", "advance", "--link", "reservation-billing", "--to", str(head))
    assert dry.returncode == 1 and "Nothing changed" in dry.stdout, dry.stdout + dry.stderr
    assert await billing_position(pipeline) == 0

    done = cli(pipeline, "link", "advance", "--link", "reservation-billing", "--to", str(head), "--confirm")
    assert done.returncode == 0, done.stdout + done.stderr
    assert await billing_position(pipeline) == head
    await wait_until(lambda: _status_is(ready_problem(), 200), 20, "reservation's /ready recovering")
    await hold_one(reservation, "after-repair")
    await wait_until(lambda: _above(billing_position(pipeline), head), 20, "new events flowing again")
    again = cli(pipeline, "link", "advance", "--link", "reservation-billing", "--to", str(head), "--confirm")
    assert again.returncode == 1 and "no retention gap" in again.stdout


async def _status_is(reply, status: int) -> bool:
    return (await reply)[0] == status


async def _above(value, floor: int) -> bool:
    return await value > floor
