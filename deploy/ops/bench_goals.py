"""``ticketflow bench --mode goals``: every figure of issue 13 from one run, each beside its baseline.

Runs the other modes one after another (the machine is shared, so only a figure and the
baseline measured in the same minutes mean anything together) and prints one table: the
figure, its same-run baseline, the ratio, the goal and whether it is met. The modes that need
the pipeline (buyers, open loop, HTTP holds) use the one ``ticketflow run all`` started; the
others make private daemons and throwaway databases of their own.

Each mode's own report is kept whole under ``reports`` in the JSON, so nothing measured is
lost to the summary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from deploy.ops import bench, bench_backlog, bench_bridge, bench_http, bench_open, bench_sql
from deploy.ops.reports import publish
from deploy.ops.resources import RSS_LIMIT_MB


@dataclass(frozen=True)
class Goal:
    what: str
    figure: Callable[[dict[str, Any]], float | None]
    baseline: Callable[[dict[str, Any]], float | None] | None
    target: str  # in words, e.g. "ratio >= 0.5"
    met: Callable[[float | None, float | None], bool]
    # False where the baseline only says how busy the machine was (pgbench SELECT 1): a ratio of a
    # latency to a tps would mean nothing.
    ratio: bool = True


def _ratio(figure: float | None, baseline: float | None) -> float | None:
    return round(figure / baseline, 3) if figure is not None and baseline else None


def _sql(r: dict[str, Any], statement: str, clients: int) -> float | None:
    return next((run["tps"] for run in r["holds-sql"]["runs"]
                 if run["statement"] == statement and run["clients"] == clients), None)


def _http(r: dict[str, Any], path: str) -> float | None:
    return next((run["holds_per_s"] for run in r["holds-http"]["runs"] if run["path"] == path), None)


def _hop(r: dict[str, Any], name: str) -> float | None:
    return r["buyers"]["propagation_ms"][name]["p99"]


def _select1(r: dict[str, Any], mode: str) -> float | None:
    base = r[mode].get("baseline") or {}
    return base.get("tps")


def _peak_rss(r: dict[str, Any]) -> float | None:
    peaks = [d["peak_rss_mb"] for mode in ("buyers", "open-loop") for d in (r[mode].get("resources") or {}).values()
             if d.get("peak_rss_mb") is not None]
    peaks += [v for v in r["backlog"]["peak_rss_mb"].values() if v is not None]
    peaks += [d["peak_rss_mb"] for d in (r["bridge"].get("resources") or {}).values() if d.get("peak_rss_mb")]
    return max(peaks) if peaks else None


def _at_least(limit: float) -> Callable[[float | None, float | None], bool]:
    return lambda figure, _: figure is not None and figure >= limit


def _ratio_at_least(limit: float) -> Callable[[float | None, float | None], bool]:
    return lambda figure, baseline: (_ratio(figure, baseline) or 0) >= limit


def _below(limit: float) -> Callable[[float | None, float | None], bool]:
    return lambda figure, _: figure is not None and figure < limit


GOALS = [
    Goal("hold statement (tf_reserve), pgbench 16 clients, tps", lambda r: _sql(r, "daemon", 16),
         lambda r: _sql(r, "one-statement", 16), "ratio >= 0.5 of the one-statement hold", _ratio_at_least(0.5)),
    Goal("hold statement scales 1 -> 16 clients (tps ratio)",
         lambda r: _ratio(_sql(r, "daemon", 16), _sql(r, "daemon", 1)),
         lambda r: _ratio(_sql(r, "one-statement", 16), _sql(r, "one-statement", 1)),
         "scales (16-client tps > 1-client tps)", _at_least(1.5)),
    Goal("HTTP holds, 16 workers, holds/s", lambda r: _http(r, "http"), lambda r: _http(r, "sql"),
         "ratio >= 0.7 of tf_reserve driven directly", _ratio_at_least(0.7)),
    Goal("reserve p99 at an offered 1,000 holds/s, ms",
         lambda r: r["open-loop"]["reserve_latency_from_planned_ms"]["p99"], lambda r: _select1(r, "open-loop"),
         "< 20 ms (baseline: pgbench SELECT 1 tps)", _below(20), ratio=False),
    Goal("  achieved holds/s at that offered rate", lambda r: r["open-loop"]["achieved_holds_per_s"],
         lambda r: r["open-loop"]["offered_per_s"], "= offered (ratio 1.0)", _ratio_at_least(0.98)),
    Goal("purchases/s, 32 buyers", lambda r: r["buyers"]["purchases_per_s"], lambda r: _select1(r, "buyers"),
         ">= 300 (baseline: pgbench SELECT 1 tps)", _at_least(300), ratio=False),
    Goal("reservation commit -> order in billing, p99 ms",
         lambda r: _hop(r, "reservation commit -> order in billing"), None, "< 50 ms", _below(50)),
    Goal("payment commit -> sale finalized, p99 ms", lambda r: _hop(r, "payment commit -> sale finalized"), None,
         "< 100 ms", _below(100)),
    Goal("backlog drain into MariaDB, events/s", lambda r: r["backlog"]["drain"]["events_per_s"],
         lambda r: r["backlog"]["baseline"]["rows_per_s"], ">= 10,000 events/s (baseline: plain multi-row INSERT)",
         _at_least(10_000)),
    Goal("billing -> bridge -> RabbitMQ, msgs/s", lambda r: r["bridge"]["bridge"]["msgs_per_s"],
         lambda r: r["bridge"]["baseline"]["msgs_per_s"], "ratio >= 0.8 of a plain confirming publisher",
         _ratio_at_least(0.8)),
    Goal("largest daemon peak RSS under these loads, MB", _peak_rss, None, f"< {RSS_LIMIT_MB} MB",
         _below(RSS_LIMIT_MB)),
]


async def run(seconds: float, backlog_events: int, bridge_events: int, seats: int) -> dict[str, Any]:
    reports: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # Self-contained modes first (they need only the stack), then the ones that drive the pipeline.
    reports["holds-sql"] = await bench_sql.run(int(seconds), [1, 16], seats)
    reports["backlog"] = await bench_backlog.run(backlog_events)
    reports["bridge"] = await bench_bridge.run(bridge_events)
    reports["holds-http"] = await bench_http.run(seconds, 16, False)
    reports["open-loop"] = await bench_open.run(1000, seconds, True)
    reports["buyers"] = await bench.run(seconds, 32, True)
    reports["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = []
    for goal in GOALS:
        try:
            figure = goal.figure(reports)
            baseline = goal.baseline(reports) if goal.baseline else None
        except (KeyError, TypeError):
            figure = baseline = None
        rows.append({"what": goal.what, "figure": figure, "baseline": baseline,
                     "ratio": _ratio(figure, baseline) if goal.ratio else None, "goal": goal.target,
                     "met": goal.met(figure, baseline)})
    return {"mode": "goals", "goals": rows, "reports": reports}


def _cell(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def render(report: dict[str, Any]) -> str:
    reports = report["reports"]
    lines = [f"ticketflow bench --mode goals: {reports['started']} .. {reports['finished']}", "",
             "| figure | this run | baseline, same run | ratio | goal | met |",
             "| --- | ---: | ---: | ---: | --- | --- |"]
    for row in report["goals"]:
        lines.append(f"| {row['what']} | {_cell(row['figure'])} | {_cell(row['baseline'])} | "
                     f"{_cell(row['ratio'])} | {row['goal']} | {'yes' if row['met'] else '**no**'} |")
    return "\n".join(lines)


def main(seconds: float, backlog_events: int, bridge_events: int, seats: int, json_path: str | None) -> int:
    report = asyncio.run(run(seconds, backlog_events, bridge_events, seats))
    publish(report, render(report), json_path)
    return 0
