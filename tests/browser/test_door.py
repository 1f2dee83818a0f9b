"""The door page (billing's /door) in chromium at a phone's size (390x844): door staff log in, a
ticket's code admits once (large green "Admitted — seat X"), the second scan is refused with the
first scan's local time (red "Already checked in at HH:MM:SS"), an unknown code says so; the field
has the focus again after every scan. Screenshots: docs/screenshots/door-*.png."""

import secrets
import uuid
from zoneinfo import ZoneInfo

from playwright.async_api import expect

from tests.billing.conftest import order_appears
from tests.browser.conftest import create_event, log_in, new_page, screenshot, staff_account
from tests.helpers import wait_until

PHONE = {"width": 390, "height": 844}
ZONE = "America/New_York"  # not the machine's zone: the page must show the door's local time


async def _ticket(shop) -> dict:
    event = await create_event(shop, "Door Night", 2, 6)
    seat = (await shop.r.api.get(f"/api/events/{event['id']}/seats")).body["seats"][3]
    held = await shop.r.api.post("/api/reservations", {"event_id": event["id"], "seat_ids": [seat["id"]],
                                                       "user_id": str(uuid.uuid4())})
    assert held.status == 201, held.body
    await wait_until(lambda: order_appears(shop.b, held.body["id"]), 10, "the order reaching billing")
    paid = await shop.b.api.post(f"/api/orders/{held.body['id']}/pay", headers={"Idempotency-Key": "door-pay"})
    assert paid.status == 200, paid.body
    return paid.body["tickets"][0]


async def test_the_door_admits_a_code_once_refuses_it_the_second_time_and_knows_no_stranger(browser, shop):
    ticket = await _ticket(shop)
    _, email, password = await staff_account(shop.maria_dsn, "door")
    page = await new_page(browser, timezone_id=ZONE, **PHONE)
    await page.goto(f"{shop.b.api.base_url}/door")
    await expect(page.get_by_label("Ticket code")).to_be_disabled()  # not before a door account logs in
    await log_in(page, email, password)
    field = page.get_by_label("Ticket code")
    await expect(field).to_be_focused()
    result, headline = page.locator("#result"), page.locator("#headline")

    await field.fill(ticket["code"])
    await field.press("Enter")  # what a scanner does after typing the code
    await expect(result).to_have_attribute("data-outcome", "admitted")
    await expect(headline).to_have_text(f"Admitted — seat {ticket['seat_label']}")
    await expect(result.locator(".icon")).to_have_text("✓")  # not by colour only
    await expect(field).to_be_focused()
    await expect(field).to_have_value("")
    assert await result.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(20, 108, 46)"  # green
    await screenshot(page, "door-admitted")

    first = (await shop.maria("SELECT checked_in_at FROM tickets WHERE id = %s", (ticket["id"],)))[0]["checked_in_at"]
    local = first.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(ZONE)).strftime("%H:%M:%S")
    assert local != first.strftime("%H:%M:%S")  # the page really converts
    await field.fill(ticket["code"])
    await field.press("Enter")
    await expect(result).to_have_attribute("data-outcome", "already")
    await expect(headline).to_have_text(f"Already checked in at {local}")
    await expect(page.locator("#detail")).to_contain_text(ticket["seat_label"])
    await expect(result.locator(".icon")).to_have_text("✕")
    await expect(field).to_be_focused()
    assert await result.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(165, 14, 14)"  # red
    await screenshot(page, "door-already")

    await field.fill(secrets.token_urlsafe(32))  # the shape of a code, but no ticket of ours
    await page.get_by_role("button", name="Check in").click()
    await expect(result).to_have_attribute("data-outcome", "unknown")
    await expect(headline).to_have_text("Unknown ticket")
    await expect(field).to_be_focused()
    await expect(page.locator("#recent li")).to_have_count(3)
    await screenshot(page, "door-unknown")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
    assert page.errors == []
    # the first scan is the one recorded
    again = (await shop.maria("SELECT checked_in_at FROM tickets WHERE id = %s", (ticket["id"],)))[0]["checked_in_at"]
    assert again == first


async def test_an_account_without_the_door_role_cannot_scan(browser, shop):
    _, email, password = await staff_account(shop.maria_dsn, "organizer")
    page = await new_page(browser, **PHONE)
    await page.goto(f"{shop.b.api.base_url}/door")
    await log_in(page, email, password)
    await expect(page.locator("#role-note")).to_contain_text("needs a door account")
    await expect(page.get_by_label("Ticket code")).to_be_disabled()
    assert page.errors == []
