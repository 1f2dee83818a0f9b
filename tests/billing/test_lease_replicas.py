"""Two billing replicas and the relay lease: one relay at a time, through a pause and a kill (issue 12).

Rows are written straight into the outbox (as a writer's transaction would) while both
replicas' /ready are sampled. The holder is paused with SIGSTOP past the lease's TTL:
the other takes over after the expiry, and the paused one, once woken, must stop at
its first check without relaying again. Then the new holder is SIGKILLed and the woken
one takes the lease back after it expired. At the end the bridge stand-in has every
row exactly once, in a gap-free sequence.

Runs on one local MariaDB; the same row logic is what Galera certifies across nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import aiohttp
import pytest

from tests.helpers import wait_until

pytestmark = pytest.mark.slow

TTL, RENEW = "1.5", "0.25"
LEASE_ENV = {"TICKETFLOW_BILLING_RELAY_LEASE_SECONDS": TTL, "TICKETFLOW_BILLING_RELAY_LEASE_RENEW_SECONDS": RENEW}


async def relay_state(session: aiohttp.ClientSession, service) -> str | None:
    """'active', 'standby', or None if the replica did not answer (paused, dead)."""
    try:
        async with session.get(f"{service.api.base_url}/ready", timeout=aiohttp.ClientTimeout(total=0.3)) as r:
            return (await r.json())["checks"]["relay"]
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return None


def log_events(service, start: int = 0) -> list[dict]:
    events = []
    for line in service.process.log_lines()[start:]:
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


async def test_two_replicas_never_relay_at_once_through_a_paused_and_a_killed_holder(pipeline):
    a, b = await pipeline.billing(**LEASE_ENV), await pipeline.billing(**LEASE_ENV)
    pipeline.start_bridge_stand_in()
    written: list[str] = []
    samples: list[tuple[str | None, str | None]] = []
    stop = asyncio.Event()

    async def write_load() -> None:  # a writer's rows, unnumbered: the active relay numbers and sends them
        while not stop.is_set():
            marker = str(uuid.uuid4())
            await pipeline.maria("INSERT INTO outbox (stream, event_id, type, data, created_at) VALUES"
                                 " ('payments', %s, 'ticket.checked_in', %s, NOW(6))",
                                 (marker, json.dumps({"id": marker})))
            written.append(marker)
            await asyncio.sleep(0.02)  # load pacing, not synchronisation

    async with aiohttp.ClientSession() as session:
        async def sample() -> None:
            while not stop.is_set():
                samples.append(tuple(await asyncio.gather(relay_state(session, a), relay_state(session, b))))

        async def delivered_more(than: int) -> bool:
            return len(await pipeline.bridge_events()) > than

        async def active(service) -> bool:
            return await relay_state(session, service) == "active"

        async def one_active() -> bool:
            return sorted([await relay_state(session, a), await relay_state(session, b)]) == ["active", "standby"]

        await wait_until(one_active, 15, "exactly one replica taking the relay lease")
        tasks = [asyncio.create_task(write_load()), asyncio.create_task(sample())]
        try:
            await wait_until(lambda: delivered_more(20), 15, "the first holder relaying")
            holder, other = (a, b) if await active(a) else (b, a)

            # 1. The holder freezes (SIGSTOP) past the TTL: the other takes over after expiry.
            paused_at = time.monotonic()
            os.kill(holder.process.proc.pid, signal.SIGSTOP)
            try:
                await wait_until(lambda: active(other), 15, "the standby taking over from the paused holder")
                took_over_after = time.monotonic() - paused_at
                seen = len(await pipeline.bridge_events())
                await wait_until(lambda: delivered_more(seen + 20), 15, "the new holder relaying")
            finally:
                woke_from = len(holder.process.log_lines())
                os.kill(holder.process.proc.pid, signal.SIGCONT)
            # Not before the lease expired: its last renewal was at most one renew interval before the pause.
            assert took_over_after >= float(TTL) - 2 * float(RENEW), f"taken over {took_over_after:.2f}s into a {TTL}s lease"

            # 2. Woken, it finds its lease expired by its own clock and stands by.
            def lost_on_waking() -> bool:
                return any(e.get("event") == "relay_lease_lost" for e in log_events(holder, woke_from))

            await wait_until(lost_on_waking, 10, "the woken holder noticing its lease is gone")
            async def standby(service) -> bool:
                return await relay_state(session, service) == "standby"

            await wait_until(lambda: standby(holder), 10, "the woken holder reporting standby")
            seen = len(await pipeline.bridge_events())
            await wait_until(lambda: delivered_more(seen + 20), 15, "the new holder still relaying")
            after_wake = [e.get("event") for e in log_events(holder, woke_from)]
            assert "relay_active" not in after_wake and "link_up" not in after_wake, (
                f"the paused holder relayed again after waking: {after_wake}")

            # 3. The new holder dies without giving the lease up: the woken one takes it after expiry.
            other.process.kill()
            await wait_until(lambda: active(holder), 15, "the first holder taking the lease back after a SIGKILL")
            seen = len(await pipeline.bridge_events())
            await wait_until(lambda: delivered_more(seen + 20), 15, "relaying after the takeover")
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def all_delivered() -> bool:
        return len(await pipeline.bridge_events()) >= len(written)

    await wait_until(all_delivered, 20, f"all {len(written)} rows reaching the bridge stand-in")
    events = await pipeline.bridge_events()
    assert [e["seq"] for e in events] == list(range(1, len(written) + 1)), "a gap or a repeat in the stream"
    assert sorted(e["data"]["id"] for e in events) == sorted(written), "a row missing or sent twice"
    assert not [s for s in samples if s == ("active", "active")], "both replicas relaying at once"
    assert any(s[0] == "active" for s in samples) and any(s[1] == "active" for s in samples)
    lease = (await pipeline.maria("SELECT epoch FROM relay_leases WHERE stream = 'payments'"))[0]
    assert lease["epoch"] == 3, "one take each: the first holder, the standby, the first holder again"
