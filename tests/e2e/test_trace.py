"""One purchase followed through all four daemons' logs by its correlation ids (README, "Tracing")."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

from deploy.ops import trace
from tests.billing.conftest import order_appears
from tests.helpers import wait_until


def _header(reply, name: str) -> str | None:
    return {k.lower(): v for k, v in reply.headers.items()}.get(name.lower())


def _lines(service) -> list[dict]:
    return [json.loads(line) for line in service.process.log_lines() if line.startswith("{")]


def _steps(lines: list[dict], correlation_id: str, order_id: str) -> list[tuple[str, str | None]]:
    """(event, type) of each line about the order carrying the id, per-batch trace entries included, in log order."""
    found = []
    for line in lines:
        entries = [e for e in line.get("trace", []) if e[1] == correlation_id and e[2] == order_id]
        found += [(line["event"], e[3]) for e in entries]
        if "trace" not in line and line.get("correlation_id") == correlation_id and \
                line.get("order_id") in (order_id, None):
            found.append((line["event"], line.get("type")))
    return found


async def test_a_purchase_is_followed_through_every_daemon_log_and_by_ticketflow_trace(full, tmp_path):
    await full.start_all()
    reservation, billing = full["reservation"], full["billing"]
    hold_id, pay_id = f"hold-{uuid.uuid4().hex}", f"pay-{uuid.uuid4().hex}"
    event = await reservation.api.post("/api/events", {
        "name": "Show", "venue": "Hall", "starts_at": "2027-01-01T20:00:00Z",
        "layout": {"sections": [{"name": "A", "rows": 1, "seats_per_row": 2, "price_minor": 2500, "currency": "EUR"}]}})
    seat = (await reservation.api.get(f"/api/events/{event.body['id']}/seats")).body["seats"][0]["id"]
    held = await reservation.api.post("/api/reservations", {"event_id": event.body["id"], "seat_ids": [seat],
                                                            "user_id": "tracer"}, headers={"X-Request-Id": hold_id})
    assert held.status == 201 and _header(held, "X-Request-Id") == hold_id
    order_id = held.body["id"]
    await wait_until(lambda: order_appears(billing, order_id), 10, "the order appearing in billing")
    paid = await billing.api.post(f"/api/orders/{order_id}/pay", headers={"Idempotency-Key": order_id,
                                                                         "X-Request-Id": pay_id})
    assert paid.status == 200 and _header(paid, "X-Request-Id") == pay_id

    expected = {
        "reservation": [(hold_id, [("event_emitted", "reservation.created")]),
                        # the portal's confirm call carries the payment's id on to the reservation daemon
                        (pay_id, [("event_emitted", "reservation.confirmed")])],
        "billing": [(hold_id, [("events_applied", "reservation.created")]),
                    (pay_id, [("event_emitted", "payment.succeeded"), ("events_applied", "reservation.confirmed")])],
        "bridge": [(pay_id, [("events_published", "payment.succeeded"), ("events_confirmed", "payment.succeeded")])],
        "portal": [(pay_id, [("message_consumed", "payment.succeeded"), ("sale_event_processed", "payment.succeeded"),
                             ("notification", None), ("notification_delivered", None)])],
    }

    async def every_step_logged() -> bool:
        return all(_steps(_lines(full[daemon]), cid, order_id) == steps
                   for daemon, ids in expected.items() for cid, steps in ids)

    try:
        await wait_until(every_step_logged, 20, "every daemon logging its steps of the purchase, in order")
    except AssertionError:
        for daemon, ids in expected.items():
            for cid, steps in ids:
                print(daemon, cid, _steps(_lines(full[daemon]), cid, order_id), "expected", steps)
        raise

    # Stored with what the requests caused: the outbox rows, billing's order, the notification.
    rows = await full.reservation_sql("SELECT type, correlation_id FROM outbox ORDER BY id")
    assert [(r["type"], r["correlation_id"]) for r in rows] == [
        ("reservation.created", hold_id), ("reservation.confirmed", pay_id)]
    assert (await full.maria("SELECT correlation_id FROM orders WHERE id = %s", (order_id,)))[0]["correlation_id"] \
        == hold_id
    assert [r["correlation_id"] for r in await full.maria("SELECT correlation_id FROM outbox")] == [pay_id]
    notes = await full.portal_sql("SELECT correlation_id FROM portal_notifications WHERE order_id = $1", order_id)
    assert [n["correlation_id"] for n in notes] == [pay_id]

    # ticketflow trace: all four daemons, in time order, from the logs alone; then as JSON.
    logs = tmp_path / "logs"
    logs.mkdir()
    for daemon in ("reservation", "billing", "bridge", "portal"):
        Path(logs / f"{daemon}.log").write_text("\n".join(full[daemon].process.log_lines()) + "\n")
    report = trace.find(order_id, trace.log_files(logs))
    assert set(report["correlation_ids"]) == {hold_id, pay_id}
    assert {s["daemon"] for s in report["steps"]} == {"reservation", "billing", "bridge", "portal"}
    assert report["missing_logs"] == [] and report["silent_daemons"] == []
    times = [s["ts"] for s in report["steps"]]
    assert times == sorted(times) and report["steps"][0]["step"] == "event_emitted"
    assert all(s["since_previous_ms"] >= 0 for s in report["steps"])

    cli = [sys.executable, "-m", "deploy.ops.cli", "trace", order_id, "--logs", str(logs), "--no-db"]
    text = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    for daemon in ("reservation", "billing", "bridge", "portal"):
        assert f" {daemon} " in text.stdout, text.stdout
    print(text.stdout)
    as_json = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert [s["step"] for s in as_json["steps"]] == [s["step"] for s in report["steps"]]

    # A missing log is named.
    (logs / "bridge.log").unlink()
    missing = subprocess.run(cli, capture_output=True, text=True, timeout=60).stdout
    assert "bridge: no log file found" in missing
