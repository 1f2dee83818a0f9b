"""The Jepsen-style audit of a drill: a pure function of what clients were told and the final state.

Input is plain data, so hand-made histories test it without sockets:

- ``purchases``: one dict per purchase attempt of the load (``deploy/ops/drill/load.py``):
  ``user_id`` (one per attempt, so every effect is attributable), ``seat_id``, ``reservation_id``
  (when a hold was acknowledged), ``hold`` and ``pay``: the outcome the client last saw for that
  write, ``"ok"``, ``"failed"`` or ``"unknown"`` (a timeout or reset: it may or may not have happened),
  or ``None`` when the write was never sent.
- ``final``: the state read back through the daemons' APIs after the load settled:
  ``orders`` (billing's orders of the drill's event, with tickets and payments), ``reservations``
  (reservation id -> the reservation, or None when the daemon answers 404) and ``seats``
  (seat id -> available/held/sold).

Classification (each counted separately):

- LOST: an acknowledged write missing from the final state: an acknowledged hold whose reservation
  does not exist, or an acknowledged payment whose order is not paid, has no valid ticket for the
  seat, whose reservation is not confirmed, or whose seat is not sold.
- DOUBLE-SOLD: a seat with more than one valid ticket, paid order or confirmed reservation.
- DUPLICATED: one purchase attempt (one user id) with more than one reservation or order, an order
  with more than one succeeded payment (charged twice), or an order with two valid tickets for a seat.
- UNKNOWN: writes whose outcome the client never learnt, resolved against the final state as
  applied or not applied; never counted as lost (the client was not told it succeeded).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any


def _valid_tickets(order: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in order.get("tickets", []) if t.get("status") == "valid"]


def audit(purchases: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    orders: list[dict[str, Any]] = final.get("orders", [])
    reservations: dict[str, dict[str, Any] | None] = final.get("reservations", {})
    seats: dict[str, str] = final.get("seats", {})
    orders_by_reservation = {o["reservation_id"]: o for o in orders}
    orders_by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in orders:
        orders_by_user[order["user_id"]].append(order)
    reservations_by_user: dict[str, set[str]] = defaultdict(set)
    for rid, reservation in reservations.items():
        if reservation is not None:
            reservations_by_user[reservation["user_id"]].add(rid)

    lost: list[dict[str, Any]] = []
    for p in purchases:
        rid = p.get("reservation_id")
        if p.get("hold") == "ok" and (rid is None or reservations.get(rid) is None):
            lost.append({"user_id": p["user_id"], "what": "hold", "why": "acknowledged hold has no reservation"})
            continue
        if p.get("pay") != "ok":
            continue
        order = orders_by_reservation.get(rid)
        reservation = reservations.get(rid) or {}
        why = None
        if order is None:
            why = "acknowledged payment has no order"
        elif order.get("status") != "paid":
            why = f"acknowledged payment's order is {order.get('status')}"
        elif not any(t.get("seat_id") == p["seat_id"] for t in _valid_tickets(order)):
            why = "acknowledged payment has no valid ticket for its seat"
        elif reservation.get("status") != "confirmed":
            why = f"paid reservation is {reservation.get('status')}, not confirmed"
        elif seats.get(p["seat_id"]) != "sold":
            why = f"paid seat is {seats.get(p['seat_id'])}, not sold"
        if why:
            lost.append({"user_id": p["user_id"], "what": "purchase", "why": why})

    # Double sales: per seat, across every order and reservation of the event.
    tickets_per_seat: Counter[str] = Counter()
    paid_per_seat: Counter[str] = Counter()
    for order in orders:
        for ticket in _valid_tickets(order):
            tickets_per_seat[ticket["seat_id"]] += 1
        if order.get("status") == "paid":
            for seat in order.get("seats", []):
                paid_per_seat[seat["id"] if isinstance(seat, dict) else seat] += 1
    confirmed_per_seat: Counter[str] = Counter()
    for reservation in reservations.values():
        if reservation is not None and reservation.get("status") == "confirmed":
            for seat in reservation.get("seats", []):
                confirmed_per_seat[seat["id"]] += 1
    double_sold = sorted({s for counter in (tickets_per_seat, paid_per_seat, confirmed_per_seat)
                          for s, n in counter.items() if n > 1})

    duplicated: list[dict[str, Any]] = []
    for user, rids in sorted(reservations_by_user.items()):
        if len(rids) > 1:
            duplicated.append({"user_id": user, "why": f"{len(rids)} reservations for one purchase"})
    for user, user_orders in sorted(orders_by_user.items()):
        if len(user_orders) > 1 and len(reservations_by_user.get(user, ())) <= 1:
            duplicated.append({"user_id": user, "why": f"{len(user_orders)} orders for one purchase"})
    for order in orders:
        charged = sum(1 for pay in order.get("payments", []) if pay.get("status") in ("succeeded", "refunded"))
        if charged > 1:
            duplicated.append({"order_id": order["id"], "why": f"charged {charged} times"})
        per_seat = Counter(t["seat_id"] for t in _valid_tickets(order))
        if any(n > 1 for n in per_seat.values()):
            duplicated.append({"order_id": order["id"], "why": "two valid tickets for one seat"})

    unknown = {"holds": {"applied": 0, "not_applied": 0}, "payments": {"applied": 0, "not_applied": 0}}
    for p in purchases:
        if p.get("hold") == "unknown":
            applied = bool(orders_by_user.get(p["user_id"]) or reservations_by_user.get(p["user_id"]))
            unknown["holds"]["applied" if applied else "not_applied"] += 1
        if p.get("pay") == "unknown":
            paid = any(o.get("status") in ("paid", "refunded") for o in orders_by_user.get(p["user_id"], []))
            unknown["payments"]["applied" if paid else "not_applied"] += 1

    return {
        "purchases": len(purchases),
        "acknowledged_holds": sum(1 for p in purchases if p.get("hold") == "ok"),
        "acknowledged_purchases": sum(1 for p in purchases if p.get("pay") == "ok"),
        "lost": len(lost), "double_sold": len(double_sold), "duplicated": len(duplicated),
        "unknown": unknown,
        "details": {"lost": lost[:20], "double_sold": double_sold[:20], "duplicated": duplicated[:20]},
    }


def write_gap(ops: list[dict[str, Any]], since: float, until: float | None = None) -> dict[str, float | None]:
    """Client-visible write availability after ``since`` (the fault), from the load's write operations.

    Each op has ``t0``/``t1`` (start and end, seconds on the drill's clock) and ``outcome``.
    ``write_gap_s``: from the start of the first write that failed or timed out after ``since`` to the
    end of the next successful write that started after it (0 when no write failed).
    ``longest_stall_s``: the longest stretch after ``since`` in which no write succeeded (writes that
    block without failing, as under strict synchronous replication, show here).
    ``until`` (the next fault, when several are injected under one load): only the writes that ended
    before it count, so a fault's figures are its own and not the next one's.
    """
    after = sorted((o for o in ops if o["t1"] >= since and (until is None or o["t1"] < until)),
                   key=lambda o: o["t0"])
    first_bad = next((o for o in after if o["outcome"] != "ok"), None)
    gap: float | None = 0.0
    if first_bad is not None:
        recovered = [o["t1"] for o in after if o["outcome"] == "ok" and o["t0"] >= first_bad["t0"]]
        gap = round(min(recovered) - first_bad["t0"], 3) if recovered else None
    ends = sorted(o["t1"] for o in after if o["outcome"] == "ok")
    points = [since, *ends]
    stall = max((b - a for a, b in zip(points, points[1:])), default=None)
    return {"write_gap_s": gap, "longest_stall_s": round(stall, 3) if stall is not None else None,
            "first_failed_write_at_s": round(first_bad["t0"] - since, 3) if first_bad else None}


def write_gaps(ops: list[dict[str, Any]], since: float, until: float | None = None) -> dict[str, Any]:
    """``write_gap`` per kind of write (holds hit PostgreSQL, payments MariaDB), headline the worst.

    A payment succeeding while PostgreSQL is down must not close the holds' gap.
    """
    kinds = sorted({o.get("kind") or "write" for o in ops})
    by_kind = {k: write_gap([o for o in ops if (o.get("kind") or "write") == k], since, until) for k in kinds}

    def worst(key: str) -> float | None:
        values = [g[key] for g in by_kind.values() if g[key] is not None]
        unrecovered = any(g["write_gap_s"] is None and g["first_failed_write_at_s"] is not None
                          for g in by_kind.values())
        return None if (key == "write_gap_s" and unrecovered) else max(values, default=None)

    return {"write_gap_s": worst("write_gap_s"), "longest_stall_s": worst("longest_stall_s"), "by_kind": by_kind}
