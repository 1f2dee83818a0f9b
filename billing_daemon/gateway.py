"""The payment gateway interface and its mock.

Charges and refunds are keyed by the payment attempt's id, as real gateways
key them by an idempotency key: asking twice about one attempt (after a crash
between charging and recording) gets the first answer, never a second charge.

``status`` is the other half of that contract, as real gateways offer it
(look a charge up by its idempotency key): after billing crashed between
charging and recording, nothing in billing's own database says whether the
money moved; only the gateway knows, so the resolver asks it.

The mock keeps its own durable ledger (``TICKETFLOW_MOCK_GATEWAY_LEDGER``, an
append-only JSON-lines file, shared safely by several billing processes on one
host through ``flock``), outside billing's database. Every record is fsynced before
its answer is given; concurrent calls share one turn at the file and one fsync
(group commit), so the ledger costs one disk flush per batch, not one per charge.
A SIGKILL of billing therefore cannot make it forget a charge, which is what
makes crash tests of the payment path honest: the charge is written to the
ledger BEFORE the simulated latency, so a kill during that latency leaves
"charged at the gateway, not recorded in billing", the case a real gateway's
slow network produces. Without a ledger path the mock keeps its memory only
for the life of the process (enough for a demo, not for crash drills).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, Protocol

from deploy.runtime.times import now_rfc3339


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    reference: str
    reason: str | None = None


@dataclass(frozen=True)
class RefundRecord:
    reference: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class GatewayStatus:
    """What the gateway knows about one attempt: ``unknown`` means the charge never reached it."""

    state: Literal["charged", "declined", "unknown"]
    reference: str | None = None
    reason: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    refunds: tuple[RefundRecord, ...] = ()

    def as_charge(self) -> ChargeResult | None:
        """The answer ``charge`` gave for this attempt, or None if there never was a charge."""
        if self.state == "unknown":
            return None
        return ChargeResult(self.state == "charged", self.reference or "", self.reason)


class GatewayError(Exception):
    """The gateway refused an operation (a refund of a charge it does not have, say)."""


class PaymentGateway(Protocol):
    """The seam for a real gateway; every operation is keyed by the payment attempt's id."""

    async def charge(self, attempt_id: str, amount_minor: int, currency: str) -> ChargeResult:
        """Charge once per attempt id; asking again returns the first answer."""
        ...

    async def refund(self, attempt_id: str, amount_minor: int, currency: str) -> str:
        """Refund the attempt's charge once; asking again returns the first refund's reference."""
        ...

    async def status(self, attempt_id: str) -> GatewayStatus:
        """Look the attempt up: charged, declined or unknown, with its refunds."""
        ...


@dataclass
class _Charge:
    amount_minor: int
    currency: str
    result: ChargeResult
    refund: RefundRecord | None = None


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a mock gateway's ledger, in order (for tests and for an operator's eyes)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass  # a torn write
    return records


class MockGateway:
    """Approves ``success_rate`` of charges; deterministic in order of attempts when ``seed`` is set."""

    def __init__(self, success_rate: float = 1.0, seed: int | None = None, latency_ms: int = 0,
                 ledger: str | Path | None = None) -> None:
        self.success_rate = success_rate
        self.latency = latency_ms / 1000
        self.rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self.ledger = Path(ledger) if ledger else None
        self.charges: dict[str, _Charge] = {}
        self._offset = 0  # how much of the ledger file this process has read
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing one process
        self._fd: int | None = None  # the ledger, open and locked, while a locked operation runs
        self._unsynced = False  # records written in this turn at the file, not yet fsynced
        self._waiting: list[tuple[Callable[[], Any], asyncio.Future]] = []  # calls for the next turn
        self._turns: asyncio.Task | None = None  # takes turns at the file while calls are waiting

    async def charge(self, attempt_id: str, amount_minor: int, currency: str) -> ChargeResult:
        def decide() -> ChargeResult:
            known = self.charges.get(attempt_id)
            if known is not None:
                return known.result
            approved = self.rng.random() < self.success_rate
            result = ChargeResult(approved, f"mock_ch_{uuid.uuid4().hex[:16]}", None if approved else "card_declined")
            self._append({"op": "charge", "attempt_id": attempt_id, "amount_minor": amount_minor,
                          "currency": currency, "approved": approved, "reference": result.reference,
                          "reason": result.reason, "at": now_rfc3339()})
            return result

        result = await self._locked(decide)  # recorded before the latency: a kill now leaves it charged
        if self.latency:
            await asyncio.sleep(self.latency)
        return result

    async def refund(self, attempt_id: str, amount_minor: int, currency: str) -> str:
        def refund() -> str:
            charge = self.charges.get(attempt_id)
            if charge is None or not charge.result.approved:
                raise GatewayError(f"attempt {attempt_id} has no approved charge to refund")
            if charge.refund is not None:
                return charge.refund.reference
            if currency != charge.currency or amount_minor > charge.amount_minor:
                raise GatewayError(f"refund {amount_minor} {currency} exceeds the charge of {attempt_id}")
            reference = f"mock_re_{uuid.uuid4().hex[:16]}"
            self._append({"op": "refund", "attempt_id": attempt_id, "amount_minor": amount_minor,
                          "currency": currency, "reference": reference, "at": now_rfc3339()})
            return reference

        reference = await self._locked(refund)
        if self.latency:
            await asyncio.sleep(self.latency)
        return reference

    async def status(self, attempt_id: str) -> GatewayStatus:
        def look() -> GatewayStatus:
            charge = self.charges.get(attempt_id)
            if charge is None:
                return GatewayStatus("unknown")
            return GatewayStatus("charged" if charge.result.approved else "declined", charge.result.reference,
                                 charge.result.reason, charge.amount_minor, charge.currency,
                                 (charge.refund,) if charge.refund else ())

        return await self._locked(look)

    # --- the ledger -------------------------------------------------------------------

    async def _locked(self, fn):
        """``fn()`` at the ledger (caught up, locked); its records are on disk before it answers.

        Calls arriving while a turn at the file is under way wait for the next turn, which
        runs them all under one lock and ends with one fsync (group commit).
        """
        if self.ledger is None:
            return fn()
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((fn, answer))
        if self._turns is None or self._turns.done():
            self._turns = asyncio.create_task(self._take_turns())
        return await answer

    async def _take_turns(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                outcomes = await asyncio.to_thread(self._with_file, [fn for fn, _ in batch])
            except asyncio.CancelledError:  # the loop is closing: nobody is answered
                for _, answer in batch + self._waiting:
                    answer.cancel()
                raise
            except Exception as exc:  # the file itself failed: every call of the turn fails with it
                outcomes = [(False, exc)] * len(batch)
            self._answer(batch, outcomes)

    @staticmethod
    def _answer(batch, outcomes) -> None:
        for (_, answer), (ok, value) in zip(batch, outcomes):
            if answer.done():  # its caller gave up waiting; what it did at the gateway stands
                continue
            if ok:
                answer.set_result(value)
            else:
                answer.set_exception(value)

    def _with_file(self, fns):
        """Run each of ``fns`` holding the ledger's lock, after catching up with what other processes
        wrote; fsync what they wrote before returning their outcomes, ``(ok, result or exception)``."""
        with self._thread_lock:
            self.ledger.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.ledger, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._catch_up(fd)
                self._fd = fd
                outcomes = []
                try:
                    for fn in fns:
                        try:
                            outcomes.append((True, fn()))
                        except Exception as exc:
                            outcomes.append((False, exc))
                    if self._unsynced:
                        os.fsync(fd)  # before any answer of this turn is given
                finally:
                    self._fd = None
                    self._unsynced = False
                return outcomes
            finally:
                os.close(fd)  # closing releases the flock

    def _catch_up(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size <= self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line (a crash mid-write) is not a record
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the torn tail of a crashed write, closed off by the next record's newline
            self._apply(record)
        self._offset += len(complete)

    def _append(self, record: dict[str, Any]) -> None:
        if self.ledger is not None:
            size = os.fstat(self._fd).st_size
            torn = size > self._offset  # a writer died mid-line: end that line before ours
            line = (("\n" if torn else "") + json.dumps(record, sort_keys=True) + "\n").encode()
            os.write(self._fd, line)
            self._unsynced = True  # fsynced at the end of this turn, before anyone is answered
            self._offset = size + len(line)
        self._apply(record)

    def _apply(self, record: dict[str, Any]) -> None:
        if record["op"] == "charge":
            self.charges.setdefault(record["attempt_id"], _Charge(
                record["amount_minor"], record["currency"],
                ChargeResult(record["approved"], record["reference"], record.get("reason"))))
        elif record["op"] == "refund":
            charge = self.charges.get(record["attempt_id"])
            if charge is not None and charge.refund is None:
                charge.refund = RefundRecord(record["reference"], record["amount_minor"], record["currency"])
