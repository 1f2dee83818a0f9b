"""The payment gateway interface and its mock.

Charges and refunds are keyed by the payment attempt's id, as real gateways
key them by an idempotency key: asking twice about one attempt (after a crash
between charging and recording) gets the first answer, never a second charge.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    reference: str
    reason: str | None = None


class PaymentGateway(Protocol):
    async def charge(self, attempt_id: str, amount_minor: int, currency: str) -> ChargeResult: ...

    async def refund(self, attempt_id: str, amount_minor: int, currency: str) -> str: ...


class MockGateway:
    """Approves ``success_rate`` of charges; deterministic in order of attempts when ``seed`` is set."""

    def __init__(self, success_rate: float = 1.0, seed: int | None = None, latency_ms: int = 0) -> None:
        self.success_rate = success_rate
        self.latency = latency_ms / 1000
        self.rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self.charges: dict[str, ChargeResult] = {}
        self.refunds: dict[str, str] = {}

    async def charge(self, attempt_id: str, amount_minor: int, currency: str) -> ChargeResult:
        if self.latency:
            await asyncio.sleep(self.latency)
        if attempt_id not in self.charges:
            approved = self.rng.random() < self.success_rate
            self.charges[attempt_id] = ChargeResult(
                approved, f"mock_ch_{uuid.uuid4().hex[:16]}", None if approved else "card_declined")
        return self.charges[attempt_id]

    async def refund(self, attempt_id: str, amount_minor: int, currency: str) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self.refunds.setdefault(attempt_id, f"mock_re_{uuid.uuid4().hex[:16]}")
