"""The organizers' page (the reservation daemon's /organizer/events/{id}) in chromium: after a few
purchases its organizer sees sold / held / available seats, revenue by section and by currency, and
the sales chart (an inline SVG); another organizer sees none of it. Screenshot:
docs/screenshots/organizer.png."""

import re
import uuid

from playwright.async_api import expect

from tests.billing.conftest import order_appears
from tests.browser.conftest import log_in, new_page, screenshot, staff_account
from tests.helpers import wait_until
from tests.support.auth import token


async def test_the_organizer_sees_seats_revenue_and_the_sales_chart(browser, shop):
    organizer, email, password = await staff_account(shop.maria_dsn, "organizer")
    event = await shop.r.api.as_(token("organizer", subject=organizer)).post("/api/events", {
        "name": "Organizer's Gala", "venue": "Loopback Arena", "starts_at": "2027-06-01T19:30:00Z",
        "layout": {"sections": [
            {"name": "STALLS", "rows": 2, "seats_per_row": 8, "price_minor": 4500, "currency": "EUR"},
            {"name": "BOX", "rows": 1, "seats_per_row": 4, "price_minor": 9900, "currency": "GBP"}]}})
    assert event.status == 201, event.body
    event_id = event.body["id"]
    seats = (await shop.r.api.get(f"/api/events/{event_id}/seats")).body["seats"]
    stalls = [s["id"] for s in seats if s["section"] == "STALLS"]
    box = [s["id"] for s in seats if s["section"] == "BOX"]
    paid_orders = []
    for n, (seat_ids, pay) in enumerate([(stalls[:2], True), (stalls[2:3], True), (box[:1], True),
                                         (stalls[5:7], False)]):
        held = await shop.r.api.post("/api/reservations", {"event_id": event_id, "seat_ids": seat_ids,
                                                           "user_id": str(uuid.uuid4())})
        assert held.status == 201, held.body
        if pay:
            await wait_until(lambda: order_appears(shop.b, held.body["id"]), 10, "the order reaching billing")
            paid = await shop.b.api.post(f"/api/orders/{held.body['id']}/pay", headers={"Idempotency-Key": f"o{n}"})
            assert paid.status == 200, paid.body
            paid_orders.append(held.body["id"])

    # An afternoon's sales in a test's seconds: the first order was paid 3 hours ago, the second 1 hour ago.
    for order, hours in zip(paid_orders, (3, 1)):
        await shop.maria("UPDATE orders SET paid_at = paid_at - INTERVAL %s HOUR WHERE id = %s", (hours, order))

    page = await new_page(browser)
    await page.goto(f"{shop.r.api.base_url}/organizer")
    await page.get_by_test_id("organizer-event").filter(has_text="Organizer's Gala").click()
    await expect(page.locator("#status")).to_contain_text("Log in")
    await log_in(page, email, password)
    await expect(page.locator("#event-title")).to_have_text("Organizer's Gala")
    # Seats: the paid ones stay held until the portal confirms the sale (no portal in this test).
    await expect(page.get_by_test_id("seats-total")).to_have_text("20")
    await expect(page.get_by_test_id("seats-held")).to_have_text("6")
    await expect(page.get_by_test_id("seats-available")).to_have_text("14")
    await expect(page.get_by_test_id("seats-sold")).to_have_text("0")
    revenue = page.get_by_test_id("revenue-row")
    await expect(revenue).to_have_count(2)
    await expect(revenue.filter(has_text="EUR").get_by_test_id("revenue-amount")).to_contain_text("135.00")
    await expect(revenue.filter(has_text="GBP").get_by_test_id("revenue-amount")).to_contain_text("99.00")
    sections = page.get_by_test_id("section-row")
    await expect(sections.filter(has_text="STALLS").get_by_test_id("section-revenue")).to_contain_text("135.00")
    await expect(sections.filter(has_text="BOX").get_by_test_id("section-revenue")).to_contain_text("99.00")
    await expect(sections.filter(has_text="STALLS")).to_contain_text("5")  # held: 3 paid + 2 not yet
    chart = page.get_by_test_id("sales-chart")
    await expect(chart).to_be_visible()
    await expect(chart.locator("rect.bar")).not_to_have_count(0)
    drawn = await chart.locator("rect.bar").evaluate_all("bars => bars.reduce((n, b) => n + +b.dataset.seats, 0)")
    assert drawn == 4, f"the bars add up to {drawn} seats, not the 4 paid"
    await expect(chart).to_have_attribute("aria-label", re.compile(r"^Seats sold per 5 minutes: 4 seats from "))
    await expect(chart.locator("rect.bar")).to_have_count(37)  # 3 hours in 5-minute buckets, empty ones drawn
    await screenshot(page, "organizer")
    assert page.errors == []

    stranger, s_email, s_password = await staff_account(shop.maria_dsn, "organizer")
    other = await new_page(browser)
    await other.goto(f"{shop.r.api.base_url}/organizer/events/{event_id}")
    await log_in(other, s_email, s_password)
    await expect(other.locator("#status")).to_have_text("No such event, or it is not yours.")
    await expect(other.locator("#report")).to_be_hidden()
