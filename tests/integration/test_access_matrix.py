"""Who may use each route and each page (SPEC §6, §7): every JSON route and every HTML
page of the app, the demo store's included, × every kind of caller → what they get.
A route or page added without a row here fails `test_every_route_and_page_has_a_row`.

The callers hold real credentials in one world built once per database: a shopper whose
data each row names (their gift, their payment, their store order) and another shopper,
API keys of each role, staff members of each role logged in, and credentials that must
no longer work — an expired session, a logged-out session, a revoked key, a disabled
staff member, each of a kind that would be let in if it still worked. Each caller sends
its secret as `Authorization: Bearer` to the API; to the pages, a session goes in both
session cookies, the shopper's and the console's (a shopper's session must not open the
console, nor a staff member's a shopper's pages, whichever cookie holds it), and a key
stays a bearer header. Every form carries a valid CSRF token for the caller's cookies,
so that a page turns a caller away for who they are, never for a stale form.

Requests let through reach the use case with real objects, and their answers are read
loosely: "let in" is any answer but a refusal of the caller (a 404, 409 or 422 from the
use case included) — never a 5xx. The refusals are exact:

- JSON: 401 `unauthorized`, 403 `forbidden`, and 404 `not_found` where the thing asked
  for is another shopper's (the answer does not say it exists);
- pages: a redirect to the shopper's log-in page or to the console's, a 404 page, or a
  redirect whose message says nothing was done (another shopper's gift).
"""

from __future__ import annotations

import base64
import enum
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import select

from giftcard import access, customers, gifts
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.customers import Role, create_api_key
from giftcard.db.tables import outbox_messages
from giftcard.demo.store import CATALOG
from giftcard.mail.messages import OutboxMessage, handler_for
from giftcard.services import Services
from giftcard.web import security
from tests.conftest import TEST_SECRET_KEY, api_key, issue, sign_up, staff_member
from tests.web import PASSWORD, STAFF_PASSWORD, csrf_of, hidden_value, web_sign_up

# The abuse limits are raised: every caller tries to sign up, log in and redeem, and a
# lock-out would answer all of them alike and hide who is let in.
LIMIT_GENEROUS = "100000/hour"


class Caller(enum.StrEnum):
    ANONYMOUS = "anonymous"
    # Another shopper asks first: were they let in by mistake, they would find the
    # shopper's gift still there to resend.
    OTHER_SHOPPER = "another shopper"
    SHOPPER = "shopper"  # the shopper whose gift, payment and order the rows name
    MERCHANT_KEY = "merchant key"
    SUPPORT_KEY = "support key"
    ADMIN_KEY = "admin key"
    SUPPORT_STAFF = "support staff"
    ADMIN_STAFF = "admin staff"
    EXPIRED_SESSION = "expired session"  # the shopper's, past its time
    LOGGED_OUT_SESSION = "logged-out session"  # the shopper's, logged out
    EXPIRED_STAFF = "expired staff session"  # an admin's, past its time
    LOGGED_OUT_STAFF = "logged-out staff session"  # an admin's, logged out
    REVOKED_KEY = "revoked key"  # an admin key
    DISABLED_STAFF = "disabled staff"  # an admin


LET_IN = "let in"
# JSON refusals, by status and problem code.
UNAUTHORIZED = "401"
FORBIDDEN = "403"
NOT_FOUND = "404"
# Page refusals.
LOG_IN = "to /login"
STAFF_LOG_IN = "to /support/login"
NOT_DONE = "nothing done"

DEAD = (
    Caller.EXPIRED_SESSION,
    Caller.LOGGED_OUT_SESSION,
    Caller.EXPIRED_STAFF,
    Caller.LOGGED_OUT_STAFF,
    Caller.REVOKED_KEY,
    Caller.DISABLED_STAFF,
)
KEYS = (Caller.MERCHANT_KEY, Caller.SUPPORT_KEY, Caller.ADMIN_KEY)
STAFF = (Caller.SUPPORT_STAFF, Caller.ADMIN_STAFF)
SHOPPERS = (Caller.SHOPPER, Caller.OTHER_SHOPPER)
Expected = dict[Caller, str]


def table(default: str, **overrides: str) -> Expected:
    """An expectation for every caller: `default`, but for those named (by member name)."""
    expected = dict.fromkeys(Caller, default)
    for name, outcome in overrides.items():
        expected[Caller[name.upper()]] = outcome
    return expected


def _with(base: Expected, callers: tuple[Caller, ...], outcome: str) -> Expected:
    return {**base, **dict.fromkeys(callers, outcome)}


# --- the JSON API -----------------------------------------------------------------------

PUBLIC = table(LET_IN)
# Anyone with a credential that works; a dead one is 401.
ANY_CALLER = _with(table(LET_IN, anonymous=UNAUTHORIZED), DEAD, UNAUTHORIZED)
# A session, a shopper's or a staff member's: an API key is not one.
SESSION_ONLY = _with(ANY_CALLER, KEYS, FORBIDDEN)
# A shopper's own session only: staff and keys are someone else.
SHOPPER_ONLY = _with(_with(ANY_CALLER, KEYS, FORBIDDEN), STAFF, FORBIDDEN)
# The store's back end: merchant and admin keys, and admin staff.
MERCHANT = _with(ANY_CALLER, (Caller.SUPPORT_KEY, Caller.SUPPORT_STAFF, *SHOPPERS), FORBIDDEN)
# Support and admin, as keys and as staff.
SUPPORT = _with(ANY_CALLER, (Caller.MERCHANT_KEY, *SHOPPERS), FORBIDDEN)
# Approving or rejecting an adjustment needs a person: a staff member's session.
STAFF_ONLY = _with(SUPPORT, (Caller.SUPPORT_KEY, Caller.ADMIN_KEY), FORBIDDEN)
# A gift: anyone who sees every gift, and its buyer; another shopper is told it is not
# there.
GIFT_VIEW = {**ANY_CALLER, Caller.OTHER_SHOPPER: NOT_FOUND}
# Resending a gift: support, admin and its buyer, not the store's merchant key.
GIFT_RESEND = {**GIFT_VIEW, Caller.MERCHANT_KEY: FORBIDDEN}

# --- the pages --------------------------------------------------------------------------

PAGE_PUBLIC = table(LET_IN)
# A shopper's pages: whoever is not a logged-in shopper is sent to log in (a staff
# member's session and an API key are not a shopper's).
PAGE_SHOPPER = table(LOG_IN, shopper=LET_IN, other_shopper=LET_IN)
# Another shopper's order or gift is a page that does not exist.
PAGE_SHOPPERS_OWN = {**PAGE_SHOPPER, Caller.OTHER_SHOPPER: NOT_FOUND}
# The console: a live staff session only.
PAGE_CONSOLE = table(STAFF_LOG_IN, support_staff=LET_IN, admin_staff=LET_IN)


@dataclass(frozen=True)
class Row:
    method: str
    # The address, with {card}, {customer}, ... filled in from the world.
    path: str
    expected: Expected
    # A JSON body, or a page's form (its CSRF token is added).
    body: dict[str, Any] | None = None
    # The row ends the caller's session: each live session gets a session of its own.
    ends_session: bool = False
    # The page turns a caller away with a redirect whose message is an error, which is
    # then told apart from letting them in (elsewhere it may be the use case's answer to
    # the row's form, as for a checkout with an empty cart).
    refuses_in_a_message: bool = False

    @property
    def is_page(self) -> bool:
        return not self.path.startswith(("/v1/", "/healthz", "/readyz", "/metrics", "/problems"))

    @property
    def is_console(self) -> bool:
        return self.path == "/support" or self.path.startswith("/support/")


REASON = {"reason": "matrix"}
WRONG_PASSWORD = "not the password 1"

API_ROWS = [
    # Signing up, logging in and out, password resets: open to all (SPEC §6 Customers).
    Row(
        "POST",
        "/v1/customers",
        PUBLIC,
        {"email": "{new_email}", "password": PASSWORD, "region": "US"},
    ),
    Row("POST", "/v1/sessions", PUBLIC, {"email": "{email}", "password": WRONG_PASSWORD}),
    Row("DELETE", "/v1/sessions/current", SESSION_ONLY, ends_session=True),
    Row("POST", "/v1/password-resets", PUBLIC, {"email": "nobody@example.com"}),
    Row(
        "POST",
        "/v1/password-resets/confirm",
        PUBLIC,
        {"token": "not-a-reset-token", "password": "a new password 1"},
    ),
    # The shopper's own account: /v1/me is always the caller's own.
    Row("GET", "/v1/me", SHOPPER_ONLY),
    Row("PATCH", "/v1/me", SHOPPER_ONLY, {"refund_preference": "gift_card_balance"}),
    Row(
        "POST",
        "/v1/me/password",
        SHOPPER_ONLY,
        {"current_password": WRONG_PASSWORD, "new_password": "a new password 1"},
    ),
    Row(
        "POST",
        "/v1/me/email",
        SHOPPER_ONLY,
        {"email": "{new_email}", "current_password": WRONG_PASSWORD},
    ),
    Row("POST", "/v1/me/redemptions", SHOPPER_ONLY, {"code": "{code}"}),
    Row("GET", "/v1/me/balance", SHOPPER_ONLY),
    Row("GET", "/v1/me/transactions", SHOPPER_ONLY),
    Row("GET", "/v1/me/gifts", SHOPPER_ONLY),
    # Cards and payments: the store's back end.
    Row("POST", "/v1/cards", MERCHANT, {"amount": 500, "region": "US", "kind": "digital"}),
    Row("POST", "/v1/cards/activate", MERCHANT, {"serial": "{physical_serial}"}),
    Row("GET", "/v1/cards/{card}", MERCHANT),
    Row(
        "POST",
        "/v1/payments",
        MERCHANT,
        {
            "customer_id": "{customer}",
            "order_id": "matrix-order",
            "amount": 1000,
            "currency": "USD",
            "use_balance": "none",
        },
    ),
    Row("POST", "/v1/payments/{payment}/capture", MERCHANT, {}),
    Row("POST", "/v1/payments/{payment}/void", MERCHANT, {}),
    Row("POST", "/v1/payments/{payment}/refunds", MERCHANT, {"amount": 100}),
    Row("GET", "/v1/payments/{payment}", MERCHANT),
    Row("GET", "/v1/payments/{payment}/refunds", MERCHANT),
    # Gifts.
    Row(
        "POST",
        "/v1/gifts",
        MERCHANT,
        {
            "amount": 2500,
            "region": "US",
            "recipient_email": "friend@example.com",
            "sender_name": "Matrix",
            "deliver_at": "{later}",
        },
    ),
    Row("GET", "/v1/gifts/{gift}", GIFT_VIEW),
    Row("POST", "/v1/gifts/{gift}/resend", GIFT_RESEND, {}),
    # Support and reports.
    Row("POST", "/v1/support/lookups", SUPPORT, {"serial": "{serial}"}),
    Row("POST", "/v1/support/cards/{card}/freeze", SUPPORT, REASON),
    Row("POST", "/v1/support/cards/{card}/unfreeze", SUPPORT, REASON),
    Row("POST", "/v1/support/cards/{card}/cancel", SUPPORT, REASON),
    Row("POST", "/v1/support/cards/{card}/replace", SUPPORT, REASON),
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
    # A key may only withdraw an adjustment it made itself.
    Row("POST", "/v1/support/adjustments/{other_adjustment}/reject", STAFF_ONLY, {}),
    Row(
        "POST",
        "/v1/support/gifts/{gift}/recipient",
        SUPPORT,
        {"recipient_email": "matrix@example.com"},
    ),
    Row("GET", "/v1/support/audit-log", SUPPORT),
    Row("GET", "/v1/support/audit-log/export", SUPPORT),
    Row("GET", "/v1/reports/liability", SUPPORT),
    # The service: probes, metrics and the problem types are for anyone.
    Row("GET", "/healthz", PUBLIC),
    Row("GET", "/readyz", PUBLIC),
    Row("GET", "/metrics", PUBLIC),
    Row("GET", "/problems/forbidden", PUBLIC),
    Row("GET", "/openapi.json", PUBLIC),
    Row("GET", "/docs", PUBLIC),
    Row("GET", "/redoc", PUBLIC),
]

PAGE_ROWS = [
    Row("GET", "/", PAGE_PUBLIC),
    Row("GET", "/signup", PAGE_PUBLIC),
    # A password too short: the form comes back, nobody is signed up.
    Row("POST", "/signup", PAGE_PUBLIC, {"email": "{new_email}", "password": "x", "region": "US"}),
    Row("GET", "/login", PAGE_PUBLIC),
    Row("POST", "/login", PAGE_PUBLIC, {"email": "{email}", "password": WRONG_PASSWORD}),
    Row("POST", "/logout", PAGE_PUBLIC, ends_session=True),
    Row("GET", "/redeem?code={code}", PAGE_PUBLIC),
    Row("GET", "/forgot-password", PAGE_PUBLIC),
    Row("POST", "/forgot-password", PAGE_PUBLIC, {"email": "nobody@example.com"}),
    Row("GET", "/forgot-password/sent", PAGE_PUBLIC),
    Row("GET", "/password-reset?token=not-a-reset-token", PAGE_PUBLIC),
    Row("POST", "/password-reset", PAGE_PUBLIC, {"password": "a new password 1"}),
    Row("GET", "/account/gift-cards", PAGE_SHOPPER),
    Row("POST", "/account/gift-cards/redeem", PAGE_SHOPPER, {"code": "{code}"}),
    Row(
        "POST",
        "/account/gifts/{sent_gift}/resend",
        {**PAGE_SHOPPER, Caller.OTHER_SHOPPER: NOT_DONE},
        {},
        refuses_in_a_message=True,
    ),
    Row(
        "POST",
        "/account/refund-preference",
        PAGE_SHOPPER,
        {"refund_preference": "gift_card_balance"},
    ),
    Row("GET", "/account/settings", PAGE_SHOPPER),
    Row(
        "POST",
        "/account/email",
        PAGE_SHOPPER,
        {"email": "{new_email}", "current_password": WRONG_PASSWORD},
    ),
    Row(
        "POST",
        "/account/password",
        PAGE_SHOPPER,
        {"current_password": WRONG_PASSWORD, "new_password": "a new password 1"},
    ),
    # The support console.
    Row("GET", "/support", PAGE_CONSOLE),
    Row("GET", "/support/login", PAGE_PUBLIC),
    Row("POST", "/support/login", PAGE_PUBLIC, {"email": "{email}", "password": WRONG_PASSWORD}),
    # Logging out leads everyone to the console's log-in page, having ended the session
    # of whoever had one.
    Row("POST", "/support/logout", table(STAFF_LOG_IN), ends_session=True),
    Row("POST", "/support/lookup", PAGE_CONSOLE, {"query": "{serial}"}),
    Row("GET", "/support/cards/{card}", PAGE_CONSOLE),
    Row(
        "POST",
        "/support/cards/{card}/replace",
        PAGE_CONSOLE,
        {"replace_reason": "matrix", "replace_note": "matrix"},
    ),
    Row(
        "POST",
        "/support/cards/{card}/freeze",
        PAGE_CONSOLE,
        {"freeze_reason": "matrix", "freeze_note": "matrix"},
    ),
    Row("GET", "/support/customers", PAGE_CONSOLE),
    Row("GET", "/support/customers/{customer}", PAGE_CONSOLE),
    Row(
        "POST",
        "/support/customers/{customer}/adjustments",
        PAGE_CONSOLE,
        {"amount": "1.00", "reason": "goodwill", "note": "matrix"},
    ),
    Row("POST", "/support/gifts/{gift}/resend", PAGE_CONSOLE, {}),
    Row(
        "POST",
        "/support/gifts/{gift}/recipient",
        PAGE_CONSOLE,
        {"recipient_email": "matrix@example.com"},
    ),
    Row("GET", "/support/approvals", PAGE_CONSOLE),
    Row("POST", "/support/approvals/{adjustment}/approve", PAGE_CONSOLE, {}),
    Row("GET", "/support/audit-log", PAGE_CONSOLE),
    Row("GET", "/support/audit-log/export", PAGE_CONSOLE),
    Row("GET", "/support/report", PAGE_CONSOLE),
    # The demo store (GIFTCARD_DEMO_STORE=true): browsing is open, buying needs a shopper.
    Row("GET", "/store", PAGE_PUBLIC),
    Row("POST", "/store/cart", PAGE_PUBLIC, {"product": "{product}"}),
    Row("GET", "/store/cart", PAGE_PUBLIC),
    Row("POST", "/store/cart/remove", PAGE_PUBLIC, {"product": "{product}"}),
    Row("GET", "/store/checkout", PAGE_SHOPPER),
    Row("POST", "/store/checkout", PAGE_SHOPPER, {"use_balance": "none"}),
    Row("GET", "/store/orders", PAGE_SHOPPER),
    Row("GET", "/store/orders/{order}", PAGE_SHOPPERS_OWN),
    Row("GET", "/store/orders/{order}/refund", PAGE_SHOPPERS_OWN),
    Row("POST", "/store/orders/{order}/refund", PAGE_SHOPPERS_OWN, {"amount": "1.00"}),
    Row("GET", "/store/gift", PAGE_SHOPPER),
    # No amount: the form comes back with the error beside its field, nothing is bought.
    Row("POST", "/store/gift", PAGE_SHOPPER, {"recipient_email": "friend@example.com"}),
    Row("GET", "/store/gifts/{gift}", PAGE_SHOPPERS_OWN),
]

ROWS = API_ROWS + PAGE_ROWS

# Parts of a route template a row spells with a value of the world.
_ROUTE_PARAMETERS = {
    "{card}": "{card_id}",
    "{customer}": "{customer_id}",
    "{adjustment}": "{adjustment_id}",
    "{other_adjustment}": "{adjustment_id}",
    "{gift}": "{gift_id}",
    "{sent_gift}": "{gift_id}",
    "{payment}": "{payment_id}",
    "{order}": "{order_id}",
}
# Whole addresses a row spells with one value of a route's parameter.
_ROUTE_VALUES = {
    "/problems/forbidden": "/problems/{code}",
    "/support/cards/{card_id}/freeze": "/support/cards/{card_id}/{change}",
    "/support/approvals/{adjustment_id}/approve": "/support/approvals/{adjustment_id}/{decision}",
}


def route_key(row: Row) -> tuple[str, str]:
    """A row's address as the router spells it: `{card}` → `{card_id}` and so on."""
    template = row.path.split("?")[0]
    for spelled, routed in _ROUTE_PARAMETERS.items():
        template = template.replace(spelled, routed)
    return row.method, _ROUTE_VALUES.get(template, template)


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, template) of every route that answers requests (mounted static files
    aside), HEAD aside."""
    return {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }


def test_every_route_and_page_has_a_row() -> None:
    """Every route of an app with the demo store on has exactly one row, and every row
    names a route; without the demo store, its rows are the only routes missing."""
    demo = app_routes(
        create_app(Settings(database_url="sqlite://", secret_key=TEST_SECRET_KEY, demo_store=True))
    )
    plain = app_routes(create_app(Settings(database_url="sqlite://", secret_key=TEST_SECRET_KEY)))
    keys = [route_key(row) for row in ROWS]

    assert len(keys) == len(set(keys)), "a route with two rows"
    assert demo - set(keys) == set(), "routes without a row in the access matrix"
    assert set(keys) - demo == set(), "rows for routes that do not exist"
    assert {path for _, path in demo - plain} == {
        path for _, path in map(route_key, ROWS) if path.startswith("/store")
    }


# --- the world --------------------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(
        settings,
        demo_store=True,
        limit_redeem_failures_account=LIMIT_GENEROUS,
        limit_redeem_failures_address=LIMIT_GENEROUS,
        limit_redeem_misses_service=LIMIT_GENEROUS,
        limit_signups_address=LIMIT_GENEROUS,
        limit_login_failures_account=LIMIT_GENEROUS,
        limit_login_failures_address=LIMIT_GENEROUS,
    )


@dataclass
class Identity:
    """What a caller sends: a bearer secret to the API; cookies and a CSRF token for each
    side (shopper pages, console) to the pages."""

    secret: str | None = None
    # A session's secret goes to the pages in cookies, a key's as a bearer header.
    session: bool = False
    csrf: dict[bool, str] = field(default_factory=dict)  # is_console → token


@dataclass
class World:
    services: Services
    client: httpx.AsyncClient
    csrf_seed: str
    identities: dict[Caller, Identity]
    # The email and password each live session was opened with, to open another.
    logins: dict[Caller, tuple[str, str]]
    values: dict[str, str]
    emails: int = 0

    def fill(self, template: Any) -> Any:
        if isinstance(template, str):
            if "{new_email}" in template:
                self.emails += 1
                template = template.replace("{new_email}", f"matrix{self.emails}@example.com")
            for name, value in self.values.items():
                template = template.replace("{" + name + "}", value)
            return template
        if isinstance(template, dict):
            return {key: self.fill(value) for key, value in template.items()}
        return template

    def cookies(self, identity: Identity) -> str:
        jar = {security.CSRF_COOKIE: self.csrf_seed}
        if identity.session and identity.secret:
            jar[security.SESSION_COOKIE] = jar[security.STAFF_COOKIE] = identity.secret
        return "; ".join(f"{name}={value}" for name, value in jar.items())

    async def page(self, identity: Identity, method: str, path: str, **extra: Any) -> Any:
        """A page request with exactly this caller's cookies (none kept from before)."""
        self.client.cookies.clear()
        headers = {"Accept": "text/html", "Cookie": self.cookies(identity)}
        if identity.secret and not identity.session:
            headers["Authorization"] = f"Bearer {identity.secret}"
        return await self.client.request(method, path, headers=headers, **extra)

    async def with_csrf(self, identity: Identity) -> Identity:
        """The identity with the CSRF tokens its pages' forms carry, read from a page with
        a form on each side, as a browser would."""
        for console, path in ((False, "/login"), (True, "/support/login")):
            answer = await self.page(identity, "GET", path)
            while answer.status_code == 303:
                answer = await self.page(identity, "GET", answer.headers["location"])
            assert answer.status_code == 200, (path, answer.text)
            identity.csrf[console] = csrf_of(answer.text)
        return identity

    async def fresh(self, caller: Caller) -> Identity:
        """A new session for a live caller that has one, else the caller as it is."""
        identity = self.identities[caller]
        if caller not in self.logins:
            return identity
        email, password = self.logins[caller]
        session = await customers.log_in(
            self.services.db, email=email, password=password, ttl_s=3600, clock=self.services.clock
        )
        return await self.with_csrf(Identity(session.token, session=True))


async def _session(services: Services, email: str, password: str, *, ttl_s: int = 3600) -> str:
    opened = await customers.log_in(
        services.db, email=email, password=password, ttl_s=ttl_s, clock=services.clock
    )
    return opened.token


async def make_world(client: httpx.AsyncClient, services: Services, clock: FrozenClock) -> World:
    admin = await api_key(services, "admin")
    # The shopper signs up on the pages and places an order in the demo store.
    browser = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services=services)),
        base_url="http://testserver",
    )
    async with browser:
        shopper_email = await web_sign_up(browser)
        await _place_order(browser)
        orders = await browser.get("/store/orders")
    shopper_token = await _session(services, shopper_email, PASSWORD)
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {shopper_token}"})
    assert me.status_code == 200, me.text
    order = _order_number(orders.text)
    other = await sign_up(client)
    support_staff = await staff_member(client, services, "support")
    admin_staff = await staff_member(client, services, "admin")
    dying_staff = [await staff_member(client, services, "admin") for _ in range(3)]

    values = await _objects(client, services, admin, me.json()["id"], shopper_email, order)

    # Credentials that must not work any more.
    revoked_id, revoked = await create_api_key(
        services.db, role=Role.ADMIN, name="revoked", clock=services.clock
    )
    await access.revoke_api_key(services.db, revoked_id, clock=services.clock)
    await access.disable_staff(services.db, dying_staff[0].email, clock=services.clock)
    expired_shopper = await _session(services, shopper_email, PASSWORD, ttl_s=60)
    expired_staff = await _session(services, dying_staff[1].email, STAFF_PASSWORD, ttl_s=60)
    # Past those sessions' time, and past the wait before a buyer may resend a gift.
    clock.advance(gifts.BUYER_RESEND_INTERVAL + timedelta(minutes=1))
    logged_out_shopper = await _session(services, shopper_email, PASSWORD)
    logged_out_staff = dying_staff[2].token
    for token in (logged_out_shopper, logged_out_staff):
        ended = await client.delete(
            "/v1/sessions/current", headers={"Authorization": f"Bearer {token}"}
        )
        assert ended.status_code == 204, ended.text

    identities = {
        Caller.ANONYMOUS: Identity(),
        Caller.SHOPPER: Identity(shopper_token, session=True),
        Caller.OTHER_SHOPPER: Identity(other.token, session=True),
        Caller.MERCHANT_KEY: Identity((await api_key(services, "merchant"))["Authorization"][7:]),
        Caller.SUPPORT_KEY: Identity((await api_key(services, "support"))["Authorization"][7:]),
        Caller.ADMIN_KEY: Identity(admin["Authorization"][7:]),
        Caller.SUPPORT_STAFF: Identity(support_staff.token, session=True),
        Caller.ADMIN_STAFF: Identity(admin_staff.token, session=True),
        Caller.EXPIRED_SESSION: Identity(expired_shopper, session=True),
        Caller.LOGGED_OUT_SESSION: Identity(logged_out_shopper, session=True),
        Caller.EXPIRED_STAFF: Identity(expired_staff, session=True),
        Caller.LOGGED_OUT_STAFF: Identity(logged_out_staff, session=True),
        Caller.REVOKED_KEY: Identity(revoked),
        Caller.DISABLED_STAFF: Identity(dying_staff[0].token, session=True),
    }
    logins = {
        Caller.SHOPPER: (shopper_email, PASSWORD),
        Caller.OTHER_SHOPPER: (other.email, PASSWORD),
        Caller.SUPPORT_STAFF: (support_staff.email, STAFF_PASSWORD),
        Caller.ADMIN_STAFF: (admin_staff.email, STAFF_PASSWORD),
    }
    world = World(services, client, secrets.token_urlsafe(32), identities, logins, values)
    for identity in identities.values():
        await world.with_csrf(identity)
    return world


async def _place_order(browser: httpx.AsyncClient) -> None:
    """Put a product in the cart and check out, the test card paying it all."""
    product = CATALOG[0].id
    page = await browser.get("/store")
    added = await browser.post(
        "/store/cart", data={"product": product, "csrf_token": csrf_of(page.text)}
    )
    assert added.status_code == 303, added.text
    checkout = await browser.get("/store/checkout")
    assert checkout.status_code == 200, checkout.text
    placed = await browser.post(
        "/store/checkout",
        data={
            "csrf_token": csrf_of(checkout.text),
            "order_id": hidden_value(checkout.text, "order_id"),
            "total": hidden_value(checkout.text, "total"),
            "use_balance": "none",
            "use_balance_amount": "",
        },
    )
    assert placed.status_code == 303, placed.text
    assert placed.headers["location"].startswith("/store/orders/"), placed.headers


def _order_number(page: str) -> str:
    found = re.search(r'href="/store/orders/(GC-[0-9A-Z]{4}-[0-9A-Z]{2})"', page)
    assert found, "no order on the orders page"
    return found.group(1)


async def _objects(
    client: httpx.AsyncClient,
    services: Services,
    admin: dict[str, str],
    customer_id: str,
    email: str,
    order: str,
) -> dict[str, str]:
    """The things the rows act on: the shopper's gift and payment, a card, a physical
    card not sold yet, and an adjustment waiting for approval."""
    [card] = await issue(client, admin)
    [physical] = await issue(client, admin, kind="physical")
    later = (services.clock.now() + timedelta(days=30)).isoformat()
    bought = []
    for deliver_at in (later, None):
        gift = await client.post(
            "/v1/gifts",
            json={
                "amount": 2500,
                "region": "US",
                "recipient_email": "friend@example.com",
                "sender_name": "Matrix",
                "deliver_at": deliver_at,
                "purchaser_customer_id": customer_id,
            },
            headers=admin,
        )
        assert gift.status_code == 201, gift.text
        bought.append(gift.json()["id"])
    # Both emails went out: the gifts may be resent.
    async with services.db.transaction() as connection:
        for row in (await connection.execute(select(outbox_messages))).all():
            message = OutboxMessage.from_row(row)
            await handler_for(message.kind).sent(connection, message, services.clock.now())
    payment = await client.post(
        "/v1/payments",
        json={
            "customer_id": customer_id,
            "order_id": "matrix-1",
            "amount": 1000,
            "currency": "USD",
            "use_balance": "none",
            "capture": False,
        },
        headers=admin,
    )
    assert payment.status_code == 201, payment.text
    # An adjustment above the approval threshold, made by a third staff member, waits for
    # approval: anyone let in may approve or reject it (the first to act wins).
    creator = await staff_member(client, services, "support")
    pending = []
    for _ in range(2):
        made = await client.post(
            f"/v1/support/customers/{customer_id}/adjustments",
            json={"amount": 50000, "reason": "goodwill", "note": "matrix, waits for approval"},
            headers=creator.auth,
        )
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "pending_approval"
        pending.append(made.json()["id"])
    return {
        "card": card["id"],
        "serial": card["serial"],
        "physical_serial": physical["serial"],
        "customer": customer_id,
        "email": email,
        # One to approve, one to reject: who may decide is asked while each waits.
        "adjustment": pending[0],
        "other_adjustment": pending[1],
        "gift": bought[0],
        # Resent on a page by its buyer: the API's rows do not touch it.
        "sent_gift": bought[1],
        "payment": payment.json()["id"],
        "order": order,
        "product": CATALOG[0].id,
        "later": later,
        # Not a code: the use case refuses it, the door does not.
        "code": "NOT-A-CODE",
    }


# --- asking -----------------------------------------------------------------------------


def api_outcome(response: httpx.Response) -> str:
    assert response.status_code < 500, response.text
    code = None
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        code = response.json().get("code")
    refusals = {
        (401, "unauthorized"): UNAUTHORIZED,
        (403, "forbidden"): FORBIDDEN,
        (404, "not_found"): NOT_FOUND,
    }
    return refusals.get((response.status_code, code), LET_IN)


def flash_level(response: httpx.Response) -> str | None:
    """The level of the message a redirect leaves for the next page, if any."""
    signed = response.cookies.get(security.FLASH_COOKIE)
    if not signed:
        return None
    body = signed.partition(".")[0]
    message = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    level: str | None = message.get("level")
    return level


def page_outcome(response: httpx.Response, *, refuses_in_a_message: bool) -> str:
    assert response.status_code < 500, response.text
    if response.status_code == 404:
        return NOT_FOUND
    assert response.status_code != 403, "a form was refused: the matrix sends a valid one"
    if response.status_code == 303:
        where = urlsplit(response.headers["location"]).path
        if where == "/login":
            return LOG_IN
        if where == "/support/login":
            return STAFF_LOG_IN
        if refuses_in_a_message and flash_level(response) == "error":
            return NOT_DONE
    return LET_IN


async def ask(world: World, row: Row, caller: Caller) -> str:
    identity = await world.fresh(caller) if row.ends_session else world.identities[caller]
    path = world.fill(row.path)
    if not row.is_page:
        headers = {"Authorization": f"Bearer {identity.secret}"} if identity.secret else {}
        world.client.cookies.clear()
        response = await world.client.request(
            row.method,
            path,
            json=world.fill(row.body) if row.body is not None else None,
            headers=headers,
        )
        return api_outcome(response)
    form = None
    if row.method == "POST":
        form = {**world.fill(row.body or {}), "csrf_token": identity.csrf[row.is_console]}
    response = await world.page(identity, row.method, path, data=form)
    return page_outcome(response, refuses_in_a_message=row.refuses_in_a_message)


async def test_each_caller_gets_what_the_matrix_says(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given one world of callers and things, when each caller asks for every route and
    page, each gets the row's answer: the refusals exactly, anything else reaching the
    use case, and no server error."""
    world = await make_world(client, services, clock)
    mismatches = []
    # Rows that end sessions come last: a dead session let in by mistake would end
    # itself there, and so hide from the rows after.
    for row in sorted(ROWS, key=lambda row: row.ends_session):
        assert set(row.expected) == set(Caller), "a row names every kind of caller"
        seen = {caller: await ask(world, row, caller) for caller in Caller}
        wrong = {
            str(caller): f"{seen[caller]}, not {row.expected[caller]}"
            for caller in Caller
            if seen[caller] != row.expected[caller]
        }
        if wrong:
            mismatches.append((f"{row.method} {row.path}", wrong))
    assert mismatches == [], "\n".join(f"{route}: {wrong}" for route, wrong in mismatches)
