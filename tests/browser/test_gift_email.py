"""The gift email in a browser: its HTML part at desktop and phone width, and the whole
journey — a shopper buys a gift in the demo store, the server writes the email as an
.eml file into GIFTCARD_MAIL_DIR, the recipient follows its link, signs up and redeems.

Screenshots: `build/screenshots/email-gift-desktop.png` and `email-gift-phone.png`, and
the journey's pages under `gift-journey-*`."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, expect

from giftcard.mail.compose import compose
from giftcard.mail.messages import Content, OutboxMessage, render_pair
from giftcard.mail.outbox import MessageKind, new_message_id
from tests.browser.browsing import (
    ACCOUNT_PAGE,
    DESKTOP,
    PHONE,
    PHONE_WIDTH,
    SCREENSHOTS,
    Live,
    Tabs,
    history_rows,
    new_email,
    sign_up,
    usd,
)
from tests.e2e.server import base_env, create_api_key, running_server

pytestmark = pytest.mark.e2e

PUBLIC_URL = "http://shop.example.test"
GIFT_AMOUNT = 3500
EML_WAIT_S = 20
CODE = re.compile(r"[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}")


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gift-mail") / "mail"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, mail_dir: Path) -> Iterator[Live]:
    """The demo store, its mail written into `mail_dir`, its links on PUBLIC_URL."""
    folder = tmp_path_factory.mktemp("gift-browser")
    env = base_env(
        f"sqlite:///{folder / 'giftcard.db'}",
        GIFTCARD_DEMO_STORE="true",
        GIFTCARD_MAIL_DIR=str(mail_dir),
        GIFTCARD_PUBLIC_URL=PUBLIC_URL,
    )
    with running_server(env, folder / "server.log", workers=1) as server:
        yield Live(server, create_api_key(env))


def sample_email() -> EmailMessage:
    """A gift email as the sender composes it, with a message full of markup."""
    context = {
        "amount": usd(GIFT_AMOUNT),
        "sender_name": "Alex <b>Rivera</b>",
        "recipient_name": "Sam",
        "message_lines": [
            "Happy birthday, Sam! <script>alert('hi')</script>",
            "Treat yourself to something nice — you deserve it.",
        ],
        "code": "7KQ4-M2ZP-X9CD-R3TW",
        "redeem_url": f"{PUBLIC_URL}/redeem?code=7KQ4-M2ZP-X9CD-R3TW",
        "store_name": "United States store",
        "expires_on": "December 24, 2027",
    }
    text, html = render_pair("gift", **context)
    message = OutboxMessage(
        id=1,
        kind=MessageKind.GIFT,
        recipient="sam@example.com",
        ref_id=1,
        payload={},
        message_id=new_message_id(),
        attempts=0,
        created_at=datetime.now(UTC),
    )
    content = Content(subject="Alex sent you a $35.00 gift card", text=text, html=html)
    return compose(message, content, sender="giftcard <gifts@example.com>", date=message.created_at)


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, "the email has no HTML part"
    return str(part.get_content())


@pytest.mark.parametrize(("name", "options"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_the_gift_email_reads_well_at_desktop_and_phone_width(
    browser: Browser, name: str, options: dict[str, object]
) -> None:
    """The HTML part, opened as a mail client would show it: the amount, the message as
    text (its markup shown, not run), the code and the Redeem now button are visible;
    nothing scrolls sideways on a phone; nothing loads from the network."""
    context = browser.new_context(**options)  # type: ignore[arg-type]
    requested: list[str] = []
    try:
        page = context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.set_content(html_part(sample_email()))
        expect(page.get_by_test_id("amount")).to_have_text(usd(GIFT_AMOUNT))
        expect(page.get_by_test_id("message")).to_contain_text(
            "Happy birthday, Sam! <script>alert('hi')</script>"
        )
        expect(page.get_by_test_id("code")).to_have_text("7KQ4-M2ZP-X9CD-R3TW")
        button = page.get_by_role("link", name="Redeem now")
        expect(button).to_be_visible()
        expect(button).to_have_attribute("href", f"{PUBLIC_URL}/redeem?code=7KQ4-M2ZP-X9CD-R3TW")
        expect(page.get_by_text("Alex <b>Rivera</b> sent you a gift card")).to_be_visible()
        width, content_width = page.evaluate(
            "[window.innerWidth, document.documentElement.scrollWidth]"
        )
        assert content_width <= width, f"the email scrolls sideways at {width}px"
        if name == "phone":
            assert width == PHONE_WIDTH
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"email-gift-{name}.png", full_page=True)
    finally:
        context.close()
    assert not [url for url in requested if not url.startswith(("about:", "data:"))], requested


def wait_for_eml(folder: Path, recipient: str) -> EmailMessage:
    """The .eml file the server wrote for `recipient`, once it is there."""
    deadline = time.monotonic() + EML_WAIT_S
    while time.monotonic() < deadline:
        for path in sorted(folder.glob("*.eml")) if folder.is_dir() else []:
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if isinstance(parsed, EmailMessage) and parsed["To"] == recipient:
                return parsed
        time.sleep(0.2)
    raise AssertionError(f"no email to {recipient} in {folder} after {EML_WAIT_S}s")


def test_a_gift_bought_in_the_store_reaches_its_recipient_who_redeems_it(
    tabs: Tabs, live: Live, mail_dir: Path
) -> None:
    """A shopper sends a gift from the demo store; the server writes its email into the
    mail folder; the recipient opens the email's Redeem now link (on GIFTCARD_PUBLIC_URL,
    here followed on the test server), signs up, finds the code waiting and redeems it;
    the buyer sees the gift as Redeemed under Gifts you've sent."""
    buyer = tabs.open("gift-journey-buyer")
    buyer.goto("/signup", "signup")
    sign_up(buyer, new_email("buyer"), name="Alex", step="account")
    recipient_email = new_email("sam")
    buyer.goto("/store/gift", "gift-form")
    expect(buyer.page.get_by_test_id("no-balance")).to_have_text(
        "Your gift card balance cannot buy gift cards."
    )
    buyer.field("Amount (USD)").fill("35.00")
    buyer.field("Recipient's email").fill(recipient_email)
    buyer.field("Recipient's name").fill("Sam")
    buyer.field("Message").fill("Happy birthday!\nSee you on Saturday.")
    with buyer.navigation("gift-confirmation"):
        buyer.button("Buy and send the gift card").click()
    expect(buyer.heading()).to_have_text("Your gift card is on its way")

    sent = wait_for_eml(mail_dir, recipient_email)
    assert sent["Subject"] == f"Alex sent you a {usd(GIFT_AMOUNT)} gift card"
    html = html_part(sent)
    link = re.search(r'href="([^"]+/redeem\?code=[^"]+)"', html)
    assert link, html
    assert link.group(1).startswith(PUBLIC_URL + "/redeem?code="), link.group(1)
    code = CODE.search(link.group(1))
    assert code, link.group(1)

    recipient = tabs.open("gift-journey-recipient", phone=True)
    target = urlsplit(link.group(1))
    recipient.goto(f"{target.path}?{target.query}", "login")
    with recipient.navigation("signup"):
        recipient.page.locator("main .notice").get_by_role("link", name="create an account").click()
    sign_up(recipient, recipient_email, name="Sam", step="account-code-filled-in")
    expect(recipient.field("Gift card code")).to_have_value(code.group(0))
    with recipient.navigation("redeemed"):
        recipient.button("Redeem").click()
    expect(recipient.flash()).to_contain_text(f"{usd(GIFT_AMOUNT)} was added to your balance.")
    expect(recipient.available()).to_have_text(usd(GIFT_AMOUNT))
    expect(history_rows(recipient)).to_have_count(1)

    buyer.goto(ACCOUNT_PAGE + "#gifts", "gifts-you-sent")
    expect(buyer.page.get_by_test_id("gift-status")).to_have_text("Redeemed")


def test_the_gift_form_on_a_phone_shows_each_error_beside_its_field(tabs: Tabs) -> None:
    """On a phone, a gift form with an amount below the store's limit comes back with
    the error beside the field in the store's money, what was typed kept (line breaks
    too), and the summary of problems at the top."""
    tab = tabs.open("gift-form-phone", phone=True)
    tab.goto("/signup", "signup")
    sign_up(tab, new_email("phone"), name="Alex", step="account")
    tab.goto("/store/gift", "gift-form")
    tab.field("Amount (USD)").fill("0.50")
    tab.field("Message").fill("Happy birthday!\nLove, Alex")
    with tab.navigation("gift-form-errors", status=422):
        tab.button("Buy and send the gift card").click()
    expect(tab.page.locator("#amount-error")).to_contain_text(
        "A gift card of the United States store is worth from $1.00 to $2,000.00."
    )
    expect(tab.field("Amount (USD)")).to_have_value("0.50")
    expect(tab.field("Amount (USD)")).to_have_attribute("aria-invalid", "true")
    expect(tab.field("Message")).to_have_value("Happy birthday!\nLove, Alex")
    expect(tab.page.get_by_role("alert")).to_contain_text("There is a problem")
