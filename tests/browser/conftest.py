"""The browser-test base every page's tests share: Debian's chromium driven by Playwright for Python.

- ``browser``: a headless chromium launched from the system's ``/usr/bin/chromium`` (installed by
  deploy/bootstrap.sh; never ``playwright install``: these machines reach no browser download site).
- ``screenshot(page, name)``: writes ``docs/screenshots/<name>.png`` (committed; the README shows it).
- No sleeps: wait with Playwright's ``expect(...)`` / ``wait_for`` and an explicit timeout.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from tests.billing.conftest import Pipeline
from tests.support.stack import fresh_mariadb_database, fresh_pg_database

CHROMIUM = os.environ.get("TICKETFLOW_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
EXPECT_TIMEOUT_MS = 10_000


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright, expect

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium (sh deploy/bootstrap.sh)")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser, width: int = 1100, height: int = 800, **context):
    """A page in a fresh context (its own storage: another person), with console errors collected.
    ``context``: more of Playwright's context options (e.g. ``timezone_id``)."""
    context = await browser.new_context(viewport={"width": width, "height": height}, **context)
    page = await context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    # Script errors and CSP violations; an API answering 404 (an order not arrived yet) is expected and
    # logged by chromium as "Failed to load resource", so failed loads are judged by what they were:
    page.on("console", lambda msg: page.errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: page.errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and r.request.resource_type in ("document", "script", "stylesheet", "image") else None)
    return page


async def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def staff_account(maria_dsn: str, role: str) -> tuple[str, str, str]:
    """A door or organizer account with a password in billing's database, as `ticketflow users create`
    makes one: (user id, e-mail, password)."""
    import uuid

    from billing_daemon.accounts import hash_password
    from billing_daemon.store import BillingStore
    from deploy.runtime.mysql import MariaDB

    email, password = f"{role}-{uuid.uuid4().hex[:8]}@example.com", "a long staff passphrase"
    db = MariaDB(maria_dsn)
    await db.start()
    try:
        created = await BillingStore(db).create_user(email, role.title(), None,
                                                     password_hash=await hash_password(password), role=role)
    finally:
        await db.close()
    return created.body["id"], email, password


async def log_in(page, email: str, password: str) -> None:
    """Through the shared log-in box (tf.js)."""
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()


@pytest.fixture
async def shop(tmp_path):
    """A reservation daemon serving the pages and a billing daemon answering them (CORS for that origin)."""
    async with fresh_pg_database("tf_web_res") as pg, fresh_mariadb_database("tf_web_bill") as maria, \
            aiohttp.ClientSession() as session:
        p = Pipeline(pg, maria, "", tmp_path, session)
        try:
            p.r = await p.reservation()
            p.b = await p.billing(TICKETFLOW_PAGE_ORIGINS=p.r.api.base_url)
            yield p
        finally:
            p.stop()


async def create_event(shop, name: str, rows: int, per_row: int) -> dict:
    reply = await shop.r.api.post("/api/events", {
        "name": name, "venue": "Loopback Arena", "starts_at": "2027-06-01T19:30:00Z",
        "layout": {"sections": [{"name": "STALLS", "rows": rows, "seats_per_row": per_row, "price_minor": 4500,
                                 "currency": "EUR"}]}})
    assert reply.status == 201, reply.body
    return reply.body
