"""The drill's audit over hand-made histories: no sockets, every class of anomaly counted on its own."""

from __future__ import annotations

import copy

from deploy.ops.drill.audit import audit, write_gap, write_gaps


def seat(i: int) -> dict:
    return {"id": f"s{i}", "label": f"A-{i}"}


def order(user: str, rid: str, seat_ids: list[int], status: str = "paid", payments: int = 1,
          tickets: list[int] | None = None) -> dict:
    paid = status == "paid"
    return {"id": f"o-{rid}", "reservation_id": rid, "user_id": user, "status": status,
            "seats": [seat(i) for i in seat_ids],
            "tickets": [{"id": f"t-{rid}-{i}", "seat_id": f"s{i}", "status": "valid"}
                        for i in (tickets if tickets is not None else (seat_ids if paid else []))],
            "payments": [{"id": f"p{n}", "status": "succeeded"} for n in range(payments if paid else 0)]}


def reservation(user: str, seat_ids: list[int], status: str = "confirmed") -> dict:
    return {"user_id": user, "status": status, "seats": [seat(i) for i in seat_ids]}


def healthy_history() -> tuple[list[dict], dict]:
    purchases = [
        {"user_id": "u1", "seat_id": "s1", "reservation_id": "r1", "hold": "ok", "pay": "ok"},
        {"user_id": "u2", "seat_id": "s2", "reservation_id": "r2", "hold": "ok", "pay": "ok"},
        {"user_id": "u3", "seat_id": "s3", "reservation_id": "r3", "hold": "ok", "pay": "failed"},
    ]
    final = {"orders": [order("u1", "r1", [1]), order("u2", "r2", [2]), order("u3", "r3", [3], "pending")],
             "reservations": {"r1": reservation("u1", [1]), "r2": reservation("u2", [2]),
                              "r3": reservation("u3", [3], "held")},
             "seats": {"s1": "sold", "s2": "sold", "s3": "held"}}
    return purchases, final


def counts(result: dict) -> tuple[int, int, int]:
    return result["lost"], result["duplicated"], result["double_sold"]


def test_a_clean_history_has_no_anomalies_and_counts_what_was_acknowledged():
    result = audit(*healthy_history())
    assert counts(result) == (0, 0, 0), result["details"]
    assert (result["acknowledged_holds"], result["acknowledged_purchases"]) == (3, 2)


def test_an_acknowledged_payment_whose_order_is_not_paid_is_lost():
    purchases, final = healthy_history()
    final["orders"][0] = order("u1", "r1", [1], "pending")
    result = audit(purchases, final)
    assert counts(result) == (1, 0, 0)
    assert result["details"]["lost"][0]["user_id"] == "u1"


def test_an_acknowledged_hold_that_vanished_is_lost_and_a_sale_not_finalized_is_lost():
    purchases, final = healthy_history()
    final["reservations"]["r3"] = None
    final["reservations"]["r2"] = reservation("u2", [2], "held")
    assert audit(purchases, final)["lost"] == 2


def test_a_seat_sold_to_two_buyers_is_double_sold_not_lost():
    purchases, final = healthy_history()
    final["orders"].append(order("u9", "r9", [1]))
    final["reservations"]["r9"] = reservation("u9", [1])
    result = audit(purchases, final)
    assert counts(result) == (0, 0, 1)
    assert result["details"]["double_sold"] == ["s1"]


def test_charging_twice_two_tickets_or_two_holds_for_one_purchase_are_duplicates():
    purchases, final = healthy_history()
    charged_twice = copy.deepcopy(final)
    charged_twice["orders"][0] = order("u1", "r1", [1], payments=2)
    assert counts(audit(purchases, charged_twice)) == (0, 1, 0)

    two_tickets = copy.deepcopy(final)
    two_tickets["orders"][1] = order("u2", "r2", [2], tickets=[2, 2])
    result = audit(purchases, two_tickets)
    assert result["duplicated"] == 1 and result["double_sold"] == 1  # one seat, two valid tickets

    held_twice = copy.deepcopy(final)
    held_twice["reservations"]["r3b"] = reservation("u3", [4], "held")
    assert counts(audit(purchases, held_twice)) == (0, 1, 0)


def test_unknown_outcomes_are_resolved_against_the_final_state_and_never_count_as_lost():
    purchases, final = healthy_history()
    purchases += [
        {"user_id": "u4", "seat_id": "s4", "reservation_id": None, "hold": "unknown", "pay": None},
        {"user_id": "u5", "seat_id": "s5", "reservation_id": None, "hold": "unknown", "pay": None},
        {"user_id": "u6", "seat_id": "s6", "reservation_id": "r6", "hold": "ok", "pay": "unknown"},
    ]
    final["orders"] += [order("u4", "r4", [4], "pending"), order("u6", "r6", [6])]
    final["reservations"].update({"r4": reservation("u4", [4], "held"), "r6": reservation("u6", [6])})
    final["seats"].update({"s4": "held", "s5": "available", "s6": "sold"})
    result = audit(purchases, final)
    assert counts(result) == (0, 0, 0), result["details"]
    assert result["unknown"] == {"holds": {"applied": 1, "not_applied": 1},
                                 "payments": {"applied": 1, "not_applied": 0}}


def op(t0: float, t1: float, outcome: str = "ok") -> dict:
    return {"t0": t0, "t1": t1, "outcome": outcome}


def test_write_gap_runs_from_the_first_failed_write_to_the_next_success_after_it():
    ops = [op(9.0, 9.1), op(10.2, 13.2, "unknown"), op(10.5, 11.0, "failed"), op(11.0, 14.0, "failed"),
           op(14.5, 15.3), op(15.4, 15.5)]
    gap = write_gap(ops, since=10.0)
    assert gap["write_gap_s"] == 5.1  # 10.2 -> 15.3
    assert gap["longest_stall_s"] == 5.3  # 10.0 -> 15.3 without a successful write
    assert gap["first_failed_write_at_s"] == 0.2


def test_write_gap_is_zero_without_failures_but_a_blocked_write_shows_as_a_stall():
    gap = write_gap([op(9.9, 10.1), op(10.1, 14.1), op(14.1, 14.2)], since=10.0)
    assert gap["write_gap_s"] == 0.0 and gap["longest_stall_s"] == 4.0
    assert write_gap([op(10.5, 12.0, "failed")], since=10.0)["write_gap_s"] is None  # never recovered


def test_a_payment_succeeding_during_a_postgresql_outage_does_not_close_the_holds_gap():
    ops = [{**op(10.1, 13.1, "unknown"), "kind": "reserve"}, {**op(10.2, 10.3), "kind": "pay"},
           {**op(13.2, 18.0), "kind": "reserve"}]
    gaps = write_gaps(ops, since=10.0)
    assert gaps["write_gap_s"] == 7.9 and gaps["by_kind"]["pay"]["write_gap_s"] == 0.0
    assert write_gaps([{**op(10.1, 11.0, "failed"), "kind": "reserve"}], since=10.0)["write_gap_s"] is None
