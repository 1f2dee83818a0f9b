"""`seed-concurrency`: N simultaneous holds of one seat against a real reservation daemon; exactly one wins."""

from __future__ import annotations

import aiohttp
import pytest

from deploy.ops.drill.faults import Target
from deploy.ops.drill.report import passed, render
from deploy.ops.drill.run import run_seed_concurrency
from deploy.runtime.auth import SERVICE
from tests.billing.conftest import Pipeline
from tests.support.auth import token
from tests.support.stack import fresh_pg_database

pytestmark = [pytest.mark.stack]


async def test_seed_concurrency_has_exactly_one_winner_and_the_losers_see_seat_unavailable(tmp_path):
    async with fresh_pg_database("tf_drill_seed") as pg, aiohttp.ClientSession() as session:
        pipeline = Pipeline(pg, None, None, tmp_path, session)
        try:
            reservation = await pipeline.reservation()
            target = Target(urls={"reservation": reservation.api.base_url}, token=token(SERVICE), env={})
            report = await run_seed_concurrency(target, n=12)
            print(render(report))
            assert report["winners"] == 1 and report["seat_status"] == "held", report
            assert report["errors"] == {"409 SEAT_UNAVAILABLE": 11}, report["errors"]
            assert passed(report)
        finally:
            pipeline.stop()
