"""The redeem link of a gift email, opened in a browser that is not logged in."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Request, expect

from tests.browser.browsing import (
    ACCOUNT_PAGE,
    Live,
    Tabs,
    carries_code,
    history_rows,
    new_email,
    sign_up,
    usd,
)

pytestmark = pytest.mark.e2e

CARD_AMOUNT = 4000


def test_redeem_link_through_sign_up(tabs: Tabs, live: Live) -> None:
    """A redeem link leads a logged-out visitor through log-in and sign-up to the account
    page with the code filled in once, redeemable with one click, and after the link
    itself no address the browser shows or requests carries the code."""
    card = live.card(CARD_AMOUNT)
    code = card["code"]
    tab = tabs.open("redeem-link")
    page = tab.page
    requested: list[Request] = []
    page.on("request", lambda request: requested.append(request))

    tab.goto(f"/redeem?code={code}", "login")
    landed = urlsplit(page.url)
    assert landed.path == "/login", page.url
    assert parse_qs(landed.query).get("next") == [ACCOUNT_PAGE], page.url
    assert not carries_code(page.url, code), page.url
    expect(tab.heading()).to_have_text("Log in")
    notice = page.locator("main .notice")
    expect(notice).to_contain_text("to add your gift card to it")

    with tab.navigation("signup"):
        notice.get_by_role("link", name="create an account").click()
    expect(tab.heading()).to_have_text("Create an account")
    expect(page.locator("main form input[name=next]")).to_have_value(ACCOUNT_PAGE)
    expect(page.locator("main .notice")).to_contain_text("to add your gift card to it")
    assert not carries_code(page.url, code), page.url

    sign_up(tab, new_email("link"), step="account-code-filled-in")
    expect(page).to_have_url(re.compile(re.escape(ACCOUNT_PAGE) + r"(#redeem)?$"))
    expect(page.get_by_text("We filled in the code from your gift card link.")).to_be_visible()
    expect(tab.field("Gift card code")).to_have_value(code)

    with tab.navigation("account-after-redeem"):
        tab.button("Redeem").click()
    expect(tab.flash()).to_contain_text(f"{usd(CARD_AMOUNT)} was added to your balance.")
    expect(tab.available()).to_have_text(usd(CARD_AMOUNT))
    expect(history_rows(tab)).to_have_count(1)
    expect(tab.field("Gift card code")).to_have_value("")

    tab.goto(ACCOUNT_PAGE, "account-later")
    expect(tab.field("Gift card code")).to_have_value("")
    expect(page.get_by_text("We filled in the code from your gift card link.")).to_have_count(0)

    assert not carries_code(page.url, code), page.url
    first, *later = requested
    assert urlsplit(first.url).path == "/redeem", first.url
    leaked = [
        (request.url, request.headers.get("referer", ""))
        for request in later
        if carries_code(request.url, code) or carries_code(request.headers.get("referer", ""), code)
    ]
    assert not leaked, f"requests after the link carry the code: {leaked}"
    assert len(later) > 5, [request.url for request in later]
