"""`ticketflow bench --mode emit-sql` runs its three variants and reports what it promises."""

from deploy.ops.bench_emit import VARIANTS, render, run


async def test_emit_sql_reports_each_variant_its_ratios_and_a_gap_free_relay_numbering():
    report = await run(0.5, [2])
    assert report["mode"] == "emit-sql"
    assert [(r["variant"], r["clients"]) for r in report["runs"]] == [(v, 2) for v in VARIANTS]
    for r in report["runs"]:
        assert r["transactions"] > 0 and r["tps"] > 0 and r["p50_ms"] <= r["p99_ms"], r
    relayed = report["runs"][-1]
    assert relayed["left_unnumbered"] == 0 and relayed["gap_free"] is True, relayed
    assert set(report["ratios"]["2"]) == {"head_row_over_no_emit", "relay_seq_over_no_emit",
                                          "relay_seq_over_head_row"}
    assert "relay-seq / head-row" in render(report)
