"""Two billing replicas and the relay lease through a paused and a killed holder: the scenario shared by
tests/billing/test_lease_replicas.py (one MariaDB) and tests/ha/test_galera_lease.py (two Galera nodes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import aiohttp

from tests.helpers import wait_until

TTL, RENEW = "1.5", "0.25"
LEASE_ENV = {"TICKETFLOW_BILLING_RELAY_LEASE_SECONDS": TTL, "TICKETFLOW_BILLING_RELAY_LEASE_RENEW_SECONDS": RENEW}


async def relay_state(session: aiohttp.ClientSession, service) -> str | None:
    """'active', 'standby', or None if the replica did not answer (paused, dead)."""
    try:
        async with session.get(f"{service.api.base_url}/ready", timeout=aiohttp.ClientTimeout(total=0.3)) as r:
            return (await r.json())["checks"]["relay"]
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError):
        return None


def log_events(service, start: int = 0) -> list[dict]:
    events = []
    for line in service.process.log_lines()[start:]:
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


async def relay_through_pause_and_kill(pipeline, session: aiohttp.ClientSession, a, b) -> dict:
    """Two started billing replicas ``a`` and ``b``; write load through ``pipeline.maria``, relay states sampled.

    The holder is SIGSTOPped past the TTL (the other takes over after the expiry; the woken
    holder stands by without relaying again), then the new holder is SIGKILLed (the woken one
    takes the lease back). Asserts: never both active, each active at some point, three takes,
    and the bridge stand-in has every row once, gap-free, in write order (the load is one
    connection writing one row per transaction, so write order is commit order). Returns figures.
    """
    start_seq = (await pipeline.maria("SELECT last_seq FROM stream_heads WHERE stream = 'payments'"))[0]["last_seq"]
    assert start_seq == 0, "a fresh stream"
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

    async def sample() -> None:
        while not stop.is_set():
            samples.append(tuple(await asyncio.gather(relay_state(session, a), relay_state(session, b))))

    async def delivered_more(than: int) -> bool:
        return len(await pipeline.bridge_events()) > than

    async def is_(service, state: str) -> bool:
        return await relay_state(session, service) == state

    async def one_active() -> bool:
        return sorted([await relay_state(session, a), await relay_state(session, b)]) == ["active", "standby"]

    await wait_until(one_active, 20, "exactly one replica taking the relay lease")
    first_epoch = (await pipeline.maria("SELECT epoch FROM relay_leases WHERE stream = 'payments'"))[0]["epoch"]
    tasks = [asyncio.create_task(write_load()), asyncio.create_task(sample())]
    try:
        await wait_until(lambda: delivered_more(20), 20, "the first holder relaying")
        holder, other = (a, b) if await is_(a, "active") else (b, a)

        # 1. The holder freezes (SIGSTOP) past the TTL: the replica on the other node takes over after expiry.
        paused_at = time.monotonic()
        os.kill(holder.process.proc.pid, signal.SIGSTOP)
        try:
            await wait_until(lambda: is_(other, "active"), 20, "the standby taking over from the paused holder")
            took_over_after = time.monotonic() - paused_at
            seen = len(await pipeline.bridge_events())
            await wait_until(lambda: delivered_more(seen + 20), 20, "the new holder relaying")
        finally:
            woke_from = len(holder.process.log_lines())
            os.kill(holder.process.proc.pid, signal.SIGCONT)
        # Not before the lease expired: its last renewal was at most one renew interval before the pause.
        assert took_over_after >= float(TTL) - 2 * float(RENEW), f"taken over {took_over_after:.2f}s into {TTL}s"

        # 2. Woken, it finds its lease expired by its own clock and stands by, without relaying again.
        def lost_on_waking() -> bool:
            return any(e.get("event") == "relay_lease_lost" for e in log_events(holder, woke_from))

        await wait_until(lost_on_waking, 10, "the woken holder noticing its lease is gone")
        await wait_until(lambda: is_(holder, "standby"), 10, "the woken holder reporting standby")
        seen = len(await pipeline.bridge_events())
        await wait_until(lambda: delivered_more(seen + 20), 20, "the new holder still relaying")
        after_wake = [e.get("event") for e in log_events(holder, woke_from)]
        assert "relay_active" not in after_wake and "link_up" not in after_wake, (
            f"the paused holder relayed again after waking: {after_wake}")

        # 3. The new holder dies without giving the lease up: the woken one takes it after expiry.
        killed_at = time.monotonic()
        other.process.kill()
        await wait_until(lambda: is_(holder, "active"), 20, "the first holder taking the lease back after a SIGKILL")
        retaken_after = time.monotonic() - killed_at
        seen = len(await pipeline.bridge_events())
        await wait_until(lambda: delivered_more(seen + 20), 20, "relaying after the takeover")
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def all_delivered() -> bool:
        return len(await pipeline.bridge_events()) >= len(written)

    await wait_until(all_delivered, 30, f"all {len(written)} rows reaching the bridge stand-in")
    events = await pipeline.bridge_events()
    assert [e["seq"] for e in events] == list(range(1, len(written) + 1)), "a gap or a repeat in the stream"
    assert [e["data"]["id"] for e in events] == written, "rows missing, repeated or out of write order"
    assert not [s for s in samples if s == ("active", "active")], "both replicas relaying at once"
    assert any(s[0] == "active" for s in samples) and any(s[1] == "active" for s in samples), \
        "each node's replica relayed at some point"
    lease = (await pipeline.maria("SELECT epoch FROM relay_leases WHERE stream = 'payments'"))[0]
    assert lease["epoch"] == first_epoch + 2, "one take each: the first holder, the standby, the first holder again"
    return {"rows": len(written), "samples": len(samples), "paused_replaced_after": took_over_after,
            "killed_replaced_after": retaken_after}
