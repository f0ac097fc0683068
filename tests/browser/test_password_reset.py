"""Forgot your password?, end to end: the log-in page's link, the email the server writes
into GIFTCARD_MAIL_DIR (its sender's folder of `.eml` files when no SMTP server is set),
its link followed in Chromium, a new password, and logging in with it. Screenshots of
each page, and of the email's HTML part at desktop and phone width."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.browsing import ACCOUNT_PAGE, PASSWORD, Live, Tab, Tabs, new_email, sign_up
from tests.e2e.server import HTTP_TIMEOUT_S, base_env, create_api_key, running_server

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "a brand new passphrase"
# The address the emails' links name; the test opens their path on the live server.
PUBLIC_URL = "https://gifts.example.test"
# The sender looks for due messages every second; a generous bound for a busy machine.
EMAIL_WAIT_S = 30


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, mail_dir: Path) -> Iterator[Live]:
    """A `giftcard serve` process without an SMTP server: its emails go to `mail_dir`."""
    folder = tmp_path_factory.mktemp("browser-reset")
    env = base_env(
        f"sqlite:///{folder / 'giftcard.db'}",
        GIFTCARD_MAIL_DIR=str(mail_dir),
        GIFTCARD_PUBLIC_URL=PUBLIC_URL,
    )
    with running_server(env, folder / "server.log", workers=1) as server:
        yield Live(server, create_api_key(env))


def sign_up_through_api(live: Live, email: str) -> None:
    with httpx.Client(base_url=live.base_url, timeout=HTTP_TIMEOUT_S) as http:
        created = http.post(
            "/v1/customers", json={"email": email, "password": PASSWORD, "region": "US"}
        )
        assert created.status_code == 201, created.text


def email_to(mail_dir: Path, recipient: str, subject: str) -> EmailMessage:
    """The first `.eml` in the folder for `recipient` with `subject`, waited for."""
    deadline = time.monotonic() + EMAIL_WAIT_S
    while time.monotonic() < deadline:
        for path in sorted(mail_dir.glob("*.eml")):
            with path.open("rb") as handle:
                message = BytesParser(policy=policy.default).parse(handle)
            assert isinstance(message, EmailMessage)
            if message["To"] == recipient and message["Subject"] == subject:
                return message
        time.sleep(0.2)
    found = sorted(path.name for path in mail_dir.iterdir())
    pytest.fail(
        f"no email {subject!r} to {recipient} in {mail_dir} within {EMAIL_WAIT_S}s: {found}"
    )


def show_email(tabs: Tabs, message: EmailMessage, prefix: str, *, phone: bool) -> Tab:
    """The email's HTML part in a tab of its own, photographed and checked as a page."""
    html = message.get_body(("html",))
    assert html is not None
    tab = tabs.open(prefix, phone=phone)
    tab.page.set_content(str(html.get_content()))
    tab.arrive("email")
    return tab


def test_forgot_password_email_link_new_password_log_in(
    tabs: Tabs, live: Live, mail_dir: Path
) -> None:
    """A shopper who forgot their password asks on the log-in page, gets the email the
    server wrote, follows its link (which leaves no token in the address bar), sets a
    new password, and logs in with it; the old one no longer works."""
    email = new_email("forgot")
    sign_up_through_api(live, email)
    tab = tabs.open("password-reset")
    page = tab.page

    tab.goto("/login", "login")
    with tab.navigation("forgot-password"):
        tab.link("Forgot your password?").click()
    expect(tab.heading()).to_have_text("Forgot your password?")
    tab.field("Email").fill(email)
    with tab.navigation("link-sent"):
        tab.button("Send me a link").click()
    expect(tab.heading()).to_have_text("Check your email")
    expect(
        page.get_by_text("If an account uses that address, we've sent it a link")
    ).to_be_visible()

    message = email_to(mail_dir, email, "Choose a new password for your gift card account")
    text = message.get_body(("plain",))
    assert text is not None
    assert "If you didn't ask, ignore this email" in " ".join(str(text.get_content()).split())
    show_email(tabs, message, "password-reset-email-phone", phone=True)
    shown = show_email(tabs, message, "password-reset-email", phone=False)
    link = shown.page.get_by_role("link", name="Choose a new password")
    href = link.get_attribute("href")
    assert href is not None
    assert href.startswith(f"{PUBLIC_URL}/password-reset?token="), href
    assert href in str(text.get_content())
    parts = urlsplit(href)

    tab.goto(f"{parts.path}?{parts.query}", "new-password-form")
    assert urlsplit(page.url).path == "/password-reset"
    assert not urlsplit(page.url).query, page.url
    expect(tab.heading()).to_have_text("Choose a new password")
    tab.field("New password").fill(NEW_PASSWORD)
    tab.field("The new password again").fill(NEW_PASSWORD + " typo")
    with tab.navigation("passwords-differ", status=422):
        tab.button("Change my password").click()
    expect(page.locator("#confirm_password-error")).to_contain_text("The two passwords differ.")
    tab.field("New password").fill(NEW_PASSWORD)
    tab.field("The new password again").fill(NEW_PASSWORD)
    with tab.navigation("password-changed"):
        tab.button("Change my password").click()
    expect(tab.heading()).to_have_text("Log in")
    expect(tab.flash()).to_contain_text("Your password is changed.")

    tab.field("Email").fill(email)
    tab.field("Password").fill(PASSWORD)
    with tab.navigation("old-password-refused", status=401):
        tab.button("Log in").click()
    tab.field("Password").fill(NEW_PASSWORD)
    with tab.navigation("logged-in"):
        tab.button("Log in").click()
    assert urlsplit(page.url).path == ACCOUNT_PAGE

    tab.goto(f"{parts.path}?{parts.query}", "link-used-again", status=410)
    expect(tab.heading()).to_have_text("This link cannot be used")
    expect(tab.link("Ask for a new link")).to_be_visible()

    notice = email_to(mail_dir, email, "The password of your gift card account was changed")
    show_email(tabs, notice, "password-changed-email", phone=False)


def test_account_settings_change_the_email_then_the_password(
    tabs: Tabs, live: Live, mail_dir: Path
) -> None:
    """From Your Gift Cards to account settings (at phone width): a wrong current
    password is named beside its field; the email changes and the old address gets a
    notice showing the new one masked; the password changes and this tab stays logged
    in; the new email and password log in elsewhere."""
    email, moved = new_email("settings"), new_email("moved")
    tab = tabs.open("account-settings", phone=True)
    page = tab.page
    tab.goto("/signup", "signup")
    sign_up(tab, email, step="your-gift-cards")
    with tab.navigation("settings"):
        tab.link("Account settings").click()
    expect(tab.heading()).to_have_text("Account settings")

    tab.field("New email").fill(moved)
    tab.field("Your current password").fill("not my password")
    with tab.navigation("wrong-current-password", status=401):
        tab.button("Change email").click()
    expect(page.locator("#email_password-error")).to_contain_text(
        "That is not your current password."
    )
    expect(tab.field("New email")).to_have_value(moved)
    tab.field("Your current password").fill(PASSWORD)
    with tab.navigation("email-changed"):
        tab.button("Change email").click()
    expect(tab.flash()).to_contain_text(f"Your email is now {moved}.")

    tab.field("Current password").fill(PASSWORD)
    tab.field("New password").fill(NEW_PASSWORD)
    tab.field("The new password again").fill(NEW_PASSWORD)
    with tab.navigation("password-changed"):
        tab.button("Change password").click()
    expect(tab.flash()).to_contain_text("You are still logged in here")
    tab.goto(ACCOUNT_PAGE, "still-logged-in")
    expect(tab.heading()).to_have_text("Your Gift Cards")

    notice = email_to(mail_dir, email, "The email of your gift card account was changed")
    shown = show_email(tabs, notice, "email-changed-email", phone=True)
    expect(shown.page.get_by_text(f"{moved[0]}•••@example.com")).to_be_visible()
    assert moved not in shown.page.content()
    with httpx.Client(base_url=live.base_url, timeout=HTTP_TIMEOUT_S) as http:
        session = http.post("/v1/sessions", json={"email": moved, "password": NEW_PASSWORD})
        assert session.status_code == 201, session.text
