"""The shopper's pages over HTTP, on SQLite and PostgreSQL: sign-up and log-in forms,
CSRF, cookies, Your Gift Cards (redeem, errors beside the field, history paging, refund
preference), the redeem link, log-out, and page-shaped errors."""

from __future__ import annotations

import asyncio
import html
import math
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from giftcard import codes, customers, ids
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.customers import RefundPreference
from giftcard.db.tables import customers as customers_table
from giftcard.services import Services
from giftcard.web.templating import wait_words
from tests.conftest import api_key, issue
from tests.web import PASSWORD, csrf_of, field_error, web_redeem, web_sign_up

ACCOUNT = "/account/gift-cards"


def input_value(page: str, name: str) -> str | None:
    found = re.search(rf'<input id="{name}"[^>]*value="([^"]*)"', page)
    return html.unescape(found.group(1)) if found else None


@pytest.fixture
async def browser(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, as a browser does, and asks for HTML."""
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4712))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Accept": "text/html"}
    ) as http:
        yield http


async def customer_id_of(services: Services, email: str) -> int:
    async with services.db.transaction(write=False) as connection:
        return int(
            (
                await connection.execute(
                    select(customers_table.c.id).where(customers_table.c.email == email)
                )
            ).scalar_one()
        )


def history_lines(page: str) -> list[str]:
    """The words of each row of the history table, newest first, cell by cell."""
    table = re.search(r'<table class="history">(.*?)</table>', page, re.S)
    assert table, "no history table"
    body = table.group(1).split("<tbody>", 1)[1]
    return [
        " ".join(
            html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        )
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


async def customer_count(services: Services) -> int:
    async with services.db.transaction(write=False) as connection:
        return int(
            (
                await connection.execute(select(func.count()).select_from(customers_table))
            ).scalar_one()
        )


# --- sign up, log in, cookies ---------------------------------------------------------


async def test_home_page_offers_sign_up_and_log_in(browser: httpx.AsyncClient) -> None:
    """A visitor sees what the service is and the ways in (the demo store only in a demo:
    test_demo_store.py); the page is locked down by its headers and hands out an
    HttpOnly, SameSite CSRF cookie."""
    home = await browser.get("/")
    assert home.status_code == 200
    assert home.headers["content-type"].startswith("text/html")
    for link in ('href="/signup"', 'href="/login"'):
        assert link in home.text
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
    assert home.headers["x-frame-options"] == "DENY"
    cookie = home.headers["set-cookie"].lower()
    assert cookie.startswith("giftcard_csrf=")
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "secure" not in cookie


async def test_sign_up_logs_the_shopper_in_with_a_safe_session_cookie(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """Signing up creates the account and logs in at once: the session cookie is
    HttpOnly and SameSite=Lax, and the account page opens."""
    form = await browser.get("/signup")
    created = await browser.post(
        "/signup",
        data={
            "csrf_token": csrf_of(form.text),
            "email": "Ada@Example.com",
            "password": PASSWORD,
            "region": "GB",
            "name": "Ada",
        },
    )
    assert created.status_code == 303
    assert created.headers["location"] == ACCOUNT
    session_cookie = next(
        value
        for key, value in created.headers.multi_items()
        if value.startswith("giftcard_session=")
    ).lower()
    assert "httponly" in session_cookie
    assert "samesite=lax" in session_cookie
    account = await browser.get(ACCOUNT)
    assert account.status_code == 200
    assert "Your Gift Cards" in account.text
    assert "£0.00" in account.text
    assert "ada@example.com" in account.text
    assert await customer_count(services) == 1


async def test_cookies_are_secure_over_https(services: Services) -> None:
    """Served over HTTPS, every cookie the pages set is marked Secure."""
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://shop.test") as http:
        form = await http.get("/signup")
        created = await http.post(
            "/signup",
            data={
                "csrf_token": csrf_of(form.text),
                "email": "secure@example.com",
                "password": PASSWORD,
                "region": "US",
            },
        )
    assert created.status_code == 303
    set_cookies = [
        v
        for k, v in [*form.headers.multi_items(), *created.headers.multi_items()]
        if k == "set-cookie"
    ]
    assert len(set_cookies) >= 2
    assert all("secure" in cookie.lower() for cookie in set_cookies), set_cookies


@pytest.mark.parametrize(
    ("fields", "field", "status", "words"),
    [
        ({"email": "not-an-email"}, "email", 422, "email"),
        ({"password": "short"}, "password", 422, "8"),
        ({"region": "XX"}, "region", 422, "Unknown region"),
        ({"email": ""}, "email", 422, "email"),
    ],
)
async def test_sign_up_errors_appear_beside_their_field_with_the_input_kept(
    browser: httpx.AsyncClient,
    services: Services,
    fields: dict[str, str],
    field: str,
    status: int,
    words: str,
) -> None:
    """A refused sign-up shows the form again with the error beside its field, the
    email and name kept, the password never echoed, and no account created."""
    form = await browser.get("/signup")
    data = {
        "csrf_token": csrf_of(form.text),
        "email": "kept@example.com",
        "password": "a secret password",
        "region": "US",
        "name": "Kept Name",
        **fields,
    }
    refused = await browser.post("/signup", data=data)
    assert refused.status_code == status, refused.text
    if field == "region":
        assert 'id="region-error"' in refused.text
    else:
        error = field_error(refused.text, field) or ""
        assert words.lower() in error.lower(), error
    assert refused.text.count("There is a problem") == 1
    assert "<title>Error:" in refused.text
    assert input_value(refused.text, "name") == "Kept Name"
    if "email" not in fields:
        assert input_value(refused.text, "email") == "kept@example.com"
    assert "a secret password" not in refused.text
    assert await customer_count(services) == 0


async def test_sign_up_shows_every_fields_error_at_once_with_the_summary(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """A sign-up wrong in three fields names all three at once, each beside its field
    and each in the summary linking to it, rather than one per attempt."""
    form = await browser.get("/signup")
    refused = await browser.post(
        "/signup",
        data={
            "csrf_token": csrf_of(form.text),
            "email": "not-an-email",
            "password": "short",
            "region": "XX",
            "name": "Kept Name",
        },
    )
    assert refused.status_code == 422
    assert "valid email" in (field_error(refused.text, "email") or "")
    assert "8 to" in (field_error(refused.text, "password") or "")
    assert 'id="region-error"' in refused.text
    assert 'aria-describedby="region-hint region-error"' in refused.text
    summary = re.search(r'<div class="error-summary".*?</div>', refused.text, re.S)
    assert summary, "no error summary"
    links = re.findall(r'<a href="#(\w+)">', summary.group(0))
    assert links == ["email", "password", "region"]
    assert input_value(refused.text, "name") == "Kept Name"
    assert await customer_count(services) == 0


async def test_a_taken_email_is_named_beside_the_email_field(browser: httpx.AsyncClient) -> None:
    """Signing up twice with one email says so beside the email, with a log-in link."""
    email = await web_sign_up(browser)
    await browser.post("/logout", data={"csrf_token": csrf_of((await browser.get("/")).text)})
    form = await browser.get("/signup")
    again = await browser.post(
        "/signup",
        data={
            "csrf_token": csrf_of(form.text),
            "email": email,
            "password": PASSWORD,
            "region": "US",
        },
    )
    assert again.status_code == 409
    assert "already exists" in (field_error(again.text, "email") or "")
    assert 'href="/login"' in again.text


async def test_log_in_goes_back_to_the_page_asked_for_and_never_off_site(
    browser: httpx.AsyncClient,
) -> None:
    """An account page sends a visitor to log in and back; a `next` leading to another
    site is replaced by the account page."""
    email = await web_sign_up(browser)
    await browser.post("/logout", data={"csrf_token": csrf_of((await browser.get("/")).text)})
    asked = await browser.get(ACCOUNT + "?starting_after=txn_5")
    assert asked.status_code == 303
    assert asked.headers["location"] == "/login?next=/account/gift-cards%3Fstarting_after%3Dtxn_5"
    for next_path, expected in [
        ("/account/gift-cards?starting_after=txn_5", "/account/gift-cards?starting_after=txn_5"),
        ("//evil.example/steal", ACCOUNT),
        ("https://evil.example/", ACCOUNT),
        ("/\\evil.example", ACCOUNT),
    ]:
        form = await browser.get("/login", params={"next": next_path})
        logged_in = await browser.post(
            "/login",
            data={
                "csrf_token": csrf_of(form.text),
                "email": email,
                "password": PASSWORD,
                "next": next_path,
            },
        )
        assert logged_in.status_code == 303, logged_in.text
        assert logged_in.headers["location"] == expected
        await browser.post("/logout", data={"csrf_token": csrf_of((await browser.get("/")).text)})


async def test_a_wrong_password_keeps_the_email_and_locks_after_too_many(
    browser: httpx.AsyncClient,
) -> None:
    """A wrong password is refused beside the email, which is kept; the failed log-in
    limit (10 per account) then refuses even the right password, with Retry-After."""
    email = await web_sign_up(browser)
    await browser.post("/logout", data={"csrf_token": csrf_of((await browser.get("/")).text)})
    for _ in range(10):
        form = await browser.get("/login")
        wrong = await browser.post(
            "/login",
            data={"csrf_token": csrf_of(form.text), "email": email, "password": "wrong password"},
        )
        assert wrong.status_code == 401
        assert "email or password is wrong" in (field_error(wrong.text, "email") or "")
        assert input_value(wrong.text, "email") == email
    form = await browser.get("/login")
    locked = await browser.post(
        "/login", data={"csrf_token": csrf_of(form.text), "email": email, "password": PASSWORD}
    )
    assert locked.status_code == 429
    retry_after_s = int(locked.headers["retry-after"])
    assert retry_after_s > 0
    minutes = math.ceil(retry_after_s / 60)
    assert field_error(locked.text, "email") == (
        f"Too many failed log-ins for this account. Try again in {minutes} minutes."
    )
    assert "giftcard_session" not in locked.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "1 minute"),
        (61, "2 minutes"),
        (12 * 60, "12 minutes"),
        (90 * 60, "90 minutes"),
        (90 * 60 + 1, "2 hours"),
        (3 * 3600, "3 hours"),
    ],
)
def test_a_wait_is_said_in_the_unit_people_use_rounded_up(seconds: int, words: str) -> None:
    """The lock-out's wait in words: never shorter than the real one."""
    assert wait_words(seconds) == words


async def test_staff_cannot_log_in_to_the_shopper_pages(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """A staff member's credentials are refused on the shopper's log-in form, and the
    session made while checking them is closed at once."""
    await customers.create_staff(
        services.db,
        email="staff@example.com",
        password=PASSWORD,
        role=customers.Role.SUPPORT,
        name=None,
        clock=services.clock,
    )
    form = await browser.get("/login")
    refused = await browser.post(
        "/login",
        data={"csrf_token": csrf_of(form.text), "email": "staff@example.com", "password": PASSWORD},
    )
    assert refused.status_code == 403
    assert "staff account" in (field_error(refused.text, "email") or "")
    assert "giftcard_session" not in refused.headers.get("set-cookie", "")


# --- CSRF -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["missing", "forged", "other cookie", "other site"])
async def test_a_form_without_a_valid_csrf_token_gets_a_clear_page_and_changes_nothing(
    browser: httpx.AsyncClient, services: Services, how: str
) -> None:
    """A missing, forged or stale CSRF token, or a form posted from another site, gets a
    403 page that says what to do, and no account is made."""
    form = await browser.get("/signup")
    data = {"email": "csrf@example.com", "password": PASSWORD, "region": "US"}
    headers = {}
    if how == "forged":
        data["csrf_token"] = "A" * 43
    elif how == "other cookie":
        data["csrf_token"] = csrf_of(form.text)
        browser.cookies.set("giftcard_csrf", "b" * 43)
    elif how == "other site":
        data["csrf_token"] = csrf_of(form.text)
        headers["Origin"] = "https://evil.example"
    refused = await browser.post("/signup", data=data, headers=headers)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert "This form has expired" in refused.text
    assert "Traceback" not in refused.text
    assert await customer_count(services) == 0


async def refund_preference_of(services: Services, email: str) -> str:
    async with services.db.transaction(write=False) as connection:
        value = (
            await connection.execute(
                select(customers_table.c.refund_preference).where(customers_table.c.email == email)
            )
        ).scalar_one()
    return str(value)


async def test_a_token_from_before_log_in_is_refused_after_it(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """A CSRF token handed out before logging in (which whoever planted or read the
    browser's CSRF cookie could hold) does not work in the session opened afterwards;
    a form rendered in that session does."""
    email = await web_sign_up(browser)
    await browser.post("/logout", data={"csrf_token": csrf_of((await browser.get("/")).text)})
    form = await browser.get("/login")
    before = csrf_of(form.text)
    logged_in = await browser.post(
        "/login", data={"csrf_token": before, "email": email, "password": PASSWORD}
    )
    assert logged_in.status_code == 303

    stale = await browser.post(
        "/account/refund-preference",
        data={"csrf_token": before, "refund_preference": "gift_card_balance"},
    )
    assert stale.status_code == 403
    assert "This form has expired" in stale.text
    assert await refund_preference_of(services, email) == "original_payment_method"

    fresh = csrf_of((await browser.get(ACCOUNT)).text)
    saved = await browser.post(
        "/account/refund-preference",
        data={"csrf_token": fresh, "refund_preference": "gift_card_balance"},
    )
    assert saved.status_code == 303
    assert await refund_preference_of(services, email) == "gift_card_balance"


async def test_a_token_from_another_session_is_refused(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """A token rendered in one session of a browser is refused in its next session, and
    in another session carried with the same CSRF cookie; nothing changes."""
    email = await web_sign_up(browser)
    first_session_token = csrf_of((await browser.get(ACCOUNT)).text)
    await browser.post("/logout", data={"csrf_token": first_session_token})
    form = await browser.get("/login")
    await browser.post(
        "/login", data={"csrf_token": csrf_of(form.text), "email": email, "password": PASSWORD}
    )
    own_session_token = csrf_of((await browser.get(ACCOUNT)).text)
    other = await customers.log_in(
        services.db, email=email, password=PASSWORD, ttl_s=3600, clock=services.clock
    )

    old = await browser.post(
        "/account/refund-preference",
        data={"csrf_token": first_session_token, "refund_preference": "gift_card_balance"},
    )
    browser.cookies.delete("giftcard_session")
    browser.cookies.set("giftcard_session", other.token)
    crossed = await browser.post(
        "/account/refund-preference",
        data={"csrf_token": own_session_token, "refund_preference": "gift_card_balance"},
    )

    for refused in (old, crossed):
        assert refused.status_code == 403
        assert "This form has expired" in refused.text
    assert await refund_preference_of(services, email) == "original_payment_method"


async def test_log_out_needs_the_csrf_token_and_ends_the_session(
    browser: httpx.AsyncClient,
) -> None:
    """Log-out is a POST with a token (a link on another site cannot log you out); after
    it the old session cookie opens nothing."""
    await web_sign_up(browser)
    session = browser.cookies.get("giftcard_session")
    assert session
    forged = await browser.post("/logout", data={})
    assert forged.status_code == 403
    assert (await browser.get(ACCOUNT)).status_code == 200
    out = await browser.post("/logout", data={"csrf_token": csrf_of((await browser.get("/")).text)})
    assert out.status_code == 303
    assert out.headers["location"] == "/"
    home = await browser.get("/")
    assert "You are logged out." in home.text
    browser.cookies.set("giftcard_session", session)
    assert (await browser.get(ACCOUNT)).status_code == 303


# --- Your Gift Cards --------------------------------------------------------------------


async def test_redeeming_on_the_page_shows_the_amount_added_and_the_new_balance(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """A code typed in lower case with spaces is redeemed; the page then says how much
    was added and the new balance, and the history shows it."""
    admin = await api_key(services)
    first, second = await issue(client, admin, amount=2500, count=2)
    await web_sign_up(browser)
    done = await web_redeem(browser, first["code"].lower().replace("-", " "))
    assert done.status_code == 303
    assert done.headers["location"] == ACCOUNT
    page = await browser.get(ACCOUNT)
    assert "$25.00 was added to your balance." in page.text
    assert "Your gift card balance is now $25.00." in page.text
    assert first["code"] not in page.text
    await web_redeem(browser, second["code"])
    page = await browser.get(ACCOUNT)
    assert 'data-testid="available">$50.00<' in page.text
    assert f"Gift card ending {second['last4']} redeemed" in page.text
    assert page.text.count("+$25.00") == 2
    assert (await browser.get(ACCOUNT)).text.count("was added") == 0, "shown once"


async def test_each_refusal_appears_beside_the_code_with_the_input_kept(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """Every SPEC §5 refusal is shown beside the code field in plain words, with the
    status of its error code, and the typed code is kept for correcting."""
    admin = await api_key(services)
    (card,) = await issue(client, admin)
    (british,) = await issue(client, admin, region="GB", amount=900)
    (inactive,) = await issue(client, admin, kind="physical")
    normalized = codes.normalize_code(card["code"])
    swapped = normalized[:5] + normalized[6] + normalized[5] + normalized[7:]
    if swapped == normalized:
        swapped = normalized[:1] + normalized[2] + normalized[1] + normalized[3:]
    await web_sign_up(browser)
    assert (await web_redeem(browser, card["code"])).status_code == 303
    cases = [
        ("12345", 422, "16"),
        (swapped, 422, "Check the code — one character looks mistyped."),
        (card["code"], 409, "already added to your account"),
        (british["code"], 409, "United Kingdom store"),
        (inactive["code"], 409, "not been activated"),
        ("   ", 422, "Enter the code"),
    ]
    for typed, status, words in cases:
        refused = await web_redeem(browser, typed)
        assert refused.status_code == status, (typed, refused.text)
        error = field_error(refused.text, "code") or ""
        assert words in error, (typed, error)
        assert input_value(refused.text, "code") == typed
        assert 'data-testid="available">$25.00<' in refused.text


async def test_one_code_sent_from_two_tabs_at_once_is_credited_once(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """The redeem form sent five times at the same moment: the card's value is added
    once; every other answer says the code was already added to this account."""
    (card,) = await issue(client, await api_key(services))
    await web_sign_up(browser)
    token = csrf_of((await browser.get(ACCOUNT)).text)

    racing = await asyncio.gather(
        *(
            browser.post(ACCOUNT + "/redeem", data={"csrf_token": token, "code": card["code"]})
            for _ in range(5)
        )
    )

    statuses = sorted(response.status_code for response in racing)
    assert statuses == [303, 409, 409, 409, 409], statuses
    for refused in (response for response in racing if response.status_code == 409):
        assert "already added to your account" in (field_error(refused.text, "code") or "")
    page = await browser.get(ACCOUNT)
    assert 'data-testid="available">$25.00<' in page.text
    assert page.text.count("+$25.00") == 1


async def test_money_held_for_an_order_in_progress_is_shown_beside_the_balance(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """While the store holds part of the balance (an authorized payment), the page shows
    the available balance and the held amount with the total."""
    admin = await api_key(services)
    (card,) = await issue(client, admin, amount=5000)
    email = await web_sign_up(browser)
    await web_redeem(browser, card["code"])
    async with services.db.transaction(write=False) as connection:
        customer_id = (
            await connection.execute(
                select(customers_table.c.id).where(customers_table.c.email == email)
            )
        ).scalar_one()
    held = await client.post(
        "/v1/payments",
        json={
            "customer_id": ids.format_id(ids.CUSTOMER, customer_id),
            "order_id": "order-held",
            "amount": 2000,
            "currency": "USD",
            "use_balance": "max",
            "capture": False,
        },
        headers=admin,
    )
    assert held.status_code == 201, held.text
    page = await browser.get(ACCOUNT)
    assert 'data-testid="available">$30.00<' in page.text
    assert "Plus $20.00 held for an order in progress (total $50.00)." in page.text


async def test_an_unknown_code_is_told_apart_from_a_typo(
    browser: httpx.AsyncClient,
) -> None:
    """A well-formed code with a valid check symbol that no card has is 'not found'."""
    await web_sign_up(browser)
    unknown = codes.format_code(codes.generate_code())
    refused = await web_redeem(browser, unknown)
    assert refused.status_code == 404
    assert "couldn't find a gift card" in (field_error(refused.text, "code") or "")


async def test_too_many_refused_codes_lock_the_form_with_retry_after(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """After 10 refused codes the account is locked: even a valid code is refused on the
    page, with Retry-After, and the balance is unchanged."""
    (card,) = await issue(client, await api_key(services))
    await web_sign_up(browser)
    for _ in range(10):
        assert (await web_redeem(browser, "0000-0000-0000-0000")).status_code in (404, 422)
    locked = await web_redeem(browser, card["code"])
    assert locked.status_code == 429
    minutes = math.ceil(int(locked.headers["retry-after"]) / 60)
    assert minutes > 0
    assert field_error(locked.text, "code") == (
        f"Too many unsuccessful attempts to redeem a code. Try again in {minutes} minutes."
    )
    assert 'data-testid="available">$0.00<' in locked.text


async def test_paused_redemptions_say_so_on_the_page_with_how_long(
    settings: Settings, clock: FrozenClock
) -> None:
    """With a service-wide limit of one unknown code an hour, once another shopper's
    unknown code has filled it, a valid code on the page is refused 429 with words that
    say redemptions are paused for everyone and for how long, and nothing is redeemed."""
    svc = Services.build(replace(settings, limit_redeem_misses_service="1/hour"), clock=clock)
    try:
        app = create_app(services=svc)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4712))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as api,
            httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers={"Accept": "text/html"}
            ) as page_browser,
        ):
            (card,) = await issue(api, await api_key(svc))
            await web_sign_up(page_browser)
            unknown = codes.format_code(codes.generate_code())
            assert (await web_redeem(page_browser, unknown)).status_code == 404
            paused = await web_redeem(page_browser, card["code"])
    finally:
        await svc.close()
    assert paused.status_code == 429
    assert int(paused.headers["retry-after"]) == 3600
    assert field_error(paused.text, "code") == (
        "Redemptions are paused for a while because many codes that do not exist were "
        "tried; your code has not been checked. Try again in 60 minutes."
    )
    assert 'data-testid="available">$0.00<' in paused.text


async def test_an_expired_session_keeps_the_typed_code_through_logging_in(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """When the session ended while the form was open, the code goes with the shopper
    to the log-in page and is filled in again afterwards: nothing typed is lost."""
    (card,) = await issue(client, await api_key(services))
    email = await web_sign_up(browser)
    page = await browser.get(ACCOUNT)
    browser.cookies.delete("giftcard_session")
    bounced = await browser.post(
        ACCOUNT + "/redeem", data={"csrf_token": csrf_of(page.text), "code": card["code"]}
    )
    assert bounced.status_code == 303
    assert bounced.headers["location"].startswith("/login?next=")
    assert card["code"] not in bounced.headers["location"]
    form = await browser.get("/login")
    assert "add your gift card" in form.text
    await browser.post(
        "/login", data={"csrf_token": csrf_of(form.text), "email": email, "password": PASSWORD}
    )
    again = await browser.get(ACCOUNT)
    assert input_value(again.text, "code") == card["code"]


async def test_a_payments_history_line_says_what_it_is_now_and_names_its_order(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Holds captured, voided or partly captured, and payments refunded: each line says
    what became of the payment and names its order, on the page and in the API alike;
    every time shown carries the store's time zone."""
    admin = await api_key(services)
    (card,) = await issue(client, admin, amount=10000)
    email = await web_sign_up(browser)
    await web_redeem(browser, card["code"])
    customer = ids.format_id(ids.CUSTOMER, await customer_id_of(services, email))

    async def pay(order_id: str, amount: int, *, capture: bool) -> str:
        paid = await client.post(
            "/v1/payments",
            json={
                "customer_id": customer,
                "order_id": order_id,
                "amount": amount,
                "currency": "USD",
                "use_balance": "max",
                "capture": capture,
            },
            headers=admin,
        )
        assert paid.status_code == 201, paid.text
        return str(paid.json()["id"])

    async def act(payment: str, action: str, body: dict[str, Any]) -> None:
        done = await client.post(f"/v1/payments/{payment}/{action}", json=body, headers=admin)
        assert done.status_code in (200, 201), done.text

    await act(await pay("order-captured", 2000, capture=False), "capture", {})
    await act(await pay("order-voided", 1000, capture=False), "void", {})
    await act(await pay("order-refunded", 500, capture=True), "refunds", {"amount": 500})
    await act(await pay("order-partly", 1000, capture=False), "capture", {"amount": 600})
    held = await pay("order-held", 700, capture=False)
    assert held

    page = await browser.get(ACCOUNT)
    lines = history_lines(page.text)
    expected = [
        "Payment for order order-held: held, not charged yet -$7.00",
        "Unused part of the hold for order order-partly released +$4.00",
        "Payment for order order-partly: $6.00 captured, $4.00 released -$10.00",
        "Refund for order order-refunded +$5.00",
        "Payment for order order-refunded: captured, then refunded -$5.00",
        "Hold for order order-voided released: the order was cancelled +$10.00",
        "Payment for order order-voided: held, then released (the order was cancelled) -$10.00",
        "Payment for order order-captured: captured -$20.00",
    ]
    assert len(lines) == len(expected) + 1  # and the redemption
    for line, words in zip(lines[: len(expected)], expected, strict=True):
        assert words in line, (words, line)
    assert "Held $" not in page.text
    # Without the demo store no order has a page to link to.
    assert 'href="/store/orders/' not in page.text
    zone = clock.now().astimezone(ZoneInfo("America/New_York")).tzname()
    assert zone in ("EST", "EDT")
    assert len(re.findall(rf'<td class="when">[^<]*, [^<]* {zone}</td>', page.text)) == len(lines)

    session = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {session.json()['token']}"}
    api = await client.get("/v1/me/transactions", headers=auth)
    descriptions = [item["description"] for item in api.json()["data"]]
    assert descriptions[0] == "Payment for order order-held: held, not charged yet"
    assert descriptions[-1] == f"Gift card ending {card['last4']} redeemed"


async def test_times_show_the_zone_of_the_shoppers_store(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """A German shopper reads times in Berlin's zone, named, in the German way."""
    (card,) = await issue(client, await api_key(services), amount=2500, region="DE")
    await web_sign_up(browser, region="DE")
    await web_redeem(browser, card["code"])
    page = await browser.get(ACCOUNT)
    local = clock.now().astimezone(ZoneInfo("Europe/Berlin"))
    shown = f"{local:%d.%m.%Y}, {local:%H:%M} {local.tzname()}"
    assert f'<td class="when">{shown}</td>' in page.text


async def test_history_pages_ten_at_a_time(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """Twelve redemptions: the first page has ten and an 'Older' link, the second the
    other two and a 'Newest' link; a malformed or made-up cursor gets a clear page, not a
    500."""
    cards = await issue(client, await api_key(services), amount=100, count=12)
    await web_sign_up(browser)
    for card in cards:
        await web_redeem(browser, card["code"])
    first = await browser.get(ACCOUNT)
    assert first.text.count("<tr>") == 11  # the head row and ten
    older = re.search(
        r'href="(/account/gift-cards\?starting_after=txn_[0-9a-z]{13})#history">Older', first.text
    )
    assert older, "no Older link"
    second = await browser.get(older.group(1))
    assert second.text.count("<tr>") == 3
    assert ">Newest<" in second.text
    assert ">Older<" not in second.text
    bad = await browser.get(ACCOUNT + "?starting_after=nonsense")
    assert bad.status_code == 422
    assert "starting_after" in bad.text
    unknown = await browser.get(ACCOUNT + "?starting_after=txn_987654321")
    assert unknown.status_code == 422
    assert "starting_after" in unknown.text


async def test_the_refund_preference_is_saved_and_shown(
    browser: httpx.AsyncClient, services: Services
) -> None:
    """Choosing where refunds go saves it on the account; a forged value is refused
    beside the choice and changes nothing."""
    email = await web_sign_up(browser)
    page = await browser.get(ACCOUNT)
    assert re.search(r'value="original_payment_method" checked', page.text)
    saved = await browser.post(
        "/account/refund-preference",
        data={"csrf_token": csrf_of(page.text), "refund_preference": "gift_card_balance"},
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == ACCOUNT + "#refunds-saved"
    page = await browser.get(saved.headers["location"])
    # The confirmation is inside the preference's own section, where the address takes
    # the browser, and marked for the page's script to move the focus to it.
    section = re.search(r'<section class="card"[^>]*id="refunds">(.*?)</section>', page.text, re.S)
    assert section, "no refunds section"
    notice = re.search(r'<div class="notice[^"]*"([^>]*)>(.*?)</div>', section.group(1), re.S)
    assert notice, "the confirmation is not beside the form"
    assert 'id="refunds-saved"' in notice.group(1)
    assert 'role="status"' in notice.group(1)
    assert 'tabindex="-1"' in notice.group(1)
    assert "data-focus" in notice.group(1)
    assert "Your refund preference is saved." in notice.group(2)
    assert page.text.count("Your refund preference is saved.") == 1
    assert re.search(r'value="gift_card_balance" checked', page.text)
    forged = await browser.post(
        "/account/refund-preference",
        data={"csrf_token": csrf_of(page.text), "refund_preference": "cash"},
    )
    assert forged.status_code == 422
    assert "Choose where refunds should go." in forged.text
    async with services.db.transaction(write=False) as connection:
        row = (
            await connection.execute(
                select(customers_table.c.refund_preference).where(customers_table.c.email == email)
            )
        ).one()
    assert row.refund_preference == RefundPreference.GIFT_CARD_BALANCE.value


# --- the redeem link ----------------------------------------------------------------------


async def test_the_redeem_link_survives_signing_up_and_fills_in_the_code(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """Logged out, a gift email's link leads to log in (never with the code in a URL),
    on to sign up, and to the account page with the code filled in, once."""
    (card,) = await issue(client, await api_key(services))
    link = await browser.get("/redeem", params={"code": card["code"]})
    assert link.status_code == 303
    assert link.headers["location"] == ACCOUNT + "#redeem"
    assert link.headers["referrer-policy"] == "no-referrer"
    pending = next(v for k, v in link.headers.multi_items() if v.startswith("giftcard_redeem="))
    assert "httponly" in pending.lower()
    to_login = await browser.get(ACCOUNT)
    assert to_login.headers["location"] == "/login?next=/account/gift-cards"
    login = await browser.get("/login")
    assert "add your gift card" in login.text
    assert 'href="/signup"' in login.text
    await web_sign_up(browser)
    account = await browser.get(ACCOUNT)
    assert input_value(account.text, "code") == card["code"]
    assert "We filled in the code from your gift card link." in account.text
    assert input_value((await browser.get(ACCOUNT)).text, "code") == "", "filled in once"
    assert (await web_redeem(browser, card["code"])).status_code == 303


async def test_the_redeem_link_when_logged_in_opens_the_form_filled_in(
    browser: httpx.AsyncClient,
) -> None:
    """Logged in, the link goes straight to the filled-in form; a link without a code
    just opens the form."""
    await web_sign_up(browser)
    await browser.get("/redeem", params={"code": "abcd-efgh"})
    assert input_value((await browser.get(ACCOUNT)).text, "code") == "abcd-efgh"
    empty = await browser.get("/redeem")
    assert empty.status_code == 303
    assert input_value((await browser.get(ACCOUNT)).text, "code") == ""


# --- page-shaped errors ---------------------------------------------------------------------


async def test_unknown_pages_are_pages_and_api_errors_stay_problems(
    browser: httpx.AsyncClient,
) -> None:
    """A browser asking for a missing page gets an HTML 404 page; the API keeps its
    problem documents even when asked for HTML."""
    missing = await browser.get("/no-such-page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "Page not found" in missing.text
    api = await browser.get("/v1/no-such-thing")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    wrong_method = await browser.put("/signup")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"].startswith("text/html")


async def test_a_failure_on_our_side_is_a_page_without_a_stack_trace(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while rendering a page answers 500 with a plain page."""
    from giftcard import history

    transport = httpx.ASGITransport(app=create_app(services=services), raise_app_exceptions=False)
    browser = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    await web_sign_up(browser)

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(history, "customer_history", broken)
    failed = await browser.get(ACCOUNT)
    assert failed.status_code == 500
    assert "Something went wrong on our side" in failed.text
    assert "secret internal detail" not in failed.text
    assert "Traceback" not in failed.text
    await browser.aclose()
