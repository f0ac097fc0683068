"""A German shopper pays part of an order with an amount typed the German way, in a real
browser on a desktop screen and on a phone: the hint shows how, an amount that could be
read two ways is refused beside its field in German notation, and 10,50 pays exactly
ten euros fifty."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import Live, Tabs, new_email, sign_up, summary_value

pytestmark = pytest.mark.e2e

BALANCE_MINOR = 5000  # 50,00 €; the poster costs 28,00 €.
# Babel writes a no-break space before the euro sign; \s matches it in a JavaScript regex.
EURO = r"\s€"


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_a_german_shopper_writes_10_50_at_checkout(tabs: Tabs, live: Live, device: str) -> None:
    phone = device == "phone"
    tab = tabs.open(f"{device}-amounts-de", phone=phone)
    page = tab.page
    email = new_email(f"{device}-amounts")
    card = live.card(BALANCE_MINOR, region="DE")
    tab.goto("/signup", "signup")
    sign_up(tab, email, region="DE", step="account")
    live.redeem_through_api(email, [card["code"]])

    tab.goto("/store", "store")
    poster = page.locator("ul.products li", has_text="Screen-printed poster")
    with tab.navigation("store-added"):
        poster.get_by_role("button", name="Add to cart").click()
    tab.goto("/store/checkout", "checkout")
    expect(page.locator("main")).to_contain_text(
        re.compile(rf"Up to 28,00{EURO}; write it like 10,50{EURO}\.")
    )

    page.get_by_label("Use a chosen amount").check()
    tab.field("Amount from your balance").fill("1,234")
    with tab.navigation("checkout-refused", status=422):
        tab.button("Place order").click()
    amount = tab.field("Amount from your balance")
    expect(page.locator("#use_balance_amount-error")).to_contain_text(
        re.compile(rf"EUR has 2 decimals: write it like 1\.234,00{EURO} or 1,23{EURO}\.")
    )
    expect(amount).to_have_value("1,234")
    expect(amount).to_have_attribute("aria-invalid", "true")

    amount.fill("10,50")
    with tab.navigation("order-placed"):
        tab.button("Place order").click()
    expect(tab.heading()).to_have_text("Thank you for your order")
    expect(summary_value(tab, "Paid with gift card balance")).to_have_text(
        re.compile(rf"^10,50{EURO}$")
    )
    expect(summary_value(tab, "Charged to test card")).to_have_text(re.compile(rf"^17,50{EURO}$"))
