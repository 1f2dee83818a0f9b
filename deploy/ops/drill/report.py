"""A drill's report as the table an operator reads, and as JSON (printed, and to a file on request)."""

from __future__ import annotations

from typing import Any

from deploy.ops.drill.cluster_faults import describe
from deploy.ops.reports import publish


def _s(value: Any) -> str:
    return "-" if value is None else f"{value:.2f} s" if isinstance(value, float) else str(value)


def _audit_lines(report: dict[str, Any]) -> list[str]:
    a = report["audit"]
    unknown = a["unknown"]
    return [
        "  errors clients saw       " + (", ".join(f"{k}: {v}" for k, v in report["errors"].items()) or "none"),
        "  audit                    "
        f"{a['acknowledged_purchases']} purchases acknowledged ({a['acknowledged_holds']} holds): "
        f"lost {a['lost']}, duplicated {a['duplicated']}, double-sold {a['double_sold']}",
        "  unknown outcomes         "
        f"holds {unknown['holds']['applied']} applied / {unknown['holds']['not_applied']} not; "
        f"payments {unknown['payments']['applied']} applied / {unknown['payments']['not_applied']} not",
    ]


def render(report: dict[str, Any]) -> str:
    if report["drill"] == "chaos":
        return render_chaos(report)
    if report["drill"] == "seed-concurrency":
        return "\n".join([
            f"ticketflow drill seed-concurrency: {report['what']}",
            f"  winners                  {report['winners']} of {report['n']}"
            f"   ({'OK: exactly one' if report['exactly_one_winner'] else 'FAILED: want exactly one'})",
            f"  seat afterwards          {report['seat_status']}",
            f"  losers saw               {report['errors'] or '-'}",
        ])
    w = report["writes"]
    lines = [
        f"ticketflow drill {report['drill']}: {report['what']}",
        f"  load                     {report['buyers']} buyers for {report['load_s']} s, request timeout "
        f"{report['request_timeout_s']} s: {w['total']} writes, {w['ok']} ok, {w['failed']} failed, "
        f"{w['unknown']} unknown",
        f"  time to detect           {_s(report['time_to_detect_s'])}",
        f"  client write gap         {_s(report['write_gap_s'])}   (first failed write -> next successful one)",
        "  per kind of write        " + ", ".join(
            f"{k}: gap {_s(g['write_gap_s'])}, stall {_s(g['longest_stall_s'])}" for k, g in report["by_kind"].items()),
        f"  longest write stall      {_s(report['longest_stall_s'])}   (no write succeeded for this long)",
        f"  recovery                 {_s(report['recovery_s'])}   (until every component was healthy again)",
        "  milestones               " + (", ".join(f"{k} {v:.2f} s" for k, v in report["milestones_s"].items())
                                         or "-"),
        *describe(report.get("facts") or {}),
        *([("  until healthy            " + "; ".join(f"{k} (last {v:.2f} s)" for k, v in blockers.items()))]
          if (blockers := report.get("recovery_blockers_s")) else []),
        *(f"  killed {v['name']:<17} serving again {_s(v['serving_again_s'])}"
          + (f", HAProxy {v['haproxy']} down {_s(v['down_in_haproxy_s'])}, UP {_s(v['up_in_haproxy_s'])}"
             if "haproxy" in v else "")
          + f"; {v['failed_writes']} failed writes ({v['failed_then_retried_ok']} ok on the retry)"
          for v in report.get("victims", [])),
        *_audit_lines(report),
        "  stack afterwards         " + ("healthy" if report["healthy_after"]
                                          else "UNHEALTHY: " + "; ".join(report["problems_after"])),
    ]
    return "\n".join(lines)


CHAOS_COLUMNS = ("step", "detect", "write gap", "stall", "recovery", "ok", "failed", "unknown", "status")


def render_chaos(report: dict[str, Any]) -> str:
    """One row per fault (its detection, client write gap and longest stall from the writes that ended before the
    next fault, recovery until every component was healthy), then the one audit of the whole run."""
    rows = [CHAOS_COLUMNS]
    for s in report["steps"]:
        if "at_s" not in s:
            rows.append((s["step"], "-", "-", "-", "-", "-", "-", "-", s["status"].upper()))
            continue
        w = s.get("writes", {})
        rows.append((s["step"], _s(s["time_to_detect_s"]), _s(s.get("write_gap_s")), _s(s.get("longest_stall_s")),
                     _s(s["recovery_s"]), str(w.get("ok", "-")), str(w.get("failed", "-")), str(w.get("unknown", "-")),
                     s["status"] + (f": {s['error']}" if s.get("error") else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(CHAOS_COLUMNS) - 1)]
    table = ["  " + "  ".join(c.ljust(n) for c, n in zip(r, widths)) + "  " + r[-1] for r in rows]
    w = report["writes"]
    lags = ", ".join(f"{k} {v}" for k, v in report["lags_after"].items())
    return "\n".join([
        f"ticketflow drill chaos: {report['what']}",
        f"  load: {report['buyers']} buyers for {report['load_s']} s, request timeout {report['request_timeout_s']} s, "
        f"at least {report['dwell_s']} s per fault: {w['total']} writes, {w['ok']} ok, {w['failed']} failed, "
        f"{w['unknown']} unknown",
        *table,
        "  (detect and recovery from the injection; write gap: first failed write -> next successful one; stall: "
        "longest time no write succeeded; both from the writes that ended before the next fault)",
        *_audit_lines(report),
        f"  links afterwards         {lags or '-'}; dead letters {_s(report['dead_letters'])}",
        "  stack afterwards         " + ("healthy" if report["healthy_after"]
                                          else "UNHEALTHY: " + "; ".join(report["problems_after"])),
        "  verdict                  " + ("PASSED" if not report["failures"]
                                          else "FAILED: " + "; ".join(report["failures"])),
    ])


def passed(report: dict[str, Any]) -> bool:
    if report["drill"] == "chaos":
        return not report["failures"]
    if report["drill"] == "seed-concurrency":
        return report["exactly_one_winner"]
    a = report["audit"]
    return a["lost"] == 0 and a["duplicated"] == 0 and a["double_sold"] == 0 and report["healthy_after"]


def emit(report: dict[str, Any], json_path: str | None) -> None:
    publish(report, render(report), json_path)
