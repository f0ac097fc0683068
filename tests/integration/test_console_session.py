"""Logging in to the support console (/support/login): staff sessions live in their own
cookie, sent only to /support, apart from shoppers' sessions in both directions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from giftcard import access
from giftcard.api.app import create_app
from giftcard.services import Services
from tests.web import (
    STAFF_PASSWORD,
    console_log_in,
    console_post,
    csrf_of,
    field_error,
    text_of,
    web_post,
    web_sign_up,
)


@pytest.fixture
async def browser(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.21", 4800))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Accept": "text/html"}
    ) as http:
        yield http


async def test_the_console_sends_a_visitor_to_its_log_in_and_back(
    browser: httpx.AsyncClient, services: Services
) -> None:
    away = await browser.get("/support?from=x")
    assert away.status_code == 303
    assert away.headers["location"] == "/support/login?next=/support%3Ffrom%3Dx"
    email = await console_log_in(browser, services)
    home = await browser.get("/support")
    assert home.status_code == 200
    assert f"Logged in as {email} (support)" in text_of(home.text)
    assert 'action="/support/lookup"' in home.text


async def test_the_staff_cookie_is_only_sent_to_the_console(
    browser: httpx.AsyncClient, services: Services
) -> None:
    form = await browser.get("/support/login")
    await console_log_in(browser, services)
    [cookie] = [c for c in browser.cookies.jar if c.name == "giftcard_staff"]
    assert cookie.path == "/support"
    assert "giftcard_session" not in {c.name for c in browser.cookies.jar}
    # The shop's pages do not see a staff member: they are a visitor there.
    account = await browser.get("/account/gift-cards")
    assert account.status_code == 303
    assert account.headers["location"].startswith("/login")
    assert form.status_code == 200


async def test_a_shopper_cannot_log_in_to_the_console_and_no_session_is_left(
    browser: httpx.AsyncClient, services: Services
) -> None:
    email = await web_sign_up(browser)
    await web_post(browser, "/logout")
    form = await browser.get("/support/login")
    refused = await browser.post(
        "/support/login",
        data={
            "csrf_token": csrf_of(form.text),
            "email": email,
            "password": "correct horse battery",
        },
    )
    assert refused.status_code == 403
    assert "shopper's account" in (field_error(refused.text, "email") or "")
    assert "giftcard_staff" not in refused.headers.get("set-cookie", "")


async def test_a_shopper_s_session_is_not_a_staff_member_s(
    browser: httpx.AsyncClient, services: Services
) -> None:
    await web_sign_up(browser)
    console = await browser.get("/support")
    assert console.status_code == 303
    assert console.headers["location"] == "/support/login"


async def test_a_wrong_password_is_refused_beside_its_field(
    browser: httpx.AsyncClient, services: Services
) -> None:
    email = await console_log_in(browser, services)
    await console_post(browser, "/support/logout")
    form = await browser.get("/support/login")
    refused = await browser.post(
        "/support/login",
        data={"csrf_token": csrf_of(form.text), "email": email, "password": "wrong " * 3},
    )
    assert refused.status_code == 401
    assert field_error(refused.text, "email")


async def test_logging_out_ends_the_session(browser: httpx.AsyncClient, services: Services) -> None:
    await console_log_in(browser, services)
    token = browser.cookies.get("giftcard_staff", path="/support")
    assert token
    out = await console_post(browser, "/support/logout")
    assert out.status_code == 303
    assert out.headers["location"] == "/support/login"
    api = await browser.get("/v1/gifts/gift_1", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401


async def test_a_disabled_staff_member_is_logged_out_at_once(
    browser: httpx.AsyncClient, services: Services
) -> None:
    email = await console_log_in(browser, services)
    assert (await browser.get("/support")).status_code == 200
    await access.disable_staff(services.db, email, clock=services.clock)
    assert (await browser.get("/support")).status_code == 303
    form = await browser.get("/support/login")
    again = await browser.post(
        "/support/login",
        data={"csrf_token": csrf_of(form.text), "email": email, "password": STAFF_PASSWORD},
    )
    assert again.status_code == 401


async def test_a_console_form_needs_a_token_of_the_staff_session(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """A token from the console page before logging in is refused once logged in."""
    before = csrf_of((await browser.get("/support/login")).text)
    await console_log_in(browser, services)
    refused = await browser.post("/support/logout", data={"csrf_token": before})
    assert refused.status_code == 403
    assert (await browser.get("/support")).status_code == 200
