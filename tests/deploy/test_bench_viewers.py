"""`ticketflow bench --mode viewers` runs against a private daemon and reports what it promises (never timings)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.stack
def test_viewers_mode_runs_and_reports_its_keys(tmp_path):
    out = tmp_path / "viewers.json"
    done = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "bench", "--mode", "viewers", "--viewers", "20",
                           "--duration", "1", "--hold-rate", "10", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "viewers" and report["viewers"] == 20 and report["holds"] == 10
    assert set(report["delay_ms"]) == {"n", "p50", "p95", "p99", "max"}
    assert report["delay_ms"]["n"] == 20 * 10 and report["missing"] == 0 and report["dropped"] == 0
    assert {"rss_mb_before_viewers", "rss_mb_with_viewers", "rss_kb_per_viewer", "daemon", "goal_met"} <= set(report)
    assert "hold commit -> viewer receipt" in done.stdout
