"""Billing's business rules as pure functions: no database, no gateway, no HTTP.

The stores (``billing_daemon.store``) read state, ask these functions what it
means and write the result; ``billing_daemon.payments`` does the gateway I/O
around them; ``billing_daemon.api`` maps a :class:`Refused` code to its HTTP
status. Everything here is unit-tested without a server (tests/billing/test_rules.py).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from billing_daemon.gateway import ChargeResult

PAYABLE = ("pending", "failed")  # order states a payment may start from


class Refused(Exception):
    """Billing's rules refuse: a stable ``code`` (SCREAMING_SNAKE), a human ``message`` and ``details``.

    It carries no HTTP status: ``billing_daemon.api.STATUS`` maps each code to one.
    """

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, dict(details or {})

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Refused) and (self.code, self.message, self.details)
                == (other.code, other.message, other.details))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Refused({self.code!r}, {self.message!r}, {self.details!r})"


@dataclass(frozen=True)
class Ok:
    """A request's successful answer (``created``: a new resource was made)."""

    body: dict[str, Any]
    created: bool = False


Answer = Ok | Refused  # what a request comes to; an Idempotency-Key keeps the first one


def request_in_progress() -> Refused:
    return Refused("REQUEST_IN_PROGRESS", "a request with this Idempotency-Key is running")


def key_reused() -> Refused:
    return Refused("IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different request")


def email_taken() -> Refused:
    return Refused("EMAIL_TAKEN", "a user with this email exists")


def payment_in_progress() -> Refused:
    return Refused("PAYMENT_IN_PROGRESS", "another payment of this order is running")


# --- starting a payment -----------------------------------------------------------------


def abandoned(attempt: Mapping[str, Any], owner: str | None, in_flight: Collection[str], resume_after: float) -> bool:
    """Whether a ``charging`` attempt's request is over, so it may be resumed (by asking the gateway) now.

    Not if this process is charging it right now. Yes if this process started it (its
    request ended, with an error, since it is not in flight), if the process that started
    it is gone (its lock is free: killed, or cut off from the database), or if it is older
    than ``resume_after`` (a request stuck that long in a live process elsewhere). Resuming
    an attempt whose request is in fact still running is safe, only wasteful: the gateway
    answers the same for one attempt id and recording happens once under a row lock.
    """
    if attempt["status"] != "charging" or attempt["id"] in in_flight:
        return False
    return ((owner is not None and attempt["owner"] == owner) or not attempt["owner_alive"]
            or float(attempt["age"]) >= resume_after)


def payment_refusal(order: Mapping[str, Any] | None, margin_seconds: float, expires_at: str | None = None,
                    ) -> Refused | None:
    """Why ``order`` cannot be paid now (None: it can). ``order["remaining"]`` is the hold's
    seconds left; a payment this close to expiry (``margin_seconds``) could outlive its hold."""
    if order is None:
        return Refused("ORDER_NOT_FOUND", "no such order")
    if order["status"] not in PAYABLE:
        return Refused("ORDER_NOT_PAYABLE", f"the order is {order['status']}", {"status": order["status"]})
    if float(order["remaining"]) <= margin_seconds:
        return Refused("HOLD_EXPIRED", "the seat hold has expired or is about to", {"expires_at": expires_at})
    return None


# --- what a payment outcome means -------------------------------------------------------


class Outcome(enum.Enum):
    """What recording the gateway's answer about an attempt does."""

    PAID = "paid"                          # tickets, payment.succeeded
    DECLINED = "declined"                  # payable again, payment.failed
    FAILED = "failed"                      # the gateway never saw it: nothing taken, payable again
    REFUND_HOLD_GONE = "refund_hold_gone"  # charged, but the hold was released meanwhile: give it back
    REFUND_LATE_CHARGE = "refund_late"     # charged after the attempt was given up as failed: give it back
    RECORDED = "recorded"                  # finished before (another replica, the resolver, a retry)


REFUND_REASONS = {Outcome.REFUND_HOLD_GONE: "hold_released_during_payment",
                  Outcome.REFUND_LATE_CHARGE: "charge_completed_after_failure"}


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str | None = None  # the decline or refund reason (payment.failed/refunded's "reason")
    refund_due: bool = False   # the gateway must refund before anything is recorded

    @property
    def refunds(self) -> bool:
        return self.outcome in REFUND_REASONS


def payment_outcome(attempt_status: str, order_status: str, result: ChargeResult | None,
                    refund_ref: str | None = None) -> Decision:
    """What the gateway's answer about an attempt means, given the attempt's and the order's state now.

    ``result`` is the gateway's answer (a charge's result, or the resolver's ``status``
    lookup as one); None means the charge never reached the gateway. A refund takes a
    gateway call, which is never made inside a transaction: without ``refund_ref`` (the
    gateway's refund reference) a refunding outcome comes back ``refund_due`` and nothing
    may be recorded until the caller has refunded and asks again with the reference.
    """
    charged = result is not None and result.approved
    if attempt_status != "charging":
        if charged and attempt_status == "failed":
            # Given up as never charged, yet the charge landed: give the money back.
            return _refund(Outcome.REFUND_LATE_CHARGE, refund_ref)
        return Decision(Outcome.RECORDED)
    if result is None:
        return Decision(Outcome.FAILED, "charge_not_completed")
    if not result.approved:
        return Decision(Outcome.DECLINED, result.reason)
    if order_status not in PAYABLE:
        # The hold was released while the card was being charged.
        return _refund(Outcome.REFUND_HOLD_GONE, refund_ref)
    return Decision(Outcome.PAID)


def _refund(outcome: Outcome, refund_ref: str | None) -> Decision:
    return Decision(outcome, REFUND_REASONS[outcome], refund_due=refund_ref is None)


def settled_answer(attempt_status: str, order: Mapping[str, Any], refund_id: str | None = None) -> Answer:
    """The answer to a pay request once its attempt is recorded (``order`` is the order's view)."""
    if attempt_status == "succeeded":
        return Ok(dict(order))
    if attempt_status == "declined":
        reason = order["payments"][-1]["decline_reason"] if order["payments"] else None
        return Refused("PAYMENT_DECLINED", "the payment was declined; you may retry with a new Idempotency-Key "
                       "until the hold expires", {"reason": reason, "order_id": order["id"]})
    if attempt_status == "refunded" and order["status"] not in PAYABLE:
        return Refused("ORDER_NOT_PAYABLE", "the hold was released during the payment; the charge was refunded",
                       {"status": order["status"], "refund_id": refund_id})
    # failed: nothing was taken (or what was taken went back)
    return Refused("PAYMENT_FAILED", "the charge did not complete and nothing was taken; you may retry with a "
                   "new Idempotency-Key until the hold expires", {"order_id": order["id"]})


# --- refunds, releases --------------------------------------------------------------------


def refund_refusal(order_status: str | None) -> Refused | None:
    """Why an order cannot be refunded (None: it is paid, or refunded already, which is harmless)."""
    if order_status is None:
        return Refused("ORDER_NOT_FOUND", "no such order")
    if order_status not in ("paid", "refunded"):
        return Refused("ORDER_NOT_REFUNDABLE", f"the order is {order_status}", {"status": order_status})
    return None


class Release(enum.Enum):
    """Billing's word on releasing a hold (the release-check answer), and whether to cancel the order."""

    RELEASED = "released"  # no money is held: the hold may go
    CANCEL = "cancel"      # as RELEASED, and the order is cancelled now so no payment can start
    PAID = "paid"          # the money is taken: confirm the hold instead
    CHARGING = "charging"  # a payment is in flight: keep the hold, ask again later

    @property
    def answer(self) -> str:
        return "released" if self is Release.CANCEL else self.value


def release_decision(order_status: str | None, attempt_charging: bool) -> Release:
    """What releasing the hold of an order in ``order_status`` (None: billing has no such order yet) means."""
    if order_status is None:
        return Release.RELEASED  # recorded, so the order opens cancelled when it arrives
    if order_status == "paid":
        return Release.PAID
    if order_status not in PAYABLE:
        return Release.RELEASED  # cancelled already, or refunded: no money is held
    if attempt_charging:
        return Release.CHARGING
    return Release.CANCEL


# --- check-in -----------------------------------------------------------------------------


def check_in_refusal(ticket: Mapping[str, Any] | None, first_scan: bool, checked_in_at: str | None) -> Refused | None:
    """Why a scan does not admit (None: it does). First scan wins."""
    if ticket is None or ticket["status"] != "valid":
        return Refused("TICKET_NOT_FOUND", "no valid ticket has this code")
    if not first_scan:
        return Refused("ALREADY_CHECKED_IN", "this ticket was already scanned",
                       {"checked_in_at": checked_in_at, "seat_label": ticket["seat_label"]})
    return None
