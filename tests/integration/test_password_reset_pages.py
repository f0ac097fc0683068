"""The pages of "Forgot your password?" and of account settings, over HTTP as a browser
uses them, on SQLite and PostgreSQL: the link on the log-in page, the same answer for
every address, the reset link's token moved out of the URL into a cookie, the form with
its errors beside the fields, a clear page for a link that cannot be used; changing the
email or password with the errors beside the fields and the input kept (never a
password), and nothing changed by a refused form."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from giftcard import account_mail
from giftcard.api.app import create_app
from giftcard.db.tables import customers, outbox_messages, password_resets, sessions
from giftcard.mail.outbox import MessageKind
from giftcard.services import Services
from tests.conftest import TEST_SECRET_KEY
from tests.web import PASSWORD, csrf, csrf_of, field_error, text_of, web_post, web_sign_up

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
async def browser(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, as a browser does, and asks for HTML."""
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.21", 4713))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Accept": "text/html"}
    ) as http:
        yield http


async def rows(services: Services, table: Any, *where: Any) -> list[Any]:
    async with services.db.transaction(write=False) as connection:
        return list((await connection.execute(select(table).where(*where))).all())


async def token_for(services: Services, email: str) -> str:
    """The newest reset link's token for the customer with this email."""
    [customer] = await rows(services, customers, customers.c.email == email)
    found = await rows(services, password_resets, password_resets.c.customer_id == customer.id)
    newest = max(found, key=lambda row: row.id)
    return account_mail.reset_token(TEST_SECRET_KEY, newest.token_seed)


async def forgot(browser: httpx.AsyncClient, email: str) -> httpx.Response:
    return await web_post(browser, "/forgot-password", {"email": email})


async def log_in_page(browser: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await web_post(browser, "/login", {"email": email, "password": password})


async def test_the_log_in_page_links_to_forgot_your_password(browser: httpx.AsyncClient) -> None:
    login = await browser.get("/login")
    assert 'href="/forgot-password">Forgot your password?</a>' in login.text
    form = await browser.get("/forgot-password")
    assert form.status_code == 200
    assert '<input id="email" name="email" type="email"' in form.text


async def test_every_address_gets_the_same_sent_page(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """A customer's address and an unknown one both lead to "If an account uses that
    address, we've sent a link"; only the customer's gets an email."""
    email = await web_sign_up(browser)
    await browser.post("/logout", data={"csrf_token": await csrf(browser, "/")})
    known = await forgot(browser, email)
    unknown = await forgot(browser, f"nobody-{uuid.uuid4().hex[:8]}@example.com")

    assert known.status_code == unknown.status_code == 303
    assert known.headers["location"] == unknown.headers["location"] == "/forgot-password/sent"
    sent = await browser.get("/forgot-password/sent")
    assert "If an account uses that address, we've sent it a link" in text_of(sent.text)
    queued = await rows(services, outbox_messages)
    assert [(row.kind, row.recipient) for row in queued] == [
        (MessageKind.PASSWORD_RESET.value, email)
    ]


async def test_a_malformed_address_is_named_beside_the_field_and_kept(
    browser: httpx.AsyncClient, services: Services
) -> None:
    refused = await forgot(browser, "not an address")

    assert refused.status_code == 422
    assert field_error(refused.text, "email") == "Enter a valid email address."
    assert 'value="not an address"' in refused.text
    assert await rows(services, password_resets) == []


async def test_asking_too_often_is_said_beside_the_email_field(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """The sixth request in an hour for one address: 429 with Retry-After, the reason
    beside the email field, the address kept; no sixth email is queued."""
    email = f"often-{uuid.uuid4().hex[:8]}@example.com"
    for _ in range(5):
        assert (await forgot(browser, email)).status_code == 303

    refused = await forgot(browser, email)

    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    shown = field_error(refused.text, "email")
    assert shown is not None
    assert shown.startswith("Too many password reset links")
    assert f'value="{email}"' in refused.text


async def test_the_link_moves_its_token_into_a_cookie_and_the_form_changes_the_password(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """Following the link: 303 to /password-reset without the token, which waits in an
    HttpOnly cookie; the form there changes the password, ends the session this browser
    had, and leads to logging in, where the new password works."""
    email = await web_sign_up(browser)
    await forgot(browser, email)
    token = await token_for(services, email)

    landed = await browser.get("/password-reset", params={"token": token})

    assert landed.status_code == 303
    assert landed.headers["location"] == "/password-reset"
    assert landed.headers["referrer-policy"] == "no-referrer"
    cookie = next(
        value for value in landed.headers.get_list("set-cookie") if "giftcard_reset" in value
    )
    assert token in cookie
    assert "httponly" in cookie.lower()
    assert "Max-Age=3600" in cookie
    form = await browser.get("/password-reset")
    assert form.status_code == 200
    assert token not in form.text
    changed = await browser.post(
        "/password-reset",
        data={
            "csrf_token": csrf_of(form.text),
            "password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    )

    assert changed.status_code == 303, changed.text
    assert changed.headers["location"] == "/login"
    assert all(row.revoked_at is not None for row in await rows(services, sessions))
    after = await browser.get("/login")
    assert "Your password is changed." in after.text
    assert (await log_in_page(browser, email, PASSWORD)).status_code == 401
    assert (await log_in_page(browser, email, NEW_PASSWORD)).status_code == 303


@pytest.mark.parametrize(
    ("password", "confirmation", "field", "message"),
    [
        ("short", "short", "password", "The password must be 8 to 256 characters."),
        (NEW_PASSWORD, NEW_PASSWORD + "!", "confirm_password", "The two passwords differ."),
        ("x" * 300, "x" * 300, "password", "The password must be 8 to 256 characters."),
    ],
)
async def test_a_refused_new_password_is_named_beside_its_field(
    browser: httpx.AsyncClient, services: Services, password: str, confirmation: str, field: str,
    message: str,
) -> None:  # fmt: skip
    """A weak, overlong or mismatched new password: 422, the error beside its field,
    no password shown back; the password stays and the link still works."""
    email = await web_sign_up(browser)
    await forgot(browser, email)
    await browser.get("/password-reset", params={"token": await token_for(services, email)})
    form = await browser.get("/password-reset")

    refused = await browser.post(
        "/password-reset",
        data={
            "csrf_token": csrf_of(form.text),
            "password": password,
            "confirm_password": confirmation,
        },
    )

    assert refused.status_code == 422
    shown = field_error(refused.text, field)
    assert shown is not None
    assert shown.startswith(message)
    assert password not in refused.text
    assert (await browser.get("/password-reset")).status_code == 200
    assert (await log_in_page(browser, email, PASSWORD)).status_code == 303


@pytest.mark.parametrize("how", ["used", "unknown", "none", "overlong"])
async def test_a_link_that_cannot_be_used_gets_a_clear_page_with_a_way_to_ask_again(
    browser: httpx.AsyncClient, services: Services, how: str
) -> None:
    """A used link, a made-up or overlong token, or no token at all: a page saying the
    link cannot be used, with a link to ask for a new one, and no form."""
    token = "A" * 43
    if how == "used":
        email = await web_sign_up(browser)
        await forgot(browser, email)
        token = await token_for(services, email)
        await account_mail.reset_password(
            services.unit_of_work(), token=token, password=NEW_PASSWORD, secret_key=TEST_SECRET_KEY
        )
    elif how == "overlong":
        token = "A" * 5000
    if how != "none":
        await browser.get("/password-reset", params={"token": token})

    shown = await browser.get("/password-reset")

    assert shown.status_code == 410
    assert "This link cannot be used" in shown.text
    assert 'href="/forgot-password">Ask for a new link</a>' in shown.text
    assert 'action="/password-reset"' not in shown.text


# --- account settings -----------------------------------------------------------------


async def test_the_settings_page_is_linked_from_your_gift_cards_and_needs_a_log_in(
    browser: httpx.AsyncClient,
) -> None:
    anonymous = await browser.get("/account/settings")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login?next=/account/settings")
    email = await web_sign_up(browser)
    account = await browser.get("/account/gift-cards")
    assert 'href="/account/settings"' in account.text
    shown = await browser.get("/account/settings")
    assert shown.status_code == 200
    assert email in text_of(shown.text)


async def test_changing_the_email_on_the_page(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """The new address becomes the account's, the flash says so, the old one is told."""
    email = await web_sign_up(browser)
    moved = f"moved-{uuid.uuid4().hex[:8]}@example.net"

    changed = await web_post(
        browser, "/account/email", {"email": moved, "email_password": PASSWORD}
    )

    assert changed.status_code == 303, changed.text
    shown = await browser.get("/account/settings")
    assert f"Your email is now {moved}." in text_of(shown.text)
    notices = await rows(services, outbox_messages)
    assert [(row.kind, row.recipient) for row in notices] == [
        (MessageKind.EMAIL_CHANGED.value, email)
    ]


@pytest.mark.parametrize(
    ("data", "field", "status"),
    [
        ({"email": "not an address", "email_password": PASSWORD}, "email", 422),
        ({"email": "TAKEN", "email_password": PASSWORD}, "email", 409),
        ({"email": "fresh@example.org", "email_password": "wrong password"}, "email_password", 401),
    ],
)
async def test_a_refused_email_change_is_named_beside_its_field_with_the_email_kept(
    browser: httpx.AsyncClient,
    services: Services,
    data: dict[str, str],
    field: str,
    status: int,
) -> None:
    taken = f"taken-{uuid.uuid4().hex[:8]}@example.com"
    account = {"email": taken, "password": PASSWORD, "region": "US"}
    assert (await browser.post("/v1/customers", json=account)).status_code == 201
    await web_sign_up(browser)
    if data["email"] == "TAKEN":
        data = {**data, "email": taken}
    before = await rows(services, customers)

    refused = await web_post(browser, "/account/email", data)

    assert refused.status_code == status
    assert field_error(refused.text, field)
    assert f'value="{data["email"]}"' in refused.text
    assert data["email_password"] not in refused.text
    assert await rows(services, customers) == before


async def test_changing_the_password_on_the_page_keeps_this_session_only(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """Another device's session ends; this browser's goes on, and the flash says so."""
    email = await web_sign_up(browser)
    elsewhere = await browser.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert elsewhere.status_code == 201

    changed = await web_post(
        browser,
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    )

    assert changed.status_code == 303, changed.text
    shown = await browser.get("/account/settings")
    assert shown.status_code == 200
    assert "Your password is changed." in text_of(shown.text)
    live = [row for row in await rows(services, sessions) if row.revoked_at is None]
    assert len(live) == 1
    other = {"Authorization": f"Bearer {elsewhere.json()['token']}"}
    assert (await browser.get("/v1/me", headers=other)).status_code == 401


@pytest.mark.parametrize(
    ("data", "field", "status"),
    [
        ({"current_password": "wrong password", "new_password": NEW_PASSWORD,
          "confirm_password": NEW_PASSWORD}, "current_password", 401),
        ({"current_password": PASSWORD, "new_password": "short", "confirm_password": "short"},
         "new_password", 422),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD,
          "confirm_password": "something else"}, "confirm_password", 422),
    ],
)  # fmt: skip
async def test_a_refused_password_change_is_named_beside_its_field(
    browser: httpx.AsyncClient,
    services: Services,
    data: dict[str, str],
    field: str,
    status: int,
) -> None:
    email = await web_sign_up(browser)
    before = await rows(services, customers)

    refused = await web_post(browser, "/account/password", data)

    assert refused.status_code == status
    assert field_error(refused.text, field)
    for value in data.values():
        assert f'value="{value}"' not in refused.text
    assert await rows(services, customers) == before
    assert (await browser.get("/account/settings")).status_code == 200
    still = await browser.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert still.status_code == 201
