"""Every page a person can reach, in Chromium on a desktop screen (1280 px) and on a phone
(390 px): a visitor's, a shopper's with some history, and a support agent's. Each page
goes through `Tab.arrive` (a screenshot; no JavaScript error, no sideways scrolling, no
unlabelled control, no amount broken across lines) and shows its main heading.

`PAGES` names every GET route that answers a person with a page, and `NOT_PAGES` every
other GET route with the reason it is not toured. A new route that is in neither fails
`test_every_get_route_is_toured_or_excused`, so no page goes without a browser test; and
each device's tour fails unless it arrived at every route of `PAGES`.

Last, the answer to a gift's Resend is checked in the browser where the buyer is: in the
row under that gift, focused and on screen, not at the top of the page.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.routing import iter_route_contexts
from playwright.sync_api import Locator, expect
from starlette.routing import compile_path

from giftcard.api.app import create_app
from giftcard.config import load_settings
from tests.browser.browsing import (
    ACCOUNT_PAGE,
    Live,
    Tab,
    Tabs,
    fill_cart_above,
    new_email,
    sign_up,
    summary_value,
    usd,
)
from tests.e2e.server import base_env, create_api_key, run_cli, running_server

pytestmark = pytest.mark.e2e

# Every GET route that shows a person a page, and who reaches it on the tour.
PAGES = {
    "/": "visitor",
    "/signup": "visitor",
    "/login": "visitor",
    "/forgot-password": "visitor",
    "/forgot-password/sent": "visitor",
    "/password-reset": "visitor, from the link in the reset email, and a spent link",
    "/docs": "visitor, from the footer's API documentation link",
    "/store": "visitor and shopper",
    "/store/cart": "visitor and shopper",
    "/account/gift-cards": "shopper",
    "/account/settings": "shopper",
    "/redeem": "shopper, as a gift email's link (it leads on to Your Gift Cards)",
    "/store/checkout": "shopper",
    "/store/orders": "shopper",
    "/store/orders/{order_id}": "shopper",
    "/store/orders/{order_id}/refund": "shopper",
    "/store/gift": "shopper",
    "/store/gifts/{gift_id}": "shopper",
    "/support/login": "staff",
    "/support": "staff",
    "/support/cards/{card_id}": "staff",
    "/support/customers": "staff",
    "/support/customers/{customer_id}": "staff",
    "/support/approvals": "staff",
    "/support/audit-log": "staff",
    "/support/report": "staff",
}
# Every other GET route, and why no person is shown a page there.
NOT_PAGES = {
    "/openapi.json": "the API's description, JSON for programs (its pages are /docs, /redoc)",
    "/healthz": "JSON for a load balancer",
    "/readyz": "JSON for a load balancer",
    "/metrics": "Prometheus' text format, for a scraper",
    "/redoc": "ReDoc's own page, drawn by its bundle, which names none of its schema "
    "choice boxes and always asks for Redocly's logo (refused by the page's policy): "
    "test_docs.py checks it renders offline",
    "/problems/{code}": "a problem type, JSON the API's errors link to (test_problem_types)",
    "/support/audit-log/export": "a CSV download of the audit log (test_console_records)",
}
# The JSON API: programs only, each route covered by the integration tests.
API_PREFIX = "/v1/"

STAFF_PASSWORD = "a staff passphrase"
CARD_AMOUNT = 2500
GIFT_AMOUNT = 1500
# Above the default approval threshold of $100.00.
ADJUSTMENT = 15000
PUBLIC_URL = "http://shop.example.test"
MAIL_WAIT_S = 30
DOCS_RENDER_TIMEOUT_MS = 30_000
_ROUTES = {route: compile_path(route)[0] for route in PAGES}


def test_every_get_route_is_toured_or_excused(tmp_path: Path) -> None:
    """The app's GET routes, the demo store's included, are exactly `PAGES` and
    `NOT_PAGES` and the JSON API's: a new page must join the tour."""
    env = base_env(f"sqlite:///{tmp_path / 'giftcard.db'}", GIFTCARD_DEMO_STORE="true")
    app = create_app(load_settings(env))
    served = {
        str(route.path)
        for route in iter_route_contexts(app.routes)
        if "GET" in (getattr(route, "methods", None) or ())
    }
    pages = {path for path in served if not path.startswith(API_PREFIX)}
    assert pages - set(NOT_PAGES) == set(PAGES), (
        "GET routes without a place on the tour (add them to PAGES and the tour, or to "
        f"NOT_PAGES with the reason): {sorted(pages - set(NOT_PAGES) - set(PAGES))}; "
        f"toured but no longer served: {sorted(set(PAGES) - pages)}"
    )
    assert set(NOT_PAGES) <= served, sorted(set(NOT_PAGES) - served)


@dataclass
class Served:
    live: Live
    database: Path
    mail_dir: Path
    staff_email: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The demo store on a fresh SQLite database, its mail written into a folder, and a
    support agent made with the CLI."""
    folder = tmp_path_factory.mktemp("every-page")
    database = folder / "giftcard.db"
    mail_dir = folder / "mail"
    env = base_env(
        f"sqlite:///{database}",
        GIFTCARD_DEMO_STORE="true",
        GIFTCARD_MAIL_DIR=str(mail_dir),
        GIFTCARD_PUBLIC_URL=PUBLIC_URL,
    )
    with running_server(env, folder / "server.log", workers=1) as server:
        live = Live(server, create_api_key(env))
        staff_email = new_email("agent")
        made = run_cli(
            env, "staff", "create", "--email", staff_email, "--role", "support",
            stdin=STAFF_PASSWORD,
        )  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
        yield Served(live, database, mail_dir, staff_email)


@pytest.fixture(scope="module")
def live(served: Served) -> Live:
    return served.live


@dataclass
class Tour:
    """One device's walk through the site, and the addresses of every page it was shown
    (each checked by `Tab.arrive`: the `tabs` fixture fails a page left unchecked)."""

    tabs: Tabs
    served: Served
    device: str
    paths: set[str] = field(default_factory=set)

    @property
    def phone(self) -> bool:
        return self.device == "phone"

    def open(self, name: str) -> Tab:
        tab = self.tabs.open(f"every-page-{self.device}-{name}", phone=self.phone)
        tab.page.on(
            "framenavigated",
            lambda frame: (
                self.paths.add(urlsplit(frame.url).path) if not frame.parent_frame else None
            ),
        )
        return tab

    def seen(self) -> set[str]:
        """The routes of `PAGES` whose pages were shown."""
        return {
            route
            for route, pattern in _ROUTES.items()
            if any(pattern.fullmatch(path) for path in self.paths)
        }

    def shows(self, tab: Tab, heading: str | re.Pattern[str]) -> None:
        """The page now shown (already checked by `Tab.arrive`) shows its main landmark
        and its main heading."""
        expect(tab.page.get_by_role("main")).to_be_visible()
        expect(tab.heading()).to_be_visible()
        expect(tab.heading()).to_have_text(heading)

    def visit(
        self, tab: Tab, path: str, heading: str | re.Pattern[str], *, status: int = 200
    ) -> None:
        """Type `path` into the address bar and check the page it leads to; a route that
        only leads on (a redirect) counts as toured too."""
        tab.goto(path, slug_of(path), status=status)
        self.shows(tab, heading)
        self.paths.add(urlsplit(path).path)


def slug_of(path: str) -> str:
    return urlsplit(path).path.strip("/").replace("/", "-") or "home"


def email_to(mail_dir: Path, recipient: str, subject: str) -> EmailMessage:
    """The `.eml` the server wrote for `recipient` with `subject`, waited for."""
    deadline = time.monotonic() + MAIL_WAIT_S
    while time.monotonic() < deadline:
        for path in sorted(mail_dir.glob("*.eml")) if mail_dir.is_dir() else []:
            with path.open("rb") as handle:
                message = BytesParser(policy=policy.default).parse(handle)
            assert isinstance(message, EmailMessage)
            if message["To"] == recipient and message["Subject"] == subject:
                return message
        time.sleep(0.2)
    raise AssertionError(f"no email {subject!r} to {recipient} after {MAIL_WAIT_S}s")


def link_in(message: EmailMessage, path: str) -> str:
    """The path and query of the first link in the email's text to `path`, to follow on
    the test server (the email names GIFTCARD_PUBLIC_URL)."""
    body = message.get_body(("plain",))
    assert body is not None
    found = re.search(re.escape(PUBLIC_URL + path) + r"\S*", str(body.get_content()))
    assert found, f"no link to {path} in the email"
    parts = urlsplit(found.group(0))
    return f"{parts.path}?{parts.query}"


def tour_as_visitor(tour: Tour, shopper_email: str) -> None:
    """Logged out: home, sign-up, log-in, Forgot your password? and its email's link, a
    spent link, the store and an empty cart, a missing page, the API documentation."""
    tab = tour.open("visitor")
    tour.visit(tab, "/", "Gift cards, done properly")
    with tab.navigation("signup"):
        tab.nav("Sign up").click()
    tour.shows(tab, "Create an account")
    with tab.navigation("login"):
        tab.nav("Log in").click()
    tour.shows(tab, "Log in")
    with tab.navigation("forgot-password"):
        tab.link("Forgot your password?").click()
    tour.shows(tab, "Forgot your password?")
    tab.field("Email").fill(shopper_email)
    with tab.navigation("forgot-password-sent"):
        tab.button("Send me a link").click()
    tour.shows(tab, "Check your email")

    reset = email_to(
        tour.served.mail_dir, shopper_email, "Choose a new password for your gift card account"
    )
    link = link_in(reset, "/password-reset")
    tour.visit(tab, link, "Choose a new password")
    expect(tab.page.locator("main form")).to_be_visible()
    tab.goto("/password-reset?token=" + "x" * 20, "password-reset-spent", status=410)
    tour.shows(tab, "This link cannot be used")

    tour.visit(tab, "/store", "Demo store")
    tour.visit(tab, "/store/cart", "Your cart")
    tab.goto("/no-such-page", "not-found", status=404)
    expect(tab.heading()).to_have_text("Page not found")

    # The API's documentation: its page is drawn by a script, checked once it shows.
    tour.visit(tab, "/", "Gift cards, done properly")
    with tab.page.expect_navigation():
        tab.link("API documentation").click()
    expect(tab.page.locator(".opblock-summary-path", has_text="/v1/me/balance")).to_be_visible(
        timeout=DOCS_RENDER_TIMEOUT_MS
    )
    tab.arrive("docs")


def tour_as_shopper(tour: Tour, email: str, card: dict[str, str], spare: dict[str, str]) -> None:
    """A shopper with some history: signs up, redeems, shops, refunds part of an order,
    sends a gift, opens a redeem link and the settings."""
    tab = tour.open("shopper")
    page = tab.page
    tour.visit(tab, "/signup", "Create an account")
    sign_up(tab, email, name="Alex", step="account-new")
    tour.shows(tab, "Your Gift Cards")
    tab.field("Gift card code").fill(card["code"])
    with tab.navigation("account-redeemed"):
        tab.button("Redeem").click()
    tour.shows(tab, "Your Gift Cards")
    expect(tab.available()).to_have_text(usd(CARD_AMOUNT))

    tour.visit(tab, "/store", "Demo store")
    cart = fill_cart_above(tab, CARD_AMOUNT)
    tour.shows(tab, "Demo store")
    with tab.navigation("cart"):
        page.get_by_role("link", name=f"Cart ({cart.quantity})", exact=True).click()
    tour.shows(tab, "Your cart")
    with tab.navigation("checkout"):
        tab.link("Checkout").click()
    tour.shows(tab, "Checkout")
    expect(summary_value(tab, "Gift card balance")).to_have_text(f"\u2212{usd(CARD_AMOUNT)}")
    with tab.navigation("order-placed"):
        tab.button("Place order").click()
    tour.shows(tab, "Thank you for your order")
    order = urlsplit(page.url).path
    tour.visit(tab, order, "Your order")
    with tab.navigation("refund"):
        tab.link("Request refund").click()
    tour.shows(tab, "Refund your order")
    tab.field("Amount to refund").fill("10")
    with tab.navigation("refund-confirm"):
        tab.button("Review refund").click()
    tour.shows(tab, "Confirm your refund")
    expect(summary_value(tab, "To your gift card balance")).to_have_text(usd(1000))
    with tab.navigation("order-partly-refunded"):
        tab.button("Confirm refund").click()
    tour.shows(tab, "Your order")
    expect(tab.flash()).to_contain_text(f"Refunded {usd(1000)}")
    tour.visit(tab, "/store/orders", "Your orders")

    tour.visit(tab, "/store/gift", "Send a gift card")
    tab.field("Amount (USD)").fill(f"{GIFT_AMOUNT / 100:.2f}")
    tab.field("Recipient's email").fill(new_email("sam"))
    tab.field("Recipient's name").fill("Sam")
    tab.field("Message").fill("Happy birthday!")
    with tab.navigation("gift-sent"):
        tab.button("Buy and send the gift card").click()
    tour.shows(tab, "Your gift card is on its way")

    tour.visit(tab, ACCOUNT_PAGE, "Your Gift Cards")
    expect(page.locator("table.history tbody tr").first).to_be_visible()
    expect(page.locator("#gifts tbody tr")).to_have_count(1)
    tour.visit(tab, "/redeem?code=" + spare["code"], "Your Gift Cards")
    expect(tab.field("Gift card code")).to_have_value(spare["code"])
    with tab.navigation("settings"):
        tab.link("Account settings").click()
    tour.shows(tab, "Account settings")


def tour_as_staff(tour: Tour, shopper_email: str, card: dict[str, str]) -> None:
    """A support agent: logs in, looks up the shopper's card, opens the shopper, resends
    their gift and adjusts their balance, finds them by email, replaces a lost card, and
    reads the adjustment waiting for approval, the audit log and the liability report."""
    tab = tour.open("staff")
    page = tab.page
    console = page.get_by_role("navigation", name="Support console")

    def nav(name: str) -> Locator:
        return console.get_by_role("link", name=name, exact=True)

    tour.visit(tab, "/support", "Support console")
    tab.field("Staff email").fill(tour.served.staff_email)
    tab.field("Password").fill(STAFF_PASSWORD)
    with tab.navigation("support-home"):
        tab.button("Log in").click()
    tour.shows(tab, "Look up a gift card")

    tab.field("Code or serial").fill(card["code"])
    with tab.navigation("card"):
        tab.button("Look up").click()
    tour.shows(tab, re.compile(r"^Card ending \S+ redeemed$"))
    with tab.navigation("customer"):
        page.get_by_role("link", name=re.compile(rf"^Open {re.escape(shopper_email)}")).click()
    tour.shows(tab, shopper_email)
    expect(page.locator("#balance")).to_be_visible()
    resend_from_the_console(tab)
    # More than one agent may give alone: it waits under Approvals for a second agent.
    tab.field("Amount in USD").fill(f"{ADJUSTMENT / 100:.2f}")
    page.get_by_label("Reason", exact=True).select_option("goodwill")
    tab.field("Note").fill("Customer was charged twice")
    with tab.navigation("adjustment-pending"):
        tab.button("Adjust balance").click()
    tour.shows(tab, shopper_email)
    expect(tab.flash()).to_contain_text("approval")

    with tab.navigation("customers"):
        nav("Customers").click()
    tour.shows(tab, "Customers")
    tab.field("Email address").fill(shopper_email)
    with tab.navigation("customers-found"):
        tab.button("Find").click()
    tour.shows(tab, "Customers")
    expect(page.locator("main table")).to_contain_text(shopper_email)

    lost = tour.served.live.card(1000)
    with tab.navigation("lookup"):
        nav("Look up").click()
    tab.field("Code or serial").fill(lost["serial"])
    with tab.navigation("lost-card"):
        tab.button("Look up").click()
    tour.shows(tab, re.compile(r"^Card ending \S+ active$"))
    tab.field("Reason for replacing").fill("Customer reports the card damaged")
    with tab.navigation("card-replaced"):
        tab.button("Cancel this card and issue a new code").click()
    expect(tab.heading()).to_have_text("The new code")

    with tab.navigation("approvals"):
        nav("Approvals").click()
    tour.shows(tab, "Adjustments waiting for approval")
    waiting = page.locator("section[data-adjustment]").filter(has_text=shopper_email)
    expect(waiting).to_contain_text(usd(ADJUSTMENT))
    with tab.navigation("audit-log"):
        nav("Audit log").click()
    tour.shows(tab, "Audit log")
    expect(page.get_by_role("row").filter(has_text="card.replace").first).to_be_visible()
    with tab.navigation("report"):
        nav("Liability").click()
    tour.shows(tab, "Liability report")
    expect(page.locator("svg[role='img']")).to_be_visible()


def resend_from_the_console(tab: Tab) -> None:
    """On the customer page, once the gift the shopper sent has gone out, the agent
    resends it: the answer is at the top of the Gifts section, on screen and focused,
    not at the top of the page."""
    page = tab.page
    customer_page = urlsplit(page.url).path
    resend = page.get_by_role("button", name=re.compile(r"^Resend the email of "))
    deadline = time.monotonic() + MAIL_WAIT_S
    while resend.count() == 0:
        assert time.monotonic() < deadline, f"the gift was not sent after {MAIL_WAIT_S}s"
        time.sleep(0.5)
        tab.goto(customer_page, None)
    # Not photographed on arrival: a full-page screenshot scrolls the page to the top.
    with tab.navigation(None):
        resend.click()
    expect(page).to_have_url(re.compile(re.escape(customer_page) + "#gift-answer$"))
    answer = page.locator("#gifts").get_by_role("status")
    expect(answer).to_contain_text("is on its way again")
    expect(answer).to_be_in_viewport()
    expect(answer).to_be_focused()
    expect(page.locator("main > .notice")).to_have_count(0)
    page.screenshot(path=tab.shots.next_path("customer-gift-resent"))


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_every_page(tabs: Tabs, served: Served, device: str) -> None:
    """A visitor, a shopper and a support agent, each in a tab of their own, arrive at
    every route of `PAGES` on this device."""
    tour = Tour(tabs, served, device)
    shopper_email = new_email(f"{device}-tour")
    card = served.live.card(CARD_AMOUNT)
    spare = served.live.card(CARD_AMOUNT)

    tour_as_shopper(tour, shopper_email, card, spare)
    tour_as_visitor(tour, shopper_email)
    tour_as_staff(tour, shopper_email, card)

    assert tour.seen() == set(PAGES), f"pages not toured: {sorted(set(PAGES) - tour.seen())}"


# --- a gift's Resend, answered beside the gift ------------------------------------------


def gift_rows(tab: Tab) -> Locator:
    return tab.page.locator("#gifts tbody tr[data-gift]")


def wait_until_all_sent(tab: Tab, count: int) -> None:
    """Reload Your Gift Cards until its `count` gifts read Sent (the server's sender
    writes their emails within seconds)."""
    deadline = time.monotonic() + MAIL_WAIT_S
    while True:
        tab.goto(ACCOUNT_PAGE, None)
        statuses = gift_rows(tab).get_by_test_id("gift-status").all_inner_texts()
        if statuses == ["Sent"] * count:
            return
        assert time.monotonic() < deadline, f"gifts still {statuses} after {MAIL_WAIT_S}s"
        time.sleep(0.5)


def sent_long_ago(database: Path, buyer_email: str) -> None:
    """Move the sending of this buyer's gifts 20 minutes into the past, as if the buyer
    came back later: a buyer may resend a gift 15 minutes after its email went out."""
    with sqlite3.connect(database, timeout=10) as connection:
        changed = connection.execute(
            "UPDATE gifts SET sent_at = datetime(sent_at, '-20 minutes') "
            "WHERE purchaser_customer_id = (SELECT id FROM customers WHERE email = ?)",
            (buyer_email,),
        ).rowcount
    connection.close()
    assert changed > 0, "no gift of the buyer was moved"


def test_a_resent_gift_is_confirmed_under_its_own_row(tabs: Tabs, served: Served) -> None:
    """On a phone, with three gifts sent, Resend on the middle one: the address names the
    answer, which sits in the row right under that gift, on screen and focused; nothing
    is shown at the top of the page."""
    tab = tabs.open("gift-resent-phone", phone=True)
    page = tab.page
    buyer = new_email("resender")
    tab.goto("/signup", None)
    sign_up(tab, buyer, name="Alex", step=None)
    for recipient in ("ana", "ben", "cy"):
        tab.goto("/store/gift", None)
        tab.field("Amount (USD)").fill("20.00")
        tab.field("Recipient's email").fill(f"{recipient}-{buyer}")
        with tab.navigation(None):
            tab.button("Buy and send the gift card").click()
    wait_until_all_sent(tab, 3)
    sent_long_ago(served.database, buyer)
    tab.goto(ACCOUNT_PAGE, "account-three-gifts")

    row = gift_rows(tab).filter(has_text=f"ben-{buyer}")
    gift_id = row.get_attribute("data-gift")
    assert gift_id
    # Not photographed on arrival: a full-page screenshot scrolls the page to the top.
    with tab.navigation(None):
        row.get_by_role("button", name=f"Resend the gift card email to ben-{buyer}").click()

    expect(page).to_have_url(re.compile(re.escape(f"{ACCOUNT_PAGE}#resent-{gift_id}") + "$"))
    answer = page.locator("tr.row-notice").get_by_role("status")
    expect(answer).to_have_count(1)
    expect(answer).to_contain_text(f"The gift card email to ben-{buyer} is on its way again.")
    expect(answer).to_be_in_viewport()
    expect(row).to_be_in_viewport()
    # The gift's status is not labelled as the history's balance on a phone.
    status = row.get_by_test_id("gift-status")
    assert status.evaluate("cell => getComputedStyle(cell, '::before').content") == "none"
    expect(answer).to_be_focused()
    expect(answer).to_have_attribute("id", f"resent-{gift_id}")
    under = page.locator(f"#gifts tr[data-gift='{gift_id}'] + tr.row-notice [role='status']")
    expect(under).to_have_count(1)
    expect(page.locator("main > .notice")).to_have_count(0)
    # Queued again; the server's sender may already have sent it.
    expect(row.get_by_test_id("gift-status")).to_have_text(re.compile(r"^\s*(Scheduled|Sent)\s*$"))
    page.screenshot(path=tab.shots.next_path("gift-resent"))
