"""The shopper's own pages in a real browser, on a desktop screen (1280 px) and a phone
(390 px): sign-up naming every mistake at once, Your Gift Cards laid out side by side
where there is room, a history that names each payment's order and links to it, times
that carry a zone and never wrap, the refund preference confirmed where the shopper is,
and a lock-out that says how long it lasts."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.browsing import (
    ACCOUNT_PAGE,
    PASSWORD,
    Live,
    Tab,
    Tabs,
    history_rows,
    new_email,
    place_order,
    sign_up,
    summary_value,
    usd,
)
from tests.e2e.server import HTTP_TIMEOUT_S

pytestmark = pytest.mark.e2e

CARD_AMOUNT = 2500
LOGIN_FAILURES_ALLOWED = 10

# Text nodes inside the history's time cells that the browser laid out on more than one
# line.
_WRAPPED_TIMES = r"""() => Array.from(document.querySelectorAll("td.when")).filter((cell) => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  const lines = new Set(Array.from(range.getClientRects())
    .filter((box) => box.width > 0).map((box) => Math.round(box.bottom)));
  return lines.size > 1;
}).map((cell) => cell.textContent)"""


def open_tab(tabs: Tabs, device: str, name: str) -> Tab:
    phone = device == "phone"
    return tabs.open(f"{'phone-' if phone else ''}{name}", phone=phone)


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_sign_up_names_every_mistake_at_once(tabs: Tabs, device: str) -> None:
    """A sign-up with a bad email and a short password shows both errors beside their
    fields and in the summary, which takes the focus; corrected, it opens the account."""
    tab = open_tab(tabs, device, "signup-errors")
    page = tab.page
    tab.goto("/signup", "signup")
    tab.field("Email").fill("not-an-email")
    tab.field("Password").fill("short")
    with tab.navigation("signup-two-errors", status=422):
        tab.button("Create account").click()
    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(summary.get_by_role("link")).to_have_count(2)
    expect(page.locator("#email-error")).to_contain_text("valid email address")
    expect(page.locator("#password-error")).to_contain_text("8 to")
    expect(tab.field("Email")).to_have_attribute("aria-invalid", "true")
    expect(tab.field("Password")).to_have_attribute("aria-invalid", "true")

    sign_up(tab, new_email(f"{device}-signup"), step="signup-corrected")
    expect(tab.heading()).to_have_text("Your Gift Cards")


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_your_gift_cards_page(tabs: Tabs, live: Live, device: str) -> None:
    """The balance and the redeem form sit side by side on a desktop and one above the
    other on a phone; after an order, the history names it, links to its page and says
    the payment was captured; times carry the store's zone and never wrap; saving the
    refund preference shows its confirmation beside the form, focused."""
    phone = device == "phone"
    tab = open_tab(tabs, device, "account")
    page = tab.page
    card = live.card(CARD_AMOUNT)
    tab.goto("/signup", None)
    sign_up(tab, new_email(f"{device}-account"), step="account-empty")

    balance = page.locator("#balance").bounding_box()
    redeem = page.locator("#redeem").bounding_box()
    assert balance is not None
    assert redeem is not None
    if phone:
        assert redeem["y"] >= balance["y"] + balance["height"], (balance, redeem)
    else:
        assert abs(redeem["y"] - balance["y"]) < 1, (balance, redeem)
        assert redeem["x"] >= balance["x"] + balance["width"], (balance, redeem)

    tab.field("Gift card code").fill(card["code"])
    with tab.navigation("account-redeemed"):
        tab.button("Redeem").click()
    expect(tab.available()).to_have_text(usd(CARD_AMOUNT))

    place_order(tab, above=CARD_AMOUNT)
    with tab.navigation("account-after-order"):
        tab.nav("Your Gift Cards").click()
    rows = history_rows(tab)
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(re.compile(r"Payment for order \S+: captured"))
    expect(rows.first).to_contain_text(f"-{usd(CARD_AMOUNT)}")
    for row in (rows.first, rows.nth(1)):
        expect(row.locator("td.when")).to_have_text(re.compile(r"\d{4}, .* E[SD]T$"))
    assert page.evaluate(_WRAPPED_TIMES) == []
    order_link = rows.first.get_by_role("link")
    expect(order_link).to_have_count(1)
    expect(rows.first).to_contain_text(f"Payment for order {order_link.inner_text()}: captured")
    with tab.navigation("order-from-history"):
        order_link.click()
    expect(page).to_have_url(re.compile(r"/store/orders/[^/?#]+$"))
    expect(tab.heading()).to_have_text("Your order")
    expect(summary_value(tab, "Paid with gift card balance")).to_have_text(usd(CARD_AMOUNT))

    with tab.navigation(None):
        page.go_back()
    refunds = page.get_by_role("group", name="Send refunds to")
    refunds.get_by_label("Gift card balance", exact=True).check()
    with tab.navigation("account-preference-saved"):
        tab.button("Save preference").click()
    expect(page).to_have_url(re.compile(re.escape(ACCOUNT_PAGE) + "#refunds-saved$"))
    saved = page.locator("#refunds").get_by_role("status")
    expect(saved).to_contain_text("Your refund preference is saved.")
    expect(saved).to_be_focused()
    expect(saved).to_be_in_viewport()
    expect(page.locator("main > .notice")).to_have_count(0)
    expect(refunds.get_by_label("Gift card balance", exact=True)).to_be_checked()


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_a_lock_out_says_how_long_it_lasts(tabs: Tabs, live: Live, device: str) -> None:
    """After too many wrong passwords, the log-in form says when to try again, in
    minutes, beside the email."""
    email = new_email(f"{device}-locked")
    with httpx.Client(base_url=live.base_url, timeout=HTTP_TIMEOUT_S) as http:
        created = http.post(
            "/v1/customers", json={"email": email, "password": PASSWORD, "region": "US"}
        )
        assert created.status_code == 201, created.text
    tab = open_tab(tabs, device, "locked")
    tab.goto("/login", None)
    for _ in range(LOGIN_FAILURES_ALLOWED):
        tab.field("Email").fill(email)
        tab.field("Password").fill("a wrong password")
        with tab.navigation(None, status=401):
            tab.button("Log in").click()
    tab.field("Email").fill(email)
    tab.field("Password").fill(PASSWORD)
    with tab.navigation("login-locked", status=429):
        tab.button("Log in").click()
    expect(tab.page.locator("#email-error")).to_have_text(
        re.compile(
            r"^\s*Error:\s*Too many failed log-ins for this account\. "
            r"Try again in \d+ minutes?\.$"
        )
    )
