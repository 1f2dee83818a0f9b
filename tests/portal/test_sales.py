"""What a sale event means (portal_consumer.sales.decide): pure, no peers, no database."""

import pytest

from portal_consumer.sales import Ask, Done, UnexpectedAnswer, Unprocessable, decide
from portal_consumer.store import Notification

PAID = {"order_id": "o1", "reservation_id": "r1", "user_id": "u1", "event_id": "e1", "amount_minor": 5000,
        "currency": "EUR", "payment_id": "p1", "seats": [{"label": "A-1-1"}], "tickets": [{"id": "t1"}]}
SUMMARY = {"order_id": "o1", "reservation_id": "r1", "amount_minor": 5000, "currency": "EUR",
           "seats": ["A-1-1"], "tickets": ["t1"]}


def test_a_payment_first_confirms_the_hold_then_finalizes_the_sale():
    assert decide("payment.succeeded", PAID, {}) == Ask("confirm", ("r1",))
    done = decide("payment.succeeded", PAID, {"confirm": (200, {"status": "confirmed"})})
    assert done == Done("sale_finalized", (Notification("u1", "purchase_confirmed", "o1", SUMMARY),))


@pytest.mark.parametrize("status", [404, 409])
def test_a_payment_whose_hold_is_gone_is_refunded_and_the_buyer_told(status):
    answers = {"confirm": (status, {"error": {"code": "HOLD_LOST"}})}
    assert decide("payment.succeeded", PAID, answers) == Ask("refund", ("o1", "hold_lost", "portal-hold-lost-o1"))
    done = decide("payment.succeeded", PAID, {**answers, "refund": (200, {})})
    assert done.outcome == "refunded_hold_lost"
    (note,) = done.notifications
    assert (note.kind, note.user_id, note.order_id) == ("sale_failed_refunded", "u1", "o1")
    assert note.payload["tickets"] == ["t1"] and "expired" in note.payload["reason"]


@pytest.mark.parametrize("answers, call", [
    ({"confirm": (500, {"error": {"code": "INTERNAL"}})}, "reservation confirm answered 500 INTERNAL"),
    ({"confirm": (200, {"status": "held"})}, "reservation confirm answered 200"),
    ({"confirm": (200, ["not", "a", "reservation"])}, "reservation confirm answered 200"),
    ({"confirm": (409, {}), "refund": (429, {})}, "billing refund answered 429"),
])
def test_an_answer_the_portal_cannot_act_on_is_retried_not_guessed(answers, call):
    with pytest.raises(UnexpectedAnswer, match=call):
        decide("payment.succeeded", PAID, answers)


def test_a_refund_releases_the_seats_and_tells_the_buyer_unless_the_hold_was_lost():
    refunded = {**PAID, "refund_id": "f1", "reason": "changed mind"}
    assert decide("payment.refunded", refunded, {}) == Ask("release", ("r1", "f1"))
    done = decide("payment.refunded", refunded, {"release": (200, {})})
    assert done == Done("seats_released", (Notification("u1", "refund_issued", "o1", {
        "order_id": "o1", "amount_minor": 5000, "currency": "EUR", "reason": "changed mind"}),))
    assert decide("payment.refunded", {**refunded, "reason": "hold_lost"}, {"release": (200, {})}) == Done(
        "released_after_hold_lost")
    assert decide("payment.refunded", refunded, {"release": (404, {})}) == Done("nothing_to_release")
    with pytest.raises(UnexpectedAnswer, match="reservation release answered 409 REFUND_NOT_FOUND"):
        decide("payment.refunded", refunded, {"release": (409, {"error": {"code": "REFUND_NOT_FOUND"}})})


def test_a_declined_payment_is_noted_and_unknown_events_ignored_without_asking_anyone():
    failed = {k: PAID[k] for k in ("order_id", "reservation_id", "user_id", "event_id", "amount_minor", "currency",
                                   "payment_id")}
    assert decide("payment.failed", {**failed, "reason": "card_declined"}, {}) == Done(
        "declined_noted", (Notification("u1", "payment_declined", "o1", {"order_id": "o1",
                                                                          "reason": "card_declined"}),))
    assert decide("payment.something_new", {}, {}) == Done("ignored")


@pytest.mark.parametrize("kind, data", [
    ("payment.succeeded", {"order_id": "o1", "user_id": "u1"}),
    ("payment.refunded", {"order_id": "o1", "reservation_id": 7, "user_id": "u1"}),
    ("payment.failed", {"user_id": "u1"}),
])
def test_an_event_that_lacks_what_it_needs_is_unprocessable(kind, data):
    with pytest.raises(Unprocessable):
        decide(kind, data, {})
