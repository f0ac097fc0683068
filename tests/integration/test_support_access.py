"""What the support console does with callers it turns away: every console address but
logging in sends a visitor, a shopper and a disabled staff member to the console's log-in
page, on GET and on POST alike (with a valid CSRF token), and nothing is recorded.

Who may call each route and page, the support API and the console included, is the
access matrix of `test_access_matrix.py`; the console addresses here are its rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from giftcard import access
from giftcard.api.app import create_app
from giftcard.db.tables import audit_log
from giftcard.services import Services
from tests.conftest import api_key, issue, sign_up, staff_member
from tests.integration.test_access_matrix import PAGE_ROWS, STAFF_LOG_IN, Caller
from tests.web import console_log_in, csrf, web_sign_up

# Every console address that sends a visitor to the console's log-in page.
CONSOLE_PAGES = [
    (row.method, row.path)
    for row in PAGE_ROWS
    if row.is_console and row.expected[Caller.ANONYMOUS] == STAFF_LOG_IN
]


async def things(client: httpx.AsyncClient, services: Services) -> dict[str, str]:
    """A card, a customer, an adjustment waiting for approval and a gift to act on."""
    admin = await api_key(services, "admin")
    shopper = await sign_up(client)
    [card] = await issue(client, admin)
    creator = await staff_member(client, services, "support")
    pending = await client.post(
        f"/v1/support/customers/{shopper.id}/adjustments",
        json={"amount": 50000, "reason": "goodwill", "note": "waits for approval"},
        headers=creator.auth,
    )
    assert pending.status_code == 201, pending.text
    assert pending.json()["status"] == "pending_approval"
    gift = await client.post(
        "/v1/gifts",
        json={
            "amount": 2500,
            "region": "US",
            "recipient_email": "friend@example.com",
            "sender_name": "Console",
            "deliver_at": (services.clock.now() + timedelta(days=30)).isoformat(),
        },
        headers=admin,
    )
    assert gift.status_code == 201, gift.text
    return {
        "card": card["id"],
        "serial": card["serial"],
        "customer": shopper.id,
        "adjustment": pending.json()["id"],
        "gift": gift.json()["id"],
    }


def fill(template: Any, values: dict[str, str]) -> Any:
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def test_the_console_rows_are_every_console_address_but_logging_in() -> None:
    """The matrix's console rows all send a visitor to log in, but the log-in page's
    own two (a change there would silently drop an address from the test below)."""
    assert len(CONSOLE_PAGES) == len([row for row in PAGE_ROWS if row.is_console]) - 2


@pytest.fixture
async def browser(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.31", 4900))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Accept": "text/html"}
    ) as http:
        yield http


@pytest.mark.parametrize("who", ["visitor", "shopper", "disabled staff"])
async def test_the_console_lets_no_one_but_staff_in(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, services: Services, who: str
) -> None:
    values = await things(client, services)
    if who == "shopper":
        await web_sign_up(browser)
    elif who == "disabled staff":
        email = await console_log_in(browser, services)
        await access.disable_staff(services.db, email, clock=services.clock)
    token = await csrf(browser, "/support/login")
    for method, path in CONSOLE_PAGES:
        address = fill(path, values)
        response = await browser.request(
            method,
            address,
            data={"csrf_token": token, "reason": "x"} if method == "POST" else None,
        )
        assert response.status_code == 303, (method, address, response.status_code)
        assert response.headers["location"].startswith("/support/login"), (method, address)
    assert [entry for entry in await audit_entries(services) if entry.startswith("card.")] == []


async def audit_entries(services: Services) -> list[str]:
    """The actions recorded, but for issuing the cards the tests act on."""
    async with services.db.transaction(write=False) as connection:
        rows = await connection.execute(
            select(audit_log.c.action)
            .where(audit_log.c.action.not_in(("card.issue", "card.activate")))
            .order_by(audit_log.c.id)
        )
        return [row.action for row in rows]
