"""The README's metrics table, deploy/prometheus.yml and the Grafana dashboard agree with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deploy.ops.daemons import DAEMONS
from deploy.ops.stack.keys import Keys
from deploy.runtime.metrics import exported_names

ROOT = Path(__file__).resolve().parents[2]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_the_readme_table_names_exactly_the_ticketflow_metrics_exported():
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (counter|gauge|histogram) \|", readme_section("Metrics"), re.M)
    documented = {re.sub(r"_total$", "", name) for name, _ in rows}
    exported = {name for name in exported_names() if name.startswith("ticketflow_")}
    assert documented == exported, (f"in the README only: {sorted(documented - exported)}; "
                                    f"exported only: {sorted(exported - documented)}")
    for name, kind in rows:  # counters are written as PromQL sees them
        assert name.endswith("_total") == (kind == "counter"), name


def test_prometheus_scrapes_every_daemon_port_of_both_topologies_with_the_stack_token():
    config = (ROOT / "deploy" / "prometheus.yml").read_text()
    jobs = dict(re.findall(r"- job_name: (\w+)\n(.*?)(?=\n  - job_name:|\Z)", config, re.S))
    assert set(jobs) == {spec.name for spec in DAEMONS}
    for spec in DAEMONS:
        targets = set(re.findall(r"127\.0\.0\.1:(\d+)", jobs[spec.name]))
        want = {str(spec.default_port), *(p.strip() for p in spec.replica_ports.split(",") if p.strip())}
        assert targets == want, (spec.name, targets, want)
        token = re.search(r"credentials_file: (\S+)", jobs[spec.name]).group(1)
        # relative to the config file: the token `ticketflow stack up` provisions under .stack/
        assert (ROOT / "deploy" / token).resolve() == Keys(ROOT / ".stack").token_file("prometheus").resolve()


def test_the_stack_provisions_a_service_token_for_prometheus(tmp_path):
    keys = Keys(tmp_path)
    keys.ensure()
    import jwt

    claims = jwt.decode(keys.token_file("prometheus").read_text().strip(), options={"verify_signature": False})
    assert claims["role"] == "service" and claims["sub"] == "prometheus"


def test_the_dashboard_is_one_screen_of_valid_grafana_json():
    board = json.loads((ROOT / "deploy" / "grafana" / "ticketflow.json").read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("latency", "holds", "payments", "sales", "lag", "relay", "rabbitmq", "dead letters", "pool",
                  "restarts"):
        assert topic in titles, topic
