"""A shopper's whole journey through the pages in a real browser, on a desktop screen and
on a phone: sign up, redeem a code, a typo, the history, a split-tender checkout in the
demo store, a refund, the refund preference, and logging out."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import (
    ACCOUNT_PAGE,
    MISTYPED_MESSAGE,
    Live,
    Tab,
    Tabs,
    fill_cart_above,
    history_rows,
    mistyped,
    new_email,
    sign_up,
    summary_value,
    usd,
)

pytestmark = pytest.mark.e2e

CARD_AMOUNT = 2500
ORDER_PATH = r"/store/orders/GC-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{2}$"


def shop_with_balance_and_refund(tab: Tab) -> None:
    """Given $25.00 of balance: buy for more than that, the balance paying first and the
    test card the rest; then refund the order from its page."""
    page = tab.page
    rows = history_rows(tab)

    with tab.navigation("store"):
        tab.nav("Demo store").click()
    expect(tab.heading()).to_have_text("Demo store")
    cart = fill_cart_above(tab, CARD_AMOUNT)
    assert cart.total > CARD_AMOUNT
    cart_link = page.get_by_role("link", name=f"Cart ({cart.quantity})", exact=True)
    expect(cart_link).to_be_visible()

    with tab.navigation("cart"):
        cart_link.click()
    expect(page.locator("main")).to_contain_text(cart.product)
    expect(page.locator("main")).to_contain_text(usd(cart.total))
    expect(page.get_by_role("button", name=re.compile(r"^Remove\b"))).to_have_count(1)

    with tab.navigation("checkout"):
        tab.link("Checkout").click()
    expect(tab.heading()).to_have_text("Checkout")
    use_all = page.get_by_label(f"Use your gift card balance ({usd(CARD_AMOUNT)})")
    expect(use_all).to_be_checked()
    expect(page.get_by_label("Use a chosen amount")).not_to_be_checked()
    expect(page.get_by_label(re.compile(r"^Don.t use my balance"))).not_to_be_checked()
    expect(page.get_by_label("Amount from your balance")).to_have_count(1)
    expect(page.locator("div.test-card")).to_contain_text("Test card 4242 4242 4242 4242")
    # The order summary shows the split before anything is paid, and follows the choice.
    balance_part = summary_value(tab, "Gift card balance")
    card_part = summary_value(tab, "To pay by card")
    expect(balance_part).to_have_text(f"\u2212{usd(CARD_AMOUNT)}")
    expect(card_part).to_have_text(usd(cart.total - CARD_AMOUNT))
    page.get_by_label("Use a chosen amount").check()
    tab.field("Amount from your balance").fill("10.00")
    expect(balance_part).to_have_text(f"\u2212{usd(1000)}")
    expect(card_part).to_have_text(usd(cart.total - 1000))
    tab.arrive("checkout-chosen-amount")
    page.get_by_label(re.compile(r"^Don.t use my balance")).check()
    expect(balance_part).to_have_text(usd(0))
    expect(card_part).to_have_text(usd(cart.total))
    use_all.check()
    expect(balance_part).to_have_text(f"\u2212{usd(CARD_AMOUNT)}")

    with tab.navigation("order-placed"):
        tab.button("Place order").click()
    expect(page).to_have_url(re.compile(ORDER_PATH))
    order_path = urlsplit(page.url).path
    expect(page.get_by_test_id("order-number")).to_have_text(order_path.rsplit("/", 1)[1])
    expect(tab.heading()).to_have_text("Thank you for your order")
    expect(summary_value(tab, "Paid with gift card balance")).to_have_text(usd(CARD_AMOUNT))
    expect(summary_value(tab, "Charged to test card")).to_have_text(usd(cart.total - CARD_AMOUNT))

    # The balance really paid: nothing is left of it, and the history says so.
    with tab.navigation("account-after-order"):
        tab.nav("Your Gift Cards").click()
    expect(tab.available()).to_have_text(usd(0))
    expect(rows.first).to_contain_text(f"-{usd(CARD_AMOUNT)}")

    with tab.navigation(None):
        tab.nav("Demo store").click()
    with tab.navigation("orders"):
        tab.link("Your orders").click()
    expect(tab.heading()).to_have_text("Your orders")
    order_link = page.locator(f'main a[href="{order_path}"]')
    expect(order_link.first).to_be_visible()

    with tab.navigation("order"):
        order_link.first.click()
    expect(tab.heading()).to_be_visible()
    with tab.navigation("refund"):
        tab.link("Request refund").click()
    expect(tab.heading()).to_have_text("Refund your order")
    expect(tab.field("Amount to refund")).to_have_value(usd(cart.total))
    with tab.navigation("refund-confirm"):
        tab.button("Review refund").click()
    expect(tab.heading()).to_have_text("Confirm your refund")
    expect(summary_value(tab, "To your gift card balance")).to_have_text(usd(CARD_AMOUNT))
    expect(summary_value(tab, "To your test card")).to_have_text(usd(cart.total - CARD_AMOUNT))
    with tab.navigation("order-refunded"):
        tab.button("Confirm refund").click()
    expect(page).to_have_url(re.compile(re.escape(order_path) + "$"))
    expect(tab.flash()).to_have_text(
        f"Refunded {usd(cart.total)}: {usd(CARD_AMOUNT)} to your gift card balance, "
        f"{usd(cart.total - CARD_AMOUNT)} to your test card."
    )

    # What the balance paid came back to it.
    with tab.navigation("account-after-refund"):
        tab.nav("Your Gift Cards").click()
    expect(tab.available()).to_have_text(usd(CARD_AMOUNT))
    expect(rows.first).to_contain_text(f"+{usd(CARD_AMOUNT)}")


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_shopper_journey(tabs: Tabs, live: Live, device: str) -> None:
    """A new shopper can sign up, redeem a code typed in lower case, see a typo explained
    beside the field, pay part of an order with the balance, get it refunded, choose
    where refunds go and log out, without sideways scrolling even on a phone."""
    phone = device == "phone"
    tab = tabs.open("phone-journey" if phone else "journey", phone=phone)
    page = tab.page
    card, other = live.cards(CARD_AMOUNT, 2)
    rows = history_rows(tab)

    tab.goto("/", "home")
    expect(tab.nav("Log in")).to_be_visible()
    with tab.navigation("signup"):
        tab.nav("Sign up").click()
    expect(tab.heading()).to_have_text("Create an account")
    sign_up(tab, new_email(f"{device}-journey"), name="Jo Journey", step="account-new")
    expect(page).to_have_url(re.compile(re.escape(ACCOUNT_PAGE) + "$"))
    expect(tab.heading()).to_have_text("Your Gift Cards")
    expect(tab.available()).to_have_text(usd(0))
    expect(tab.nav("Log out")).to_be_visible()
    expect(tab.nav("Log in")).to_have_count(0)

    tab.field("Gift card code").fill(card["code"].lower())
    with tab.navigation("account-after-redeem"):
        tab.button("Redeem").click()
    expect(tab.flash()).to_contain_text(f"{usd(CARD_AMOUNT)} was added to your balance.")
    expect(tab.flash()).to_contain_text(f"Your gift card balance is now {usd(CARD_AMOUNT)}.")
    expect(tab.available()).to_have_text(usd(CARD_AMOUNT))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"Gift card ending {card['last4']} redeemed")
    expect(rows.first).to_contain_text(f"+{usd(CARD_AMOUNT)}")

    typo = mistyped(other["code"])
    tab.field("Gift card code").fill(typo)
    with tab.navigation("account-mistyped", status=422):
        tab.button("Redeem").click()
    code_input = tab.field("Gift card code")
    beside = page.locator(".field", has=code_input).locator("#code-error")
    expect(beside).to_contain_text(MISTYPED_MESSAGE)
    expect(code_input).to_have_attribute("aria-invalid", "true")
    expect(code_input).to_have_attribute("aria-describedby", re.compile(r"\bcode-error\b"))
    expect(code_input).to_have_value(typo)
    expect(tab.available()).to_have_text(usd(CARD_AMOUNT))
    expect(rows).to_have_count(1)

    shop_with_balance_and_refund(tab)

    refunds = page.get_by_role("group", name="Send refunds to")
    expect(refunds.get_by_label("Original payment method", exact=True)).to_be_checked()
    refunds.get_by_label("Gift card balance", exact=True).check()
    with tab.navigation("account-preference-saved"):
        tab.button("Save preference").click()
    expect(tab.flash()).to_contain_text("Your refund preference is saved.")
    expect(refunds.get_by_label("Gift card balance", exact=True)).to_be_checked()
    expect(refunds.get_by_label("Original payment method", exact=True)).not_to_be_checked()

    with tab.navigation("home-logged-out"):
        tab.nav("Log out").click()
    expect(page).to_have_url(live.base_url + "/")
    expect(tab.flash()).to_contain_text("You are logged out.")
    expect(tab.nav("Log in")).to_be_visible()
    expect(tab.nav("Log out")).to_have_count(0)
    tab.goto(ACCOUNT_PAGE, "login-after-logout")
    expect(page).to_have_url(re.compile(r"/login\?next="))
