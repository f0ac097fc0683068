"""A support agent's journey through the console in a real browser, on a desktop screen
and on a phone: a customer says "my code says already redeemed, but I never got the
money". The agent logs in, types the code as the customer reads it, sees whose account it
went into and the journal transaction that credited it, opens the customer, adjusts the
balance by more than one agent may alone, a second agent approves it, the first freezes
another card the customer reports lost, and reads the audit log's entries for both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, expect

from tests.browser.browsing import PASSWORD, Live, Tab, Tabs, new_email, usd
from tests.e2e.server import HTTP_TIMEOUT_S, base_env, create_api_key, run_cli, running_server

pytestmark = pytest.mark.e2e

STAFF_PASSWORD = "a staff passphrase"
CARD_AMOUNT = 2500
# Above the default approval threshold of $100.00: a second agent must approve it.
ADJUSTMENT = 15000


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-console")


@pytest.fixture(scope="module")
def env(folder: Path) -> dict[str, str]:
    """The server's and the CLI's environment: one SQLite database."""
    return base_env(f"sqlite:///{folder / 'giftcard.db'}")


@pytest.fixture(scope="module")
def live(folder: Path, env: dict[str, str]) -> Iterator[Live]:
    with running_server(env, folder / "server.log", workers=1) as server:
        yield Live(server, create_api_key(env))


def create_agent(env: dict[str, str], label: str) -> str:
    """`giftcard staff create`, as an operator makes a support agent."""
    email = new_email(label)
    made = run_cli(
        env, "staff", "create", "--email", email, "--role", "support", stdin=STAFF_PASSWORD
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return email


def shopper_with_redeemed_card(live: Live) -> tuple[str, dict[str, str]]:
    """A shopper who redeemed a card: their email and the card (with its code)."""
    email = new_email("customer")
    with httpx.Client(base_url=live.base_url, timeout=HTTP_TIMEOUT_S) as http:
        created = http.post(
            "/v1/customers", json={"email": email, "password": PASSWORD, "region": "US"}
        )
        assert created.status_code == 201, created.text
    card = live.card(CARD_AMOUNT)
    live.redeem_through_api(email, [card["code"]])
    return email, card


def console_nav(tab: Tab, name: str) -> Locator:
    nav = tab.page.get_by_role("navigation", name="Support console")
    return nav.get_by_role("link", name=name, exact=True)


def log_in(tab: Tab, email: str, step: str) -> None:
    tab.goto("/support", None)
    expect(tab.heading()).to_have_text("Support console")
    tab.field("Staff email").fill(email)
    tab.field("Password").fill(STAFF_PASSWORD)
    with tab.navigation(step):
        tab.button("Log in").click()
    expect(tab.heading()).to_have_text("Look up a gift card")


def as_typed_by_a_customer(code: str) -> str:
    """The code as someone reads it over the phone: lower case, spaces, no dashes."""
    return " ".join(code.lower().split("-"))


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_an_agent_answers_already_redeemed_adjusts_with_approval_freezes_and_audits(
    tabs: Tabs, live: Live, env: dict[str, str], phone: bool
) -> None:
    prefix = "console-phone" if phone else "console"
    customer_email, card = shopper_with_redeemed_card(live)
    lost_card = live.card(1000)
    first_agent = create_agent(env, "agent")
    second_agent = create_agent(env, "approver")

    agent = tabs.open(prefix, phone=phone)
    log_in(agent, first_agent, "home")
    page = agent.page

    # The code, typed as the customer reads it: the card page answers at once.
    agent.field("Code or serial").fill(as_typed_by_a_customer(card["code"]))
    with agent.navigation("card"):
        agent.button("Look up").click()
    assert card["code"] not in page.url
    answer = page.get_by_test_id("answer")
    expect(answer).to_contain_text("Redeemed")
    expect(answer).to_contain_text(customer_email)
    expect(page.locator("main")).to_contain_text(
        re.compile(r"journal transaction txn_[0-9a-z]{13}")
    )
    expect(page.locator("main")).to_contain_text(usd(CARD_AMOUNT))

    # The customer's account, from the card.
    with agent.navigation("customer"):
        page.get_by_role("link", name=re.compile(rf"^Open {re.escape(customer_email)}")).click()
    expect(agent.heading()).to_have_text(customer_email)
    customer_url = page.url
    expect(page.locator("#balance")).to_contain_text(usd(CARD_AMOUNT))

    # An adjustment larger than one agent may make alone waits for a second agent.
    agent.field("Amount in USD").fill(f"{ADJUSTMENT / 100:.2f}")
    page.get_by_label("Reason", exact=True).select_option("goodwill")
    agent.field("Note").fill("Customer was charged twice for order 1042")
    with agent.navigation("adjustment-pending"):
        agent.button("Adjust balance").click()
    expect(agent.flash()).to_contain_text("approval")
    expect(page.locator("#balance")).to_contain_text(usd(CARD_AMOUNT))

    approver = tabs.open(prefix + "-approver", phone=phone)
    log_in(approver, second_agent, "approver-home")
    with approver.navigation("approvals"):
        console_nav(approver, "Approvals").click()
    waiting = approver.page.locator("section[data-adjustment]").filter(has_text=customer_email)
    expect(waiting).to_contain_text(usd(ADJUSTMENT))
    expect(waiting).to_contain_text("Customer was charged twice")
    with approver.navigation("approved"):
        waiting.get_by_role("button", name=re.compile(r"^Approve adj_[0-9a-z]{13}$")).click()
    expect(approver.flash()).to_contain_text("Approved")

    with agent.navigation("customer-after-approval"):
        page.goto(customer_url)
    expect(page.locator("#balance")).to_contain_text(usd(CARD_AMOUNT + ADJUSTMENT))

    # Another card, reported lost: found by its serial and frozen.
    with agent.navigation(None):
        console_nav(agent, "Look up").click()
    agent.field("Code or serial").fill(lost_card["serial"])
    with agent.navigation("lost-card"):
        agent.button("Look up").click()
    agent.field("Reason for freezing").fill("Customer reports the card lost")
    with agent.navigation("frozen"):
        agent.button("Freeze this card").click()
    expect(agent.flash()).to_contain_text("frozen")
    expect(agent.heading()).to_contain_text("frozen")

    # The audit log names both: the freeze with its reason, the approved adjustment.
    with agent.navigation("audit-log"):
        console_nav(agent, "Audit log").click()
    log = page.locator("main")
    freeze = page.get_by_role("row").filter(has_text="card.freeze").first
    expect(freeze).to_contain_text(lost_card["id"])
    expect(freeze).to_contain_text("Customer reports the card lost")
    expect(log).to_contain_text("adjustment.approve")
    expect(log).to_contain_text("adjustment.create")
    assert card["code"] not in page.content()

    # What the store owes, reconciled with the ledger, with its chart.
    with agent.navigation("liability"):
        console_nav(agent, "Liability").click()
    expect(agent.heading()).to_have_text("Liability report")
    expect(page.locator("main")).to_contain_text("Reconciled")
    expect(page.locator("main")).not_to_contain_text("Does not reconcile")
    expect(page.locator("svg[role='img']")).to_be_visible()
