"""``ticketflow trace ORDER_ID``: one purchase's path through all four daemons' logs, with timings.

Where the lines come from (README, "Tracing"): every daemon logs JSON lines (``service``,
``event``, ``ts``, ...), ``run all`` writes them to ``<stack dir>/logs/<replica>.log``
(``reservation.log``; under ``--topology ha`` ``reservation-1.log``, ``reservation-2.log``, ...).
The steps of a purchase:

- reservation ``event_emitted`` (the hold request: ``reservation.created``; later the portal's
  confirm call: ``reservation.confirmed``), with ``correlation_id`` and ``order_id``;
- billing ``events_applied`` (one line per committed batch; its ``trace`` list holds
  ``[seq, correlation id, order id, type, outcome]`` per event) and ``event_emitted`` (the pay
  request: ``payment.succeeded``);
- bridge ``events_published`` / ``events_confirmed`` (per batch, ``trace`` as above without the outcome);
- portal ``message_consumed``, ``sale_event_processed`` (finalized), ``notification`` /
  ``notification_delivered`` (notified).

The purchase's correlation ids are found first: billing's order row keeps the hold request's
(``orders.correlation_id``, read when billing's database answers), and every log line or trace
entry naming the order contributes its id (the pay request has its own). Then every line that
carries one of those ids, or a trace entry for this order, is a step: sorted by time, each
with the time since the first step and since the previous one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

DAEMONS = ("reservation", "billing", "bridge", "portal")


@dataclass(frozen=True)
class Step:
    ts: str
    daemon: str  # the service
    replica: str  # the log file's name (reservation-2 under HA)
    step: str  # the line's event
    type: str | None
    correlation_id: str | None
    detail: str | None  # the outcome, seq, kind: what else the line says about this order


def _daemon_of(path: Path) -> str:
    stem = path.name.split(".log")[0]
    return next((d for d in DAEMONS if stem == d or stem.startswith(d + "-")), stem)


def log_files(logs: Path) -> list[Path]:
    """Every log file in ``logs`` (rotated ones too), HA replicas included."""
    if not logs.is_dir():
        return []
    return sorted(p for p in logs.iterdir() if p.is_file() and ".log" in p.name)


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(errors="replace") as handle:
        for raw in handle:
            if not raw.startswith("{"):
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("ts"), str):
                yield line


def _about(line: Mapping[str, Any], order_id: str) -> bool:
    return order_id in (line.get("order_id"), line.get("reservation_id"))


def _entries(line: Mapping[str, Any]) -> list[list[Any]]:
    trace = line.get("trace")
    return [e for e in trace if isinstance(e, list) and len(e) >= 4] if isinstance(trace, list) else []


def find(order_id: str, files: list[Path], known_ids: Iterable[str] = ()) -> dict[str, Any]:
    """The trace of ``order_id`` through ``files``: its correlation ids, its steps, what is missing."""
    parsed = {path: list(_lines(path)) for path in files}
    ids = {i for i in known_ids if i}
    for lines in parsed.values():
        for line in lines:
            if _about(line, order_id) and isinstance(line.get("correlation_id"), str):
                ids.add(line["correlation_id"])
            for entry in _entries(line):
                if entry[2] == order_id and isinstance(entry[1], str):
                    ids.add(entry[1])
    steps: list[Step] = []
    for path, lines in parsed.items():
        replica = path.name.split(".log")[0]
        for line in lines:
            daemon = line.get("service") if isinstance(line.get("service"), str) else _daemon_of(path)
            for entry in _entries(line):
                if entry[2] == order_id:
                    steps.append(Step(line["ts"], daemon, replica, line.get("event", "?"), entry[3],
                                      entry[1], f"seq {entry[0]}" + (f", {entry[4]}" if len(entry) > 4 else "")))
            if "trace" in line:
                continue
            other_order = line.get("order_id") not in (None, order_id)
            if (line.get("correlation_id") in ids and not other_order) or _about(line, order_id):
                detail = line.get("outcome") or line.get("kind") or line.get("reason")
                steps.append(Step(line["ts"], daemon, replica, line.get("event", "?"), line.get("type"),
                                  line.get("correlation_id"), str(detail) if detail is not None else None))
    steps.sort(key=lambda s: s.ts)
    found = {_daemon_of(p) for p in files}
    seen = {s.daemon for s in steps}
    return {
        "order_id": order_id,
        "correlation_ids": sorted(ids),
        "steps": _timed(steps),
        "logs": [str(p) for p in files],
        "missing_logs": [d for d in DAEMONS if d not in found],
        "silent_daemons": [d for d in DAEMONS if d in found and d not in seen],
    }


def _timed(steps: list[Step]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    first = previous = None
    for step in steps:
        at = datetime.fromisoformat(step.ts.replace("Z", "+00:00"))
        first = first or at
        out.append({**asdict(step), "since_start_ms": round((at - first).total_seconds() * 1000, 1),
                    "since_previous_ms": round((at - (previous or at)).total_seconds() * 1000, 1)})
        previous = at
    return out


def render(report: Mapping[str, Any]) -> str:
    lines = [f"order {report['order_id']}: correlation ids {', '.join(report['correlation_ids']) or '(none found)'}",
             ""]
    if report["steps"]:
        lines.append(f"  {'time (UTC)':<27} {'+start ms':>10} {'+prev ms':>9}  {'daemon':<14} {'step':<22} "
                     f"{'type':<22} {'correlation id':<36}  detail")
        for s in report["steps"]:
            lines.append(f"  {s['ts']:<27} {s['since_start_ms']:>10.1f} {s['since_previous_ms']:>9.1f}  "
                         f"{s['replica']:<14} {s['step']:<22} {s['type'] or '':<22} {s['correlation_id'] or '':<36}  "
                         f"{s['detail'] or ''}")
    else:
        lines.append("  no log line names this order or its correlation ids")
    for daemon in report["missing_logs"]:
        lines.append(f"  {daemon}: no log file found (looked in the logs directory for {daemon}.log, {daemon}-N.log)")
    for daemon in report["silent_daemons"]:
        lines.append(f"  {daemon}: its log has no line about this order (not there yet, or rotated away?)")
    return "\n".join(lines)


def order_correlation_id(order_id: str, env: Mapping[str, str]) -> str | None:
    """Billing's record of the hold request's id (``orders.correlation_id``); None if unreachable."""
    dsn = env.get("TICKETFLOW_MARIADB_DSN")
    if not dsn:
        return None
    try:
        import pymysql

        from deploy.runtime.mysql import MariaDsn

        parsed = MariaDsn.parse(dsn)
        host, port = parsed.hosts[0]
        conn = pymysql.connect(host=host, port=port, user=parsed.user, password=parsed.password,
                               database=parsed.database, connect_timeout=2, read_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT correlation_id FROM orders WHERE id = %s", (order_id,))
                row = cursor.fetchone()
        finally:
            conn.close()
    except Exception:
        return None
    return row[0] if row else None
