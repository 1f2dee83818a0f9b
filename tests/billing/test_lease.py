"""The relay lease (billing_daemon/store/lease.py): its local clock with a fake clock, its row on the real MariaDB.

The process-level proof (two billing replicas, a holder paused past the TTL, a holder
killed) is tests/billing/test_lease_replicas.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from billing_daemon.store import BillingStore
from billing_daemon.store.lease import LeaseLost, LeaseTimer, RelayLease
from billing_daemon.store.outbox import OUT_STREAM, Fenced, Outbox
from deploy.runtime.mysql import MariaDB, fetchall, fetchone
from tests.helpers import wait_until
from tests.support.stack import fresh_mariadb_database


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def nothing() -> None:
    pass


# --- the local clock alone -------------------------------------------------------------


def test_the_timer_holds_ttl_minus_two_renew_intervals_from_when_the_take_was_sent():
    timer = LeaseTimer(ttl=3.0, renew_every=0.5)
    assert not timer.valid(0.0), "not held before a take"
    timer.held(10.0)
    assert timer.valid(10.0) and timer.valid(11.99)
    assert not timer.valid(12.0), "the holder must stop two renew intervals before the database's expiry"
    assert not timer.renew_due(10.4) and timer.renew_due(10.5)
    assert timer.remaining(11.5) == pytest.approx(0.5)
    timer.held(11.0)  # a renewal sent at 11.0 succeeded
    assert timer.valid(12.99) and not timer.valid(13.0)
    timer.drop()
    assert not timer.valid(11.0) and timer.remaining(11.0) == 0.0


def test_a_ttl_without_room_for_a_renewal_is_refused():
    with pytest.raises(ValueError):
        LeaseTimer(ttl=1.5, renew_every=0.5)


# --- the row, on MariaDB ------------------------------------------------------------------


@pytest.fixture
async def dsn():
    async with fresh_mariadb_database("tf_lease") as dsn:
        database = MariaDB(dsn)
        try:
            await BillingStore(database).migrate()
        finally:
            await database.close()
        yield dsn


def lease(dsn: str, clock=time.monotonic, ttl: float = 3.0, renew: float = 0.5, on_epoch=lambda e: None) -> RelayLease:
    return RelayLease(dsn, OUT_STREAM, ttl=ttl, renew_every=renew, on_epoch=on_epoch, clock=clock)


async def row(dsn: str) -> dict:
    database = MariaDB(dsn)
    try:
        return await database.run(lambda c: fetchone(
            c, "SELECT l.owner, l.epoch, l.expires_at, l.taken_at, h.relay_epoch, NOW(6) AS now"
               " FROM relay_leases l JOIN stream_heads h USING (stream) WHERE l.stream = %s", (OUT_STREAM,)),
            idempotent=True)
    finally:
        await database.close()


async def test_of_many_concurrent_takes_exactly_one_wins_and_bumps_the_epoch_it_fences_with(dsn):
    leases = [lease(dsn) for _ in range(12)]
    try:
        won = await asyncio.gather(*(lease_.acquire(nothing) for lease_ in leases))
        assert won.count(True) == 1, won
        winner = leases[won.index(True)]
        state = await row(dsn)
        assert state["owner"] == winner.owner and state["epoch"] == winner.epoch == 1
        assert state["relay_epoch"] == 1, "the take writes the fencing epoch to stream_heads"
        assert state["expires_at"] > state["now"]
    finally:
        for lease_ in leases:
            await lease_.release()


async def test_renewal_extends_and_giving_up_frees_the_lease_at_once(dsn):
    clock = FakeClock()
    holder, standby = lease(dsn, clock), lease(dsn)
    try:
        assert await holder.acquire(nothing)
        first = (await row(dsn))["expires_at"]
        clock.now += 0.5
        await holder.check()  # renewal due: extends the row's expiry on the database's clock
        assert (await row(dsn))["expires_at"] > first
        assert holder.timer.deadline == pytest.approx(clock.now + 3.0 - 1.0)
        assert not await standby.acquire(nothing), "a held lease is not free"
        await standby.release()
        await holder.release()  # shutdown: free now, not after the TTL
        standby = lease(dsn)
        assert await standby.acquire(nothing)
        assert standby.epoch == 2
    finally:
        await holder.release()
        await standby.release()


async def test_the_holder_stops_by_its_own_clock_without_reaching_the_database(dsn):
    clock = FakeClock()
    holder = lease(dsn, clock)
    try:
        assert await holder.acquire(nothing)
        holder.conn.close()  # the database is unreachable from here on
        clock.now += 0.3
        await holder.check()  # not due for renewal: nothing to ask the database
        clock.now = holder.timer.deadline
        with pytest.raises(LeaseLost, match="local clock"):
            await holder.check()
    finally:
        await holder.release()


async def test_a_failed_renewal_loses_the_lease_at_once(dsn):
    clock = FakeClock()
    holder = lease(dsn, clock)
    try:
        assert await holder.acquire(nothing)
        holder.conn.close()
        clock.now += 0.5  # renewal due, and it cannot reach the database
        with pytest.raises(LeaseLost, match="renewal failed"):
            await holder.check()
        assert not holder.timer.valid(clock.now)
    finally:
        await holder.release()


async def test_an_abandoned_lease_is_taken_only_after_it_expired_and_after_the_holders_local_deadline(dsn):
    renew = 0.1
    holder = lease(dsn, ttl=0.5, renew=renew)
    standby: RelayLease | None = None
    try:
        assert await holder.acquire(nothing)  # then never renewed: a holder SIGKILLed or paused
        expires_at = (await row(dsn))["expires_at"]
        local_deadline = holder.timer.deadline

        async def taken() -> bool:
            nonlocal standby
            if standby is not None:
                await standby.release()
            standby = lease(dsn, ttl=0.5, renew=renew)
            return await standby.acquire(nothing)

        await wait_until(taken, 10, "the standby taking the abandoned lease")
        took_at = time.monotonic()
        state = await row(dsn)
        assert state["taken_at"] >= expires_at, "taken before the database said it expired"
        assert state["epoch"] == 2 and state["owner"] == standby.owner
        # The old holder had stopped: it checks at most one renew interval after its deadline,
        # and has one more interval to stop its sender before a take can succeed.
        assert local_deadline + 2 * renew <= took_at
        with pytest.raises(LeaseLost, match="refused"):  # a holder whose clock lied: the row refuses it
            await _renew_now(holder)
    finally:
        await holder.release()
        if standby is not None:
            await standby.release()
    assert (await row(dsn))["owner"] == standby.owner, "the deposed holder's release must not free the new lease"


async def _renew_now(lease_: RelayLease) -> None:
    """Renew as if the local clock still said the lease was held."""
    lease_.timer.renewed_at = lease_.clock() - lease_.timer.renew_every
    lease_.timer.deadline = lease_.clock() + 10
    await lease_.check()


async def test_a_deposed_relay_cannot_number_the_stream(dsn):
    database = MariaDB(dsn)
    old_outbox, new_outbox = Outbox(database), Outbox(database)

    def fence(outbox: Outbox):
        def set_epoch(epoch: int) -> None:
            outbox.epoch = epoch
        return set_epoch

    async def emit(marker: str) -> None:
        await database.transaction(lambda c: old_outbox.emit(c, "ticket.checked_in", {
            "id": marker, "order_id": "1", "event_id": "e", "seat_id": "s", "seat_label": "A1",
            "checked_in_at": "2027-01-01T00:00:00Z"}), idempotent=False)

    old = lease(dsn, ttl=0.5, renew=0.1, on_epoch=fence(old_outbox))
    new: RelayLease | None = None
    try:
        assert await old.acquire(nothing)
        await emit("a")
        assert await old_outbox.sequence() == 1
        await emit("b")

        async def taken() -> bool:
            nonlocal new
            if new is not None:
                await new.release()
            new = lease(dsn, ttl=3.0, renew=0.5, on_epoch=fence(new_outbox))
            return await new.acquire(nothing)

        await wait_until(taken, 10, "a new relay taking the expired lease")
        assert (new_outbox.epoch, old_outbox.epoch) == (2, 1)
        with pytest.raises(Fenced):
            await old_outbox.sequence()
        with pytest.raises(Fenced):
            await old_outbox.read(1, 10)
        rows = await database.run(lambda c: fetchall(c, "SELECT seq, JSON_VALUE(data, '$.id') AS m FROM outbox"
                                                        " ORDER BY id"), idempotent=True)
        assert [(r["seq"], r["m"]) for r in rows] == [(1, "a"), (None, "b")], "the deposed relay numbered a row"
        assert [e.seq for e in await new_outbox.read(0, 10)] == [1, 2]
    finally:
        await old.release()
        if new is not None:
            await new.release()
        await database.close()

