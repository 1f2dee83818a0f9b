"""Billing's rules as pure functions, without a database, a gateway or HTTP."""

import ast
import inspect
from pathlib import Path

import pytest

from billing_daemon import api, rules
from billing_daemon.gateway import ChargeResult, GatewayStatus
from billing_daemon.rules import (Ok, Outcome, Refused, Release, abandoned, check_in_refusal, payment_outcome,
                                  payment_refusal, refund_refusal, release_decision, settled_answer)
from billing_daemon.store import Replayed

APPROVED = ChargeResult(True, "ch_1")
DECLINED = ChargeResult(False, "ch_2", "insufficient_funds")


# --- what a payment outcome means ---------------------------------------------------------


def test_an_approved_charge_on_a_payable_order_is_paid():
    for order_status in rules.PAYABLE:
        assert payment_outcome("charging", order_status, APPROVED) == rules.Decision(Outcome.PAID)


def test_a_declined_charge_is_declined_with_the_gateways_reason_whatever_the_hold():
    for order_status in ("pending", "failed", "cancelled"):
        decision = payment_outcome("charging", order_status, DECLINED)
        assert (decision.outcome, decision.reason, decision.refund_due) == (Outcome.DECLINED, "insufficient_funds",
                                                                            False)


def test_a_charge_the_gateway_never_saw_failed_and_took_nothing():
    decision = payment_outcome("charging", "pending", None)
    assert (decision.outcome, decision.reason, decision.refunds) == (Outcome.FAILED, "charge_not_completed", False)


def test_money_taken_after_the_hold_went_must_go_back_before_anything_is_recorded():
    due = payment_outcome("charging", "cancelled", APPROVED)
    assert (due.outcome, due.refund_due, due.reason) == (Outcome.REFUND_HOLD_GONE, True,
                                                         "hold_released_during_payment")
    done = payment_outcome("charging", "cancelled", APPROVED, refund_ref="rf_1")
    assert (done.outcome, done.refund_due) == (Outcome.REFUND_HOLD_GONE, False)


def test_a_charge_landing_after_the_attempt_was_given_up_is_refunded():
    due = payment_outcome("failed", "failed", APPROVED)
    assert (due.outcome, due.refund_due, due.reason) == (Outcome.REFUND_LATE_CHARGE, True,
                                                         "charge_completed_after_failure")
    assert not payment_outcome("failed", "failed", APPROVED, refund_ref="rf_1").refund_due


@pytest.mark.parametrize("attempt_status", ["succeeded", "declined", "refunded", "failed"])
def test_an_attempt_recorded_before_is_recorded_once(attempt_status):
    # The resolver and a retry (or two replicas) finishing one attempt: the second only reads the answer,
    # unless a failed attempt turns out charged after all (the case above).
    for result in (None, DECLINED) + ((APPROVED,) if attempt_status != "failed" else ()):
        assert payment_outcome(attempt_status, "paid", result) == rules.Decision(Outcome.RECORDED)


def test_the_resolvers_gateway_status_means_what_a_charge_answer_means():
    # The resolver asks `status` and records through the same rule as a request does.
    assert payment_outcome("charging", "pending", GatewayStatus("unknown").as_charge()).outcome is Outcome.FAILED
    charged = GatewayStatus("charged", reference="ch_9").as_charge()
    assert payment_outcome("charging", "pending", charged).outcome is Outcome.PAID
    assert payment_outcome("charging", "cancelled", charged).outcome is Outcome.REFUND_HOLD_GONE
    declined = GatewayStatus("declined", reference="ch_8", reason="expired_card").as_charge()
    assert payment_outcome("charging", "pending", declined).reason == "expired_card"


def _order(status="paid", payments=()):
    return {"id": "o1", "status": status, "payments": list(payments)}


def test_what_a_recorded_attempt_answers():
    assert settled_answer("succeeded", _order()) == Ok(_order())
    declined = settled_answer("declined", _order("failed", [{"decline_reason": "insufficient_funds"}]))
    assert (declined.code, declined.details) == ("PAYMENT_DECLINED", {"reason": "insufficient_funds", "order_id": "o1"})
    refunded = settled_answer("refunded", _order("cancelled"), refund_id="r1")
    assert (refunded.code, refunded.details) == ("ORDER_NOT_PAYABLE", {"status": "cancelled", "refund_id": "r1"})
    # Refunded although the order is still payable (a late charge given back): nothing was taken.
    assert settled_answer("refunded", _order("failed")).code == "PAYMENT_FAILED"
    assert settled_answer("failed", _order("failed")).details == {"order_id": "o1"}


# --- starting a payment, refunds, releases, the door ----------------------------------------


def attempt(**overrides):
    return {"id": "a1", "status": "charging", "owner": "p1", "owner_alive": True, "age": 1.0, **overrides}


def test_an_attempt_is_abandoned_only_when_its_request_is_known_to_be_over():
    assert not abandoned(attempt(), "p2", set(), 30), "a young attempt of a live process elsewhere"
    assert not abandoned(attempt(), "p1", {"a1"}, 30), "charging right here, right now"
    assert abandoned(attempt(), "p1", set(), 30), "ours, but its request ended"
    assert abandoned(attempt(owner_alive=False), "p2", set(), 30), "its process is gone"
    assert abandoned(attempt(age=30.0), "p2", set(), 30), "stuck past the bound"
    assert not abandoned(attempt(status="succeeded", owner_alive=False), "p2", set(), 30), "finished"


def test_an_order_is_payable_while_pending_or_failed_and_its_hold_lasts():
    assert payment_refusal(None, 30).code == "ORDER_NOT_FOUND"
    assert payment_refusal({"status": "paid", "remaining": 500}, 30).details == {"status": "paid"}
    expiring = payment_refusal({"status": "pending", "remaining": 30}, 30, "2027-01-01T00:00:00.000000Z")
    assert (expiring.code, expiring.details) == ("HOLD_EXPIRED", {"expires_at": "2027-01-01T00:00:00.000000Z"})
    assert payment_refusal({"status": "failed", "remaining": 30.5}, 30) is None


def test_only_a_paid_order_is_refunded_and_twice_is_harmless():
    assert refund_refusal(None).code == "ORDER_NOT_FOUND"
    assert refund_refusal("paid") is None and refund_refusal("refunded") is None
    assert refund_refusal("pending").details == {"status": "pending"}


@pytest.mark.parametrize("status,charging,decision", [
    (None, False, Release.RELEASED), ("paid", False, Release.PAID), ("cancelled", False, Release.RELEASED),
    ("refunded", False, Release.RELEASED), ("pending", True, Release.CHARGING), ("failed", True, Release.CHARGING),
    ("pending", False, Release.CANCEL), ("failed", False, Release.CANCEL)])
def test_billings_word_on_releasing_a_hold(status, charging, decision):
    assert release_decision(status, charging) is decision
    assert decision.answer in ("released", "paid", "charging")


def test_a_ticket_admits_once():
    ticket = {"status": "valid", "seat_label": "A-1"}
    assert check_in_refusal(None, True, None).code == "TICKET_NOT_FOUND"
    assert check_in_refusal({**ticket, "status": "void"}, False, None).code == "TICKET_NOT_FOUND"
    again = check_in_refusal(ticket, False, "2027-01-01T00:00:00.000000Z")
    assert (again.code, again.details["seat_label"]) == ("ALREADY_CHECKED_IN", "A-1")
    assert check_in_refusal(ticket, True, "2027-01-01T00:00:00.000000Z") is None


# --- the API's one mapping ---------------------------------------------------------------------


def _refusal_codes() -> set[str]:
    """Every code billing's rules and stores refuse with (string literals passed to Refused)."""
    root = Path(rules.__file__).parent
    codes = set()
    for path in [root / "rules.py", *sorted((root / "store").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Refused" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                codes.add(node.args[0].value)
    return codes


def test_every_refusal_code_has_one_http_status():
    codes = _refusal_codes()
    assert len(codes) >= 12, codes
    assert codes == set(api.STATUS), "a code without a status, or a status for a code nobody raises"


def test_responses_are_what_clients_always_got():
    assert api.response(Refused("HOLD_EXPIRED", "gone", {"expires_at": "x"})) == (
        409, {"error": {"code": "HOLD_EXPIRED", "message": "gone", "details": {"expires_at": "x"}}})
    assert api.response(Refused("EMAIL_TAKEN", "taken")) == (409, {"error": {"code": "EMAIL_TAKEN",
                                                                             "message": "taken"}})
    assert api.response(Ok({"id": "u"}, created=True)) == (201, {"id": "u"})
    assert api.response(Ok({"id": "o"})) == (200, {"id": "o"})
    # A replay is the recorded response, whatever the table says today.
    assert api.response(Replayed(402, {"error": {"code": "PAYMENT_DECLINED"}})) == (
        402, {"error": {"code": "PAYMENT_DECLINED"}})
    expected = {"ORDER_NOT_FOUND": 404, "TICKET_NOT_FOUND": 404, "PAYMENT_DECLINED": 402, "PAYMENT_FAILED": 402,
                "IDEMPOTENCY_KEY_REUSED": 422}
    assert {c: api.STATUS[c] for c in expected} == expected
    assert {c for c, s in api.STATUS.items() if s == 409} == {
        "ORDER_NOT_PAYABLE", "HOLD_EXPIRED", "PAYMENT_IN_PROGRESS", "REQUEST_IN_PROGRESS", "ORDER_NOT_REFUNDABLE",
        "ALREADY_CHECKED_IN", "EMAIL_TAKEN"}


def test_the_rules_are_pure():
    source = inspect.getsource(rules)
    for io in ("aiomysql", "aiohttp", "execute(", "await "):
        assert io not in source, io
