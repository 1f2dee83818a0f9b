"""The event contract: typed payloads, what does not fit is refused, and the README shows the same table."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy.runtime.events import SCHEMAS, MalformedEvent, PaymentSucceeded, parse, table, validated

SUCCEEDED = {"order_id": "o", "reservation_id": "o", "user_id": "u", "event_id": "e", "amount_minor": 2500,
             "currency": "EUR", "payment_id": "p", "seats": [{"id": "s", "label": "A-1-1"}],
             "tickets": [{"id": "t", "seat_id": "s", "seat_label": "A-1-1"}]}


def test_a_payload_reads_typed_and_keeps_fields_it_does_not_know():
    payload = parse("payment.succeeded", {**SUCCEEDED, "added_later": 1})
    assert isinstance(payload, PaymentSucceeded) and payload.amount_minor == 2500
    assert payload.to_data() == {**SUCCEEDED, "added_later": 1}, "a newer producer's extra field survives"


@pytest.mark.parametrize("change, field", [
    ({"amount_minor": "2500"}, "amount_minor"), ({"amount_minor": True}, "amount_minor"),
    ({"tickets": None}, "tickets"), ({"order_id": 7}, "order_id")])
def test_a_field_of_the_wrong_type_is_named(change, field):
    with pytest.raises(MalformedEvent) as refused:
        parse("payment.succeeded", {**SUCCEEDED, **change})
    assert refused.value.field == field


def test_a_missing_required_field_is_named_and_optional_ones_may_be_absent():
    data = dict(SUCCEEDED)
    del data["payment_id"]
    with pytest.raises(MalformedEvent, match="payment_id is missing"):
        validated("payment.succeeded", data)
    refunded = parse("payment.refunded", {k: SUCCEEDED[k] for k in (
        "order_id", "reservation_id", "user_id", "event_id", "amount_minor", "currency")} | {"reason": None})
    assert refunded.refund_id is None


@given(kind=st.sampled_from(sorted(SCHEMAS)), data=st.dictionaries(st.text(max_size=12), st.none() | st.integers()
                                                                   | st.text(max_size=5)) | st.lists(st.none()))
def test_any_data_parses_or_is_refused_with_malformed_event(kind, data):
    try:
        parse(kind, data)
    except MalformedEvent:
        pass


def test_the_readme_documents_every_event_type_with_this_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert table() in readme, "README's Events section is out of date: paste deploy.runtime.events.table()"
