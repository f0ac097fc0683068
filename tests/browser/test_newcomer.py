"""What a newcomer does after `make run`: the demo server prints codes; in a browser they
sign up, redeem one of those codes and check out in the demo store, with nothing to read
but the pages."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.browsing import Live, Tabs, new_email, place_order, sign_up, summary_value, usd
from tests.e2e.server import base_env, create_api_key, running_server

pytestmark = pytest.mark.e2e

_PRINTED_CODE = re.compile(r"^\s+code\s+(\S{4}-\S{4}-\S{4}-\S{4})\s+\$25\.00$", re.MULTILINE)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`giftcard serve --demo`, as `make run` starts it, on a fresh SQLite database."""
    folder = tmp_path_factory.mktemp("newcomer")
    env = base_env(f"sqlite:///{folder / 'giftcard.db'}", GIFTCARD_LOG_FORMAT="text")
    with running_server(env, folder / "server.log", workers=1, extra_args=["--demo"]) as server:
        yield Live(server, create_api_key(env))


def test_a_newcomer_signs_up_redeems_a_printed_code_and_checks_out(tabs: Tabs, live: Live) -> None:
    """From the home page only: create an account, redeem the $25.00 code the demo
    printed, buy something dearer in the demo store, and see the balance pay for part."""
    printed = live.server.log_path.read_text()
    assert "in a browser: sign up" in printed, "the demo does not say where to start"
    found = _PRINTED_CODE.search(printed)
    assert found, f"no $25.00 code printed by --demo:\n{printed[-2000:]}"
    tab = tabs.open("newcomer")
    page = tab.page

    tab.goto("/", "home")
    with tab.navigation("signup"):
        tab.link("Create an account").click()
    sign_up(tab, new_email("newcomer"), step="account")
    expect(tab.heading()).to_have_text("Your Gift Cards")

    tab.field("Gift card code").fill(found.group(1))
    with tab.navigation("redeemed"):
        tab.button("Redeem").click()
    expect(tab.flash()).to_contain_text(f"{usd(2500)} was added to your balance.")
    expect(tab.available()).to_have_text(usd(2500))

    order = place_order(tab, above=2500)
    expect(tab.heading()).to_have_text("Thank you for your order")
    expect(summary_value(tab, "Paid with gift card balance")).to_have_text(usd(2500))
    charged = summary_value(tab, "Charged to test card").inner_text()
    assert charged != usd(0), charged
    with tab.navigation("account-after-order"):
        tab.nav("Your Gift Cards").click()
    expect(tab.available()).to_have_text(usd(0))
    assert order.startswith("/store/orders/")
    expect(page.locator("table.history")).to_contain_text(
        re.compile(r"Payment for order \S+: captured")
    )
