"""Pure decisions of the reservation daemon: outcome -> HTTP answer, billing's word -> what to do with a hold."""

import re
from importlib import resources

from reservation_daemon.api import ANSWERS, answer
from reservation_daemon.openapi import SPEC
from reservation_daemon.release import sort_holds
from reservation_daemon.store import Outcome


def _outcomes_in_function_files() -> set[str]:
    """Every outcome a stored function can answer: the literals it returns or assigns to v_outcome."""
    found = set()
    for entry in resources.files("reservation_daemon.sql.functions").iterdir():
        if entry.name.endswith(".sql"):
            text = entry.read_text()
            found |= set(re.findall(r"SELECT '([a-z_]+)'::text", text))
            found |= set(re.findall(r"v_outcome := '([a-z_]+)'", text))
    return found


def test_every_outcome_a_stored_function_can_answer_has_an_http_answer():
    outcomes = _outcomes_in_function_files()
    assert {"held", "seat_unavailable", "seat_not_found", "not_held", "hold_lost", "in_progress"} <= outcomes
    assert outcomes - set(ANSWERS) == set()


def test_every_error_code_of_the_table_is_documented_with_its_status():
    documented: dict[int, str] = {}
    for operations in SPEC["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                documented[int(status)] = documented.get(int(status), "") + " " + response.get("description", "")
    for name, how in ANSWERS.items():
        if how.code is not None:
            assert how.code in documented.get(how.status, ""), f"{name}: {how.status} {how.code} not in openapi"


def test_a_success_answers_the_resource_and_a_refusal_the_error_envelope():
    reservation = {"id": "r", "status": "held"}
    assert answer(Outcome("held", reservation)) == (201, reservation)
    assert answer(Outcome("not_sold", reservation)) == (200, reservation)
    assert answer(Outcome("seat_unavailable", {"seat_ids": ["s"]})) == (409, {"error": {
        "code": "SEAT_UNAVAILABLE", "message": "one or more seats are already held or sold",
        "details": {"seat_ids": ["s"]}}})
    assert answer(Outcome("hold_lost", {"status": "expired"})) == (409, {"error": {
        "code": "HOLD_LOST", "message": "the hold is expired; its seats may be sold to someone else",
        "details": {"status": "expired"}}})
    # No details: no "details" key, as every TicketFlow error.
    assert answer(Outcome("in_progress", {})) == (409, {"error": {
        "code": "REQUEST_IN_PROGRESS",
        "message": "a request with this Idempotency-Key is still being processed; retry shortly"}})


def test_billing_s_word_sorts_due_holds_and_no_word_keeps_a_hold():
    due = ["a", "b", "c", "d", "e"]
    answers = {"a": "released", "b": "paid", "c": "charging", "e": "something new"}
    assert sort_holds(due, answers) == (["a"], ["b"], ["c", "d", "e"])
    assert sort_holds(due, {}) == ([], [], due), "billing unreachable: nothing is released"
