"""Who may call each support and report route (SPEC §6 "Support"): a matrix of every such
route × every kind of caller. A route added under /v1/support or /v1/reports without a
row here fails `test_every_support_route_has_a_row`.

Each caller asks with real objects (a card, a customer, an adjustment waiting for
approval, a gift), so a request let through reaches the use case: "let in" means any
answer but 401 and 403 (a 404, 409 or 422 from the use case included) — never a 5xx.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import select

from giftcard import access, ids
from giftcard.api.app import create_app
from giftcard.customers import Role, create_api_key
from giftcard.db.tables import audit_log
from giftcard.services import Services
from tests.conftest import api_key, issue, sign_up, staff_member
from tests.web import console_log_in, csrf, web_sign_up


class Caller(enum.StrEnum):
    ANONYMOUS = "anonymous"
    SHOPPER = "shopper"
    MERCHANT_KEY = "merchant key"
    SUPPORT_KEY = "support key"
    ADMIN_KEY = "admin key"
    SUPPORT_STAFF = "support staff"
    ADMIN_STAFF = "admin staff"
    REVOKED_KEY = "revoked key"
    DISABLED_STAFF = "disabled staff"


LET_IN = "let in"
# Support and admin, as keys and as staff; everyone else is turned away.
SUPPORT: dict[Caller, int | str] = {
    Caller.ANONYMOUS: 401,
    Caller.SHOPPER: 403,
    Caller.MERCHANT_KEY: 403,
    Caller.SUPPORT_KEY: LET_IN,
    Caller.ADMIN_KEY: LET_IN,
    Caller.SUPPORT_STAFF: LET_IN,
    Caller.ADMIN_STAFF: LET_IN,
    Caller.REVOKED_KEY: 401,
    Caller.DISABLED_STAFF: 401,
}
# Approving or rejecting an adjustment needs a person: a staff member's session.
STAFF_ONLY: dict[Caller, int | str] = {
    **SUPPORT,
    Caller.SUPPORT_KEY: 403,
    Caller.ADMIN_KEY: 403,
}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expected: dict[Caller, int | str]
    # The body sent, with {card}, {customer}, ... filled in from the world.
    body: dict[str, Any] | None = None


ROWS = [
    Row("POST", "/v1/support/lookups", SUPPORT, {"serial": "{serial}"}),
    Row("POST", "/v1/support/cards/{card}/freeze", SUPPORT, {"reason": "matrix"}),
    Row("POST", "/v1/support/cards/{card}/unfreeze", SUPPORT, {"reason": "matrix"}),
    Row("POST", "/v1/support/cards/{card}/cancel", SUPPORT, {"reason": "matrix"}),
    Row("POST", "/v1/support/cards/{card}/replace", SUPPORT, {"reason": "matrix"}),
    Row("GET", "/v1/support/customers?email={email}", SUPPORT),
    Row("GET", "/v1/support/customers/{customer}", SUPPORT),
    Row("GET", "/v1/support/customers/{customer}/transactions", SUPPORT),
    Row(
        "POST",
        "/v1/support/customers/{customer}/adjustments",
        SUPPORT,
        {"amount": 100, "reason": "goodwill", "note": "matrix"},
    ),
    Row("GET", "/v1/support/adjustments", SUPPORT),
    Row("GET", "/v1/support/adjustments/{adjustment}", SUPPORT),
    Row("POST", "/v1/support/adjustments/{adjustment}/approve", STAFF_ONLY, {}),
    Row("POST", "/v1/support/adjustments/{adjustment}/reject", STAFF_ONLY, {}),
    Row(
        "POST",
        "/v1/support/gifts/{gift}/recipient",
        SUPPORT,
        {"recipient_email": "matrix@example.com"},
    ),
    Row("GET", "/v1/support/audit-log", SUPPORT),
    Row("GET", "/v1/support/audit-log/export", SUPPORT),
    Row("GET", "/v1/reports/liability", SUPPORT),
]

SUPPORT_PREFIXES = ("/v1/support", "/v1/reports")


def route_key(method: str, path: str) -> tuple[str, str]:
    """A row's path as the router spells it: `{card}` → `{card_id}` and so on."""
    template = path.split("?")[0]
    for name in ("card", "customer", "adjustment", "gift"):
        template = template.replace("{" + name + "}", "{" + name + "_id}")
    return method, template


def test_every_support_route_has_a_row() -> None:
    app = create_app()  # not started: only its routes are read
    routes = {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        if str(route.path).startswith(SUPPORT_PREFIXES)
        for method in route.methods or ()
    }
    rows = {route_key(row.method, row.path) for row in ROWS}
    assert routes - rows == set(), "support routes without a row in the access matrix"
    assert rows - routes == set(), "rows for routes that do not exist"


@dataclass
class World:
    callers: dict[Caller, dict[str, str]]
    values: dict[str, str]


async def make_world(client: httpx.AsyncClient, services: Services) -> World:
    admin = await api_key(services, "admin")
    shopper = await sign_up(client)
    revoked_id, revoked = await create_api_key(
        services.db, role=Role.SUPPORT, name="revoked", clock=services.clock
    )
    await access.revoke_api_key(services.db, revoked_id, clock=services.clock)
    disabled = await staff_member(client, services, "support")
    await access.disable_staff(services.db, disabled.email, clock=services.clock)
    support_staff = await staff_member(client, services, "support")
    callers = {
        Caller.ANONYMOUS: {},
        Caller.SHOPPER: shopper.auth,
        Caller.MERCHANT_KEY: await api_key(services, "merchant"),
        Caller.SUPPORT_KEY: await api_key(services, "support"),
        Caller.ADMIN_KEY: admin,
        Caller.SUPPORT_STAFF: support_staff.auth,
        Caller.ADMIN_STAFF: (await staff_member(client, services, "admin")).auth,
        Caller.REVOKED_KEY: {"Authorization": f"Bearer {revoked}"},
        Caller.DISABLED_STAFF: disabled.auth,
    }
    [card] = await issue(client, admin)
    # An adjustment above the approval threshold, made by a third staff member, waits for
    # approval: anyone let in may approve or reject it (the first to act wins).
    creator = await staff_member(client, services, "support")
    pending = await client.post(
        f"/v1/support/customers/{shopper.id}/adjustments",
        json={"amount": 50000, "reason": "goodwill", "note": "matrix, waits for approval"},
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
            "sender_name": "Matrix",
            "deliver_at": (services.clock.now() + timedelta(days=30)).isoformat(),
        },
        headers=admin,
    )
    assert gift.status_code == 201, gift.text
    values = {
        "card": card["id"],
        "serial": card["serial"],
        "customer": shopper.id,
        "email": shopper.email,
        "adjustment": pending.json()["id"],
        "gift": gift.json()["id"],
    }
    assert ids.parse_id(ids.CARD, values["card"])
    return World(callers, values)


def fill(template: Any, values: dict[str, str]) -> Any:
    if isinstance(template, str):
        for name, value in values.items():
            template = template.replace("{" + name + "}", value)
        return template
    if isinstance(template, dict):
        return {key: fill(value, values) for key, value in template.items()}
    return template


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.method} {row.path}")
async def test_each_caller_gets_what_the_matrix_says(
    client: httpx.AsyncClient, services: Services, row: Row
) -> None:
    world = await make_world(client, services)
    assert set(row.expected) == set(Caller), "a row names every kind of caller"
    path = fill(row.path, world.values)
    outcomes: dict[Caller, int] = {}
    for caller, headers in world.callers.items():
        response = await client.request(
            row.method,
            path,
            json=fill(row.body, world.values) if row.method == "POST" else None,
            headers=headers,
        )
        assert response.status_code < 500, (caller, response.text)
        outcomes[caller] = response.status_code
    seen = {
        caller: (LET_IN if status not in (401, 403) else status)
        for caller, status in outcomes.items()
    }
    assert seen == row.expected, outcomes


# --- the console's pages --------------------------------------------------------------

# Every console address but logging in: a visitor, a shopper (whose session cookie the
# console ignores) and a disabled staff member are sent to the console's log-in page, on
# GET and on POST alike (a POST with a valid CSRF token for the visitor's cookie).
CONSOLE_PAGES = [
    ("GET", "/support"),
    ("POST", "/support/logout"),
    ("POST", "/support/lookup"),
    ("GET", "/support/cards/{card}"),
    ("POST", "/support/cards/{card}/replace"),
    ("POST", "/support/cards/{card}/freeze"),
    ("GET", "/support/customers"),
    ("GET", "/support/customers/{customer}"),
    ("POST", "/support/customers/{customer}/adjustments"),
    ("POST", "/support/gifts/{gift}/resend"),
    ("POST", "/support/gifts/{gift}/recipient"),
    ("GET", "/support/approvals"),
    ("POST", "/support/approvals/{adjustment}/approve"),
    ("GET", "/support/audit-log"),
    ("GET", "/support/audit-log/export"),
    ("GET", "/support/report"),
]
CONSOLE_OPEN = {("GET", "/support/login"), ("POST", "/support/login")}


def console_route_key(method: str, path: str) -> tuple[str, str]:
    method, template = route_key(method, path)
    template = template.replace("/freeze", "/{change}").replace("/approve", "/{decision}")
    return method, template


def test_every_console_page_has_a_row() -> None:
    app = create_app()
    routes = {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        if str(route.path).startswith("/support")
        for method in route.methods or ()
    }
    rows = {console_route_key(method, path) for method, path in CONSOLE_PAGES} | CONSOLE_OPEN
    assert routes == rows


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
    world = await make_world(client, services)
    if who == "shopper":
        await web_sign_up(browser)
    elif who == "disabled staff":
        email = await console_log_in(browser, services)
        await access.disable_staff(services.db, email, clock=services.clock)
    token = await csrf(browser, "/support/login")
    for method, path in CONSOLE_PAGES:
        address = fill(path, world.values)
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
