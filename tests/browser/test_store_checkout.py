"""The demo store without JavaScript, in a real browser on a desktop screen and on a
phone: Add to cart returns to the product, Recalculate shows checkout's split for a new
choice without placing the order, and a partial refund is confirmed before it is made."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import (
    ACTION_TIMEOUT_MS,
    DESKTOP,
    NAVIGATION_TIMEOUT_MS,
    PHONE,
    Live,
    Shots,
    Tab,
    new_email,
    sign_up,
    summary_value,
    usd,
)

pytestmark = pytest.mark.e2e

CARD_AMOUNT = 4000
POSTER = 3000
TOTE = 2200


@pytest.fixture
def no_script_tab(browser: object, live: Live, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A logged-out tab whose browser runs no JavaScript at all."""
    phone = request.param == "phone"
    context = browser.new_context(  # type: ignore[attr-defined]
        base_url=live.base_url,
        locale="en-US",
        timezone_id="UTC",
        java_script_enabled=False,
        **(PHONE if phone else DESKTOP),
    )
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    tab = Tab(
        context,
        Shots("phone-store-no-script" if phone else "store-no-script"),
        base_url=live.base_url,
        phone=phone,
    )
    try:
        yield tab
        assert not tab.errors(), tab.errors()
    finally:
        context.close()


@pytest.mark.parametrize("no_script_tab", ["desktop", "phone"], indirect=True)
def test_without_javascript_the_store_keeps_place_recalculates_and_confirms_refunds(
    no_script_tab: Tab, live: Live
) -> None:
    tab = no_script_tab
    page = tab.page
    email = new_email("no-script")
    tab.goto("/signup", "signup")
    sign_up(tab, email, step="account")
    live.redeem_through_api(email, [live.card(CARD_AMOUNT)["code"]])

    # Add to cart comes back to the product, which now says it is in the cart.
    tab.goto("/store", "store")
    tote = page.locator("ul.products li", has=page.locator("#product-tote"))
    # Not photographed on arrival: a full-page screenshot scrolls the page to the top.
    with tab.navigation(None):
        tote.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(re.compile(r"/store#product-tote$"))
    expect(page.locator("#product-tote")).to_be_in_viewport()
    expect(tote.get_by_test_id("in-cart")).to_have_text("1 in your cart")
    page.screenshot(path=tab.shots.next_path("store-added"))
    if not tab.phone:
        # Cards side by side keep their prices and buttons on one line, whatever the
        # length of their descriptions and whether the cart holds them.
        buttons = page.locator("ul.products li").get_by_role("button", name="Add to cart")
        prices = page.locator("ul.products li p.price")
        for row in (buttons, prices):
            tops = [round(row.nth(i).bounding_box()["y"]) for i in range(3)]  # type: ignore[index]
            assert len(set(tops)) == 1, tops
    poster = page.locator("ul.products li", has=page.locator("#product-poster"))
    with tab.navigation(None):
        poster.get_by_role("button", name="Add to cart").click()
    total = POSTER + TOTE

    # Checkout shows the split before anything is paid; Recalculate updates it.
    tab.goto("/store/checkout", "checkout")
    expect(summary_value(tab, "Gift card balance")).to_have_text(f"\u2212{usd(CARD_AMOUNT)}")
    expect(summary_value(tab, "To pay by card")).to_have_text(usd(total - CARD_AMOUNT))
    page.get_by_label("Use a chosen amount").check()
    tab.field("Amount from your balance").fill("12.50")
    with tab.navigation("checkout-recalculated"):
        tab.button("Recalculate").click()
    expect(tab.heading()).to_have_text("Checkout")
    expect(summary_value(tab, "Gift card balance")).to_have_text(f"\u2212{usd(1250)}")
    expect(summary_value(tab, "To pay by card")).to_have_text(usd(total - 1250))
    expect(tab.field("Amount from your balance")).to_have_value("12.50")
    expect(page.get_by_role("link", name="Cart (2)", exact=True)).to_be_visible()

    with tab.navigation("order-placed"):
        tab.button("Place order").click()
    expect(tab.heading()).to_have_text("Thank you for your order")
    expect(summary_value(tab, "Paid with gift card balance")).to_have_text(usd(1250))

    # A partial refund: the balance's part first, then the card's, confirmed first.
    with tab.navigation("refund"):
        tab.link("Request refund").click()
    tab.field("Amount to refund").fill("20")
    with tab.navigation("refund-confirm"):
        tab.button("Review refund").click()
    expect(summary_value(tab, "To your gift card balance")).to_have_text(usd(1250))
    expect(summary_value(tab, "To your test card")).to_have_text(usd(750))
    with tab.navigation("order-partly-refunded"):
        tab.button("Confirm refund").click()
    expect(tab.flash()).to_have_text(
        f"Refunded {usd(2000)}: {usd(1250)} to your gift card balance, {usd(750)} to your "
        "test card."
    )
    expect(page.get_by_test_id("status")).to_have_text("Partly refunded")
