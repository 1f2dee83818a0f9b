"""`--mode goals` turns the modes' reports into issue 13's goal table (pure: hand-made reports in the shapes
the modes' own tests pin)."""

from deploy.ops import bench_goals


def _reports(**over):
    reports = {
        "started": "t0", "finished": "t1",
        "holds-sql": {"runs": [{"statement": "daemon", "clients": 1, "tps": 300.0},
                               {"statement": "one-statement", "clients": 1, "tps": 600.0},
                               {"statement": "daemon", "clients": 16, "tps": 1800.0},
                               {"statement": "one-statement", "clients": 16, "tps": 3000.0}]},
        "holds-http": {"runs": [{"path": "http", "holds_per_s": 700.0}, {"path": "sql", "holds_per_s": 1000.0}]},
        "open-loop": {"offered_per_s": 1000, "achieved_holds_per_s": 990.0,
                      "reserve_latency_from_planned_ms": {"p99": 35.0}, "baseline": {"tps": 50_000.0},
                      "resources": {"reservation": {"peak_rss_mb": 80.0}}},
        "buyers": {"purchases_per_s": 310.0, "baseline": {"tps": 40_000.0},
                   "propagation_ms": {"reservation commit -> order in billing": {"p99": 40.0},
                                      "payment commit -> sale finalized": {"p99": 120.0}},
                   "resources": {"billing": {"peak_rss_mb": 120.0}}},
        "backlog": {"drain": {"events_per_s": 9000.0}, "baseline": {"rows_per_s": 30_000.0},
                    "peak_rss_mb": {"billing": 117.0}},
        "bridge": {"bridge": {"msgs_per_s": 1700.0}, "baseline": {"msgs_per_s": 2000.0},
                   "resources": {"bridge": {"peak_rss_mb": 50.0}}},
    }
    reports.update(over)
    return reports


def _table(reports):
    rows = []
    for goal in bench_goals.GOALS:
        figure = goal.figure(reports)
        baseline = goal.baseline(reports) if goal.baseline else None
        rows.append((goal.what, figure, baseline, goal.met(figure, baseline)))
    return rows


def test_each_goal_reads_its_figure_and_baseline_and_says_whether_it_is_met():
    rows = {what: (figure, baseline, met) for what, figure, baseline, met in _table(_reports())}
    assert rows["hold statement (tf_reserve), pgbench 16 clients, tps"] == (1800.0, 3000.0, True)  # 0.6 >= 0.5
    assert rows["hold statement scales 1 -> 16 clients (tps ratio)"] == (6.0, 5.0, True)
    assert rows["HTTP holds, 16 workers, holds/s"] == (700.0, 1000.0, True)  # exactly 0.7
    assert rows["reserve p99 at an offered 1,000 holds/s, ms"] == (35.0, 50_000.0, False)
    assert rows["purchases/s, 32 buyers"][2] is True
    assert rows["reservation commit -> order in billing, p99 ms"] == (40.0, None, True)
    assert rows["payment commit -> sale finalized, p99 ms"] == (120.0, None, False)
    assert rows["backlog drain into MariaDB, events/s"] == (9000.0, 30_000.0, False)
    assert rows["billing -> bridge -> RabbitMQ, msgs/s"] == (1700.0, 2000.0, True)  # 0.85
    assert rows["largest daemon peak RSS under these loads, MB"] == (120.0, None, True)


def test_the_table_marks_unmet_goals_and_missing_figures():
    report = {"reports": _reports(), "goals": [
        {"what": "a", "figure": 1.0, "baseline": None, "ratio": None, "goal": "x", "met": True},
        {"what": "b", "figure": None, "baseline": 3.0, "ratio": None, "goal": "y", "met": False}]}
    text = bench_goals.render(report)
    assert "| a | 1 | — | — | x | yes |" in text and "| b | — | 3 | — | y | **no** |" in text
