"""GET /metrics on all four daemons (README, "Metrics"): Prometheus text that the client library's
parser reads, that moves with one purchase end to end, whose labels stay bounded, that only a
service may read, and that covers every metric the Grafana dashboard draws."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from deploy.runtime.metrics import UNMATCHED
from tests.e2e.test_pipeline import buy
from tests.helpers import wait_until
from tests.support.auth import bearer

DAEMONS = ("reservation", "billing", "bridge", "portal")
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ticketflow.json"


class Scrape:
    """One /metrics answer, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))
        self.names = {family.name for family in self.families}
        self.samples = [sample for family in self.families for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def has(self, name: str, **labels: str) -> bool:
        return any(s.name == name and all(s.labels.get(k) == v for k, v in labels.items()) for s in self.samples)

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name}


async def scrape(full, name: str) -> Scrape:
    async with full.session.get(full[name].api.base_url + "/metrics", headers=bearer()) as reply:
        assert reply.status == 200, await reply.text()
        assert reply.content_type == "text/plain"
        return Scrape(await reply.text())


async def scrape_all(full) -> dict[str, Scrape]:
    return {name: await scrape(full, name) for name in DAEMONS}


def dashboard_metric_names() -> set[str]:
    """Every metric name the dashboard's PromQL uses (a name is what precedes a `{` or `[` or stands
    inside an aggregation, and starts with one of the exported prefixes)."""
    board = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    expressions += [v.get("query", {}).get("query", "") if isinstance(v.get("query"), dict) else v.get("query", "")
                    for v in board.get("templating", {}).get("list", [])]
    assert len(expressions) >= 10, "the dashboard draws the pipeline: more than a handful of queries"
    return {name for expr in expressions for name in re.findall(r"\b((?:ticketflow|process|python)_[a-z0-9_]+)", expr)}


def family_of(name: str) -> str:
    """A sample name as PromQL writes it -> the family name the parser reports."""
    return re.sub(r"_(total|bucket|sum|count|created)$", "", name)


async def test_every_daemon_exports_metrics_that_move_with_a_purchase(full):
    await full.start_all()
    before = await scrape_all(full)
    for name, got in before.items():
        assert "process_resident_memory_bytes" in got.names, name
        assert got.value("ticketflow_process_restarts") == 0, name
    assert before["reservation"].value("ticketflow_holds_total") == 0

    user = (await full["billing"].api.post("/api/users", {"email": f"m-{uuid.uuid4().hex[:6]}@example.com",
                                                          "name": "M", "password": "pw-0123456789"})).body
    held, _ = await buy(full, user["id"])
    after: dict[str, Scrape] = {}

    async def moved() -> bool:
        after.update(await scrape_all(full))
        r, b, br, p = (after[n] for n in DAEMONS)
        return (r.value("ticketflow_link_acked_position", stream="reservations") >= 2  # created, confirmed
                and b.value("ticketflow_link_applied_position", stream="reservations") >= 2
                and b.value("ticketflow_link_acked_position", stream="payments") >= 1
                and br.value("ticketflow_link_applied_position", stream="payments") >= 1
                and p.value("ticketflow_sales_finalized_total") >= 1)

    await wait_until(moved, 15, "link positions and the portal's sale counter moving after a purchase")
    r, b, br, p = (after[n] for n in DAEMONS)
    # requests by route template, method and status; latency histograms per route
    assert r.value("ticketflow_http_requests_total", route="/api/reservations", method="POST", status="201") == 1
    assert r.value("ticketflow_http_request_duration_seconds_count", route="/api/reservations", method="POST") == 1
    assert b.value("ticketflow_http_requests_total", route="/api/orders/{order_id}/pay", status="200") == 1
    # outcomes
    assert r.value("ticketflow_holds_total", outcome="held") == 1
    assert b.value("ticketflow_payments_total", outcome="succeeded") == 1
    assert p.value("ticketflow_sales_finalized_total", outcome="sale_finalized") == 1
    # both links, both ends; the relays that sent them are the active ones
    assert r.value("ticketflow_relay_active", stream="reservations") == 1
    assert b.value("ticketflow_relay_active", stream="payments") == 1
    assert r.value("ticketflow_link_sent_position", stream="reservations") >= 2
    assert b.value("ticketflow_link_received_position", stream="reservations") >= 2
    assert b.value("ticketflow_link_sent_position", stream="payments") >= 1
    assert br.value("ticketflow_link_received_position", stream="payments") >= 1
    assert r.has("ticketflow_link_lag_events", stream="reservations", end="sender")
    assert br.has("ticketflow_link_lag_events", stream="payments", end="receiver")
    # RabbitMQ: the bridge published and had confirmed what the portal consumed
    assert br.value("ticketflow_amqp_published_total", exchange="events") >= 1
    assert br.value("ticketflow_amqp_confirmed_total", exchange="events") >= 1
    assert p.value("ticketflow_amqp_consumed_total", outcome="acked") >= 1
    # pools (reservation and portal on PostgreSQL, billing on MariaDB)
    assert r.value("ticketflow_db_pool_max", database="postgresql") > 0
    assert b.value("ticketflow_db_pool_connections", database="mariadb") >= 1
    assert p.has("ticketflow_db_pool_in_use", database="postgresql")
    for name in DAEMONS:  # every counter only grows
        for sample in before[name].samples:
            if sample.name.endswith("_total"):
                assert after[name].value(sample.name, **sample.labels) >= sample.value, (name, sample)

    # Every metric the dashboard draws is exported by some daemon.
    exported = set().union(*(s.names for s in after.values()))
    missing = {name for name in dashboard_metric_names() if family_of(name) not in exported}
    assert not missing, f"the dashboard queries metrics no daemon exports: {sorted(missing)}"


async def test_only_a_service_may_scrape_and_unknown_paths_are_one_label(full):
    await full.start_all()
    for name in DAEMONS:
        url = full[name].api.base_url + "/metrics"
        async with full.session.get(url) as anonymous:
            assert anonymous.status == 401, name
            assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await anonymous.json())["error"]["code"] == "UNAUTHORIZED"
        async with full.session.get(url, headers=bearer("buyer")) as buyer:
            assert buyer.status == 403 and (await buyer.json())["error"]["code"] == "FORBIDDEN", name
        async with full.session.get(url, headers={"Authorization": "Bearer not.a.token"}) as garbage:
            assert garbage.status == 401, name

    base = full["reservation"].api.base_url
    probes = [f"/nothing/{uuid.uuid4()}" for _ in range(30)] + [f"/api/events/{uuid.uuid4()}" for _ in range(5)]
    for path in probes:
        async with full.session.get(base + path, headers=bearer()) as reply:
            assert reply.status == 404
    async with full.session.put(base + "/health") as odd:  # a method the route lacks: 405, no route
        assert odd.status == 405
    got = await scrape(full, "reservation")
    routes = got.label_values("ticketflow_http_requests_total", "route")
    spec_paths = set(full["reservation"].api.spec["paths"])
    assert routes <= spec_paths | {UNMATCHED}, routes - spec_paths
    assert got.value("ticketflow_http_requests_total", route=UNMATCHED, status="404") == 30
    assert got.value("ticketflow_http_requests_total", route="/api/events/{event_id}", status="404") == 5
    assert got.label_values("ticketflow_http_requests_total", "method") <= {"GET", "PUT"}
    assert got.value("ticketflow_http_requests_total", route=UNMATCHED, method="PUT", status="405") == 1
    # the failed scrapes above were counted on each daemon too, under their template
    assert got.value("ticketflow_http_requests_total", route="/metrics", status="401") == 2
