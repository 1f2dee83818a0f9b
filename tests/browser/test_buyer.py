"""The buyer's pages in a real browser (Debian's chromium via Playwright): sign up, live seat map,
hold, pay, tickets with QR codes and text; a sold-out event says so. Screenshots: docs/screenshots/buyer-*.png."""

import re
import time
import uuid

from playwright.async_api import expect

from tests.browser.conftest import create_event, new_page, screenshot
from tests.support.auth import token


async def test_a_buyer_signs_up_holds_two_seats_seen_live_elsewhere_pays_and_sees_tickets(browser, shop):
    event = await create_event(shop, "TicketFlow Live", 4, 10)
    seats = (await shop.r.api.get(f"/api/events/{event['id']}/seats")).body["seats"]
    url = f"{shop.r.api.base_url}/events/{event['id']}"

    buyer = await new_page(browser)
    await buyer.goto(url)
    await buyer.get_by_role("button", name="Sign up").click()
    email = f"ann-{uuid.uuid4().hex[:8]}@example.com"
    await buyer.get_by_label("E-mail").fill(email)
    await buyer.get_by_label("Password").fill("a long passphrase")
    await buyer.get_by_label("Name").fill("Ann")
    await buyer.get_by_role("button", name="Create account").click()
    await expect(buyer.get_by_test_id("signed-in")).to_contain_text(email)
    await expect(buyer.locator("#live")).to_have_attribute("data-state", "live")

    other = await new_page(browser)  # a second person, another browser context
    await other.goto(url)
    await expect(other.locator("#live")).to_have_attribute("data-state", "live")
    chosen = seats[11:13]
    for seat in chosen:
        await expect(other.locator(f'[data-seat-id="{seat["id"]}"]')).to_have_attribute("data-status", "available")

    for seat in chosen:  # keyboard works too: seats are buttons
        await buyer.locator(f'[data-seat-id="{seat["id"]}"]').focus()
        await buyer.keyboard.press("Enter")
        await expect(buyer.locator(f'[data-seat-id="{seat["id"]}"]')).to_have_attribute("aria-pressed", "true")
    async with buyer.expect_response(re.compile(r"/api/reservations$")) as held:
        await buyer.get_by_role("button", name="Hold seats").click()
    assert (await held.value).status == 201
    committed = time.monotonic()
    for seat in chosen:  # the other person's map turns them held without a reload, within a second
        await expect(other.locator(f'[data-seat-id="{seat["id"]}"]')).to_have_attribute(
            "data-status", "held", timeout=1000)
    assert time.monotonic() - committed < 1.0
    await expect(other.locator(f'[data-seat-id="{chosen[0]["id"]}"]')).to_have_attribute(
        "aria-label", re.compile(r", held$"))  # not by colour only
    await expect(buyer.locator("#countdown")).to_contain_text("Held for you for")
    await screenshot(other, "buyer-seatmap-live")
    await screenshot(buyer, "buyer-hold")

    await buyer.get_by_role("button", name="Pay").click()
    tickets = buyer.get_by_test_id("ticket")
    await expect(tickets).to_have_count(2, timeout=20_000)
    for i in range(2):
        await expect(tickets.nth(i).locator("svg.qr")).to_be_visible()
        await expect(tickets.nth(i).get_by_test_id("ticket-code")).to_have_text(re.compile(r"^\S{43,}$"))
    await expect(buyer.locator("#pay-status")).to_contain_text("Paid")
    await screenshot(buyer, "buyer-tickets")

    await buyer.goto(f"{shop.r.api.base_url}/orders")
    await expect(buyer.get_by_test_id("order")).to_have_count(1)
    await expect(buyer.get_by_test_id("order").get_by_test_id("ticket")).to_have_count(2)
    await screenshot(buyer, "buyer-orders")
    assert buyer.errors == [] and other.errors == []  # no script error, no CSP violation


async def test_a_sold_out_event_says_so(browser, shop):
    event = await create_event(shop, "Tiny Gig", 1, 2)
    seats = (await shop.r.api.get(f"/api/events/{event['id']}/seats")).body["seats"]
    await create_event(shop, "Big Show", 2, 8)
    held = await shop.r.api.as_(token("buyer")).post("/api/reservations", {
        "event_id": event["id"], "seat_ids": [s["id"] for s in seats]})
    assert held.status == 201, held.body

    page = await new_page(browser)
    await page.goto(f"{shop.r.api.base_url}/events/{event['id']}")
    await expect(page.locator("#soldout")).to_be_visible()
    await expect(page.locator("#soldout")).to_have_text("Sold out")
    await expect(page.locator(".seat[data-status=held]")).to_have_count(2)
    await page.goto(shop.r.api.base_url + "/")
    await expect(page.get_by_test_id("event").filter(has_text="Tiny Gig")).to_contain_text("Sold out")
    await expect(page.get_by_test_id("event").filter(has_text="Big Show")).to_contain_text("16 of 16 seats available")
    await screenshot(page, "buyer-events")
    assert page.errors == []
