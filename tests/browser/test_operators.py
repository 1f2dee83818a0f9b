"""The operators' console in a real browser (Debian's chromium via Playwright): an operator logs in on the
portal's /ops, sees every daemon up, the lag chart, a dead letter, and a drill started from the button
refusing on the single-node stack with its refusal streamed in. Screenshot: docs/screenshots/operators.png."""

import json
import re
import subprocess
import sys

import aio_pika
from playwright.async_api import expect

from tests.browser.conftest import new_page, screenshot
from tests.e2e.conftest import full  # noqa: F401 (the fixture: all four daemons)

PASSWORD = "an operator passphrase"


def create_operator(full, email: str) -> None:  # noqa: F811
    """Through the CLI an operator uses: ticketflow users create --role operator."""
    result = subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", "users", "create", "--role", "operator", "--email", email,
         "--name", "Olga Operator", "--password", PASSWORD],
        env={**__import__("os").environ, "TICKETFLOW_MARIADB_DSN": full.maria_dsn}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["role"] == "operator"


async def dead_letter(full) -> None:  # noqa: F811
    connection = await aio_pika.connect(full.amqp_url)
    try:
        exchange = await (await connection.channel()).get_exchange(full.names.exchange)
        await exchange.publish(aio_pika.Message(b"not a CloudEvent", message_id="poison-ops"),
                               routing_key="payment.succeeded")
    finally:
        await connection.close()


async def test_the_operators_page_shows_every_daemon_up_a_lag_chart_and_streams_a_drill(browser, full, tmp_path):  # noqa: F811
    await full.start_with_console(tmp_path / "drills", TICKETFLOW_PORTAL_OPS_SAMPLE_SECONDS="1")
    create_operator(full, "olga@example.com")
    await dead_letter(full)

    page = await new_page(browser, 1200, 900)
    await page.goto(full["portal"].api.base_url + "/ops")
    await page.get_by_label("E-mail").fill("olga@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_test_id("signed-in")).to_contain_text("olga@example.com")

    await expect(page.locator("#daemons-summary")).to_have_text("All 4 daemons up", timeout=20_000)
    for name in ("reservation", "billing", "bridge", "portal"):
        await expect(page.locator(f'[data-daemon="{name}"] .state')).to_have_text("up")
    # The chart: one line per link, drawn from at least two samples (the page refreshes it every 5 s).
    line = page.locator('#lag-svg polyline[data-link="reservation -> billing"]')
    await expect(line).to_have_attribute("points", re.compile(r"^\S+ \S+"), timeout=20_000)
    await expect(page.locator("#lag-chart .legend")).to_contain_text("reservation -> billing: 0")
    await expect(page.locator('#dead tr[data-id="poison-ops"]')).to_be_visible(timeout=20_000)

    await page.get_by_label("Drill (against the HA stack)").select_option("pg-switchover")
    await page.get_by_role("button", name="Run drill").click()
    await expect(page.locator("#drill-status")).to_contain_text("finished: refused (exit code 2)", timeout=30_000)
    await expect(page.locator("#drill-output")).to_contain_text("refused")
    await expect(page.locator("#drills li").first).to_contain_text("pg-switchover")
    await screenshot(page, "operators")
    assert page.errors == []  # no script error, no CSP violation


async def test_someone_without_the_operator_role_sees_no_console(browser, full, tmp_path):  # noqa: F811
    await full.start_with_console(tmp_path / "drills")
    page = await new_page(browser)
    await page.goto(full["portal"].api.base_url + "/ops")
    await page.get_by_role("button", name="Sign up").click()
    await page.get_by_label("E-mail").fill("bea@example.com")
    await page.get_by_label("Password").fill("a long passphrase")
    await page.get_by_label("Name").fill("Bea")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#access")).to_contain_text("needs the operator role")
    await expect(page.locator("#console")).to_be_hidden()
