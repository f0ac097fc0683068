"""The redeem form with the keyboard alone."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import (
    MISTYPED_MESSAGE,
    Live,
    Tab,
    Tabs,
    mistyped,
    new_email,
    sign_up,
    usd,
)

pytestmark = pytest.mark.e2e

CARD_AMOUNT = 1500
TAB_PRESSES_MAX = 30


def tab_to(tab: Tab, element_id: str) -> int:
    """Press Tab from the top of the page until the element has the focus; how many."""
    for presses in range(1, TAB_PRESSES_MAX + 1):
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return presses
    raise AssertionError(f"#{element_id} not reached in {TAB_PRESSES_MAX} presses of Tab")


def test_redeem_with_keyboard_only(tabs: Tabs, live: Live) -> None:
    """With only Tab, typing and Enter a shopper redeems a code; after a refused code the
    focus is on the field at fault, so fixing and sending it needs no mouse either."""
    first, second = live.cards(CARD_AMOUNT, 2)
    tab = tabs.open("keyboard")
    page = tab.page
    keyboard = page.keyboard
    code_input = tab.field("Gift card code")
    tab.goto("/signup", "signup")
    sign_up(tab, new_email("keyboard"), step="account")

    tab_to(tab, "code")
    expect(code_input).to_be_focused()
    keyboard.type(first["code"].lower())
    with tab.navigation("account-after-redeem"):
        keyboard.press("Enter")
    expect(tab.flash()).to_contain_text(f"{usd(CARD_AMOUNT)} was added to your balance.")
    expect(tab.available()).to_have_text(usd(CARD_AMOUNT))

    tab_to(tab, "code")
    keyboard.type(mistyped(second["code"]))
    with tab.navigation("account-error-focused", status=422):
        keyboard.press("Enter")
    expect(page.locator("#code-error")).to_contain_text(MISTYPED_MESSAGE)
    expect(code_input).to_have_attribute("aria-invalid", "true")
    expect(code_input).to_be_focused()

    keyboard.press("ControlOrMeta+A")
    keyboard.type(second["code"])
    with tab.navigation("account-after-fix"):
        keyboard.press("Enter")
    expect(tab.flash()).to_contain_text(f"{usd(CARD_AMOUNT)} was added to your balance.")
    expect(tab.available()).to_have_text(usd(2 * CARD_AMOUNT))
