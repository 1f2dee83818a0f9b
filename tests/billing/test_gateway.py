"""The mock gateway's ledger: durable across restarts, shared by processes, one charge and one refund per attempt."""

import json

import pytest

from billing_daemon.gateway import GatewayError, MockGateway, read_ledger


async def test_a_restarted_gateway_remembers_charges_and_refunds(tmp_path):
    ledger = tmp_path / "gateway.jsonl"
    first = MockGateway(ledger=ledger)
    charged = await first.charge("a1", 2500, "EUR")
    assert charged.approved
    # A new instance (billing restarted after SIGKILL) reads the ledger: it knows the charge.
    second = MockGateway(ledger=ledger)
    status = await second.status("a1")
    assert (status.state, status.reference, status.amount_minor, status.currency) == (
        "charged", charged.reference, 2500, "EUR")
    assert (await second.status("never")).state == "unknown"
    assert await second.charge("a1", 2500, "EUR") == charged, "a charge is answered once per attempt id"
    refund = await second.refund("a1", 2500, "EUR")
    assert await first.refund("a1", 2500, "EUR") == refund, "another process sees the refund and does not repeat it"
    assert [r.reference for r in (await MockGateway(ledger=ledger).status("a1")).refunds] == [refund]
    assert [(r["op"], r["attempt_id"], r["amount_minor"], r["currency"]) for r in read_ledger(ledger)] == [
        ("charge", "a1", 2500, "EUR"), ("refund", "a1", 2500, "EUR")]


async def test_refunds_need_an_approved_charge_and_no_more_than_it(tmp_path):
    gateway = MockGateway(success_rate=0.0, ledger=tmp_path / "g.jsonl")
    assert not (await gateway.charge("declined", 100, "EUR")).approved
    assert (await gateway.status("declined")).state == "declined"
    with pytest.raises(GatewayError):
        await gateway.refund("declined", 100, "EUR")
    with pytest.raises(GatewayError):
        await gateway.refund("unknown", 100, "EUR")
    gateway.success_rate = 1.0
    await gateway.charge("ok", 100, "EUR")
    with pytest.raises(GatewayError):
        await gateway.refund("ok", 101, "EUR")


async def test_a_torn_last_line_is_skipped_and_closed_off(tmp_path):
    ledger = tmp_path / "g.jsonl"
    await MockGateway(ledger=ledger).charge("a1", 100, "EUR")
    with open(ledger, "a") as f:
        f.write('{"op": "charge", "attempt_id": "a2", "amo')  # billing killed mid-write
    gateway = MockGateway(ledger=ledger)
    assert (await gateway.status("a2")).state == "unknown"
    await gateway.charge("a3", 300, "EUR")
    assert [r["attempt_id"] for r in read_ledger(ledger)] == ["a1", "a3"]
    assert (await MockGateway(ledger=ledger).status("a3")).state == "charged"
    lines = ledger.read_text().splitlines()
    assert json.loads(lines[-1])["attempt_id"] == "a3"


async def test_concurrent_calls_share_one_fsync_and_each_is_on_disk_before_it_is_answered(tmp_path, monkeypatch):
    import asyncio
    import os

    from billing_daemon import gateway as module

    ledger = tmp_path / "g.jsonl"
    synced: list[int] = []  # ledger records on disk at each fsync
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(len(read_ledger(ledger)))

    monkeypatch.setattr(module.os, "fsync", fsync)
    gateway = MockGateway(success_rate=1.0, ledger=ledger)

    async def charge(i: int):
        result = await gateway.charge(f"a{i}", 100 + i, "EUR")
        # Answered only after an fsync that covered this attempt's record.
        assert synced and any(n >= 1 for n in synced)
        assert f"a{i}" in {r["attempt_id"] for r in read_ledger(ledger)[:synced[-1]]}
        return result

    results = await asyncio.gather(*(charge(i) for i in range(20)), gateway.refund("nothing", 1, "EUR"),
                                   return_exceptions=True)
    assert all(r.approved for r in results[:20])
    assert isinstance(results[20], GatewayError)  # one call's failure fails only that call
    assert len(synced) <= 2, f"20 concurrent charges took {len(synced)} fsyncs"
    assert sorted(r["attempt_id"] for r in read_ledger(ledger)) == sorted(f"a{i}" for i in range(20))
    # Nothing written, nothing to flush: a lookup alone takes no fsync.
    before = len(synced)
    assert (await gateway.status("a3")).state == "charged"
    assert len(synced) == before
