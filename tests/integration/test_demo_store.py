"""The demo store is a demo (SPEC §7): its test card is pretend money, so its pages exist
only when GIFTCARD_DEMO_STORE is on. Without the setting /store and everything below it is
an unknown address, no route for it is mounted or listed, no page links to it, and a
shopper has no way to turn pretend money into balance: value reaches a balance only
through a code issued with a merchant's key, or a payment a merchant's key refunds. And
`serve --demo`, which seeds at every start, reuses its API key and staff member."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select

from giftcard.api.app import create_app
from giftcard.db.tables import api_keys, payments, staff, store_orders
from giftcard.demo.seed import (
    DEMO_CARD_AMOUNTS,
    DEMO_SHOPPER_EMAIL,
    DEMO_SHOPPER_PASSWORD,
    DEMO_STAFF_EMAIL,
    demo_api_key,
    seed_database,
)
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import api_key, assert_problem, issue
from tests.web import PASSWORD, csrf, web_redeem, web_sign_up

ORDER_ID = "ord_" + "0" * 32
STORE_PAGES = (
    "/store",
    "/store/cart",
    "/store/checkout",
    "/store/orders",
    f"/store/orders/{ORDER_ID}",
)
STORE_FORMS = (
    "/store/cart",
    "/store/cart/remove",
    "/store/checkout",
    f"/store/orders/{ORDER_ID}/refund",
)
# Every address of the core that changes something, and who may use it. A new one must
# be added here, after asking whether it could put value into a balance.
CORE_WRITES = {
    ("POST", "/v1/customers"),  # anyone: sign up, an empty balance
    ("POST", "/v1/sessions"),  # anyone: log in
    ("DELETE", "/v1/sessions/current"),  # a session: log out
    ("PATCH", "/v1/me"),  # the customer: refund preference, name
    ("POST", "/v1/me/redemptions"),  # the customer: a code issued with a merchant's key
    ("POST", "/v1/cards"),  # merchant or admin
    ("POST", "/v1/cards/activate"),  # merchant or admin
    ("POST", "/v1/payments"),  # merchant or admin
    ("POST", "/v1/payments/{payment_id}/capture"),  # merchant or admin
    ("POST", "/v1/payments/{payment_id}/void"),  # merchant or admin
    ("POST", "/v1/payments/{payment_id}/refunds"),  # merchant or admin
    ("POST", "/v1/gifts"),  # merchant or admin
    ("POST", "/v1/gifts/{gift_id}/resend"),  # support, admin or the gift's buyer
    ("POST", "/v1/me/password"),  # the customer, with the current password
    ("POST", "/v1/me/email"),  # the customer, with the current password
    ("POST", "/v1/password-resets"),  # anyone: always 202, an email if there is an account
    ("POST", "/v1/password-resets/confirm"),  # the link's token: a new password
    ("POST", "/signup"),  # the sign-up page
    ("POST", "/login"),  # the log-in page
    ("POST", "/logout"),  # the log-out button
    ("POST", "/account/gift-cards/redeem"),  # the shopper: a code, as POST /v1/me/redemptions
    ("POST", "/account/refund-preference"),  # the shopper: as PATCH /v1/me
    ("POST", "/account/gifts/{gift_id}/resend"),  # the buyer: as POST /v1/gifts/{id}/resend
    ("POST", "/account/password"),  # the shopper: as POST /v1/me/password
    ("POST", "/account/email"),  # the shopper: as POST /v1/me/email
    ("POST", "/forgot-password"),  # anyone: as POST /v1/password-resets
    ("POST", "/password-reset"),  # the link's token: as POST /v1/password-resets/confirm
    # Support (support or admin keys and staff; look-ups are POSTs: they carry codes and
    # write their audit entry)
    ("POST", "/v1/support/lookups"),
    ("POST", "/v1/support/cards/{card_id}/freeze"),
    ("POST", "/v1/support/cards/{card_id}/unfreeze"),
    ("POST", "/v1/support/cards/{card_id}/cancel"),
    ("POST", "/v1/support/cards/{card_id}/replace"),
    ("POST", "/v1/support/customers/{customer_id}/adjustments"),
    ("POST", "/v1/support/adjustments/{adjustment_id}/approve"),  # staff, not the creator
    ("POST", "/v1/support/adjustments/{adjustment_id}/reject"),
    ("POST", "/v1/support/gifts/{gift_id}/recipient"),
    # The support console: as the support API, for logged-in staff
    ("POST", "/support/login"),
    ("POST", "/support/logout"),
    ("POST", "/support/lookup"),
    ("POST", "/support/cards/{card_id}/replace"),
    ("POST", "/support/cards/{card_id}/{change}"),  # freeze, unfreeze, cancel
    ("POST", "/support/customers/{customer_id}/adjustments"),
    ("POST", "/support/gifts/{gift_id}/resend"),
    ("POST", "/support/gifts/{gift_id}/recipient"),
    ("POST", "/support/approvals/{adjustment_id}/{decision}"),  # approve, reject
}


@pytest.fixture
async def demo_client(services: Services) -> Any:
    """A client of the same database's app with the demo store on."""
    demo = replace(services, settings=replace(services.settings, demo_store=True))
    transport = httpx.ASGITransport(app=create_app(services=demo), client=("203.0.113.8", 4712))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def route_paths(app: Any) -> set[str]:
    """The path of every route, included routers' too."""
    return {str(route.path) for route in iter_route_contexts(app.routes)}


def writes(app: Any) -> set[tuple[str, str]]:
    return {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        for method in route.methods or ()
        if method not in ("GET", "HEAD")
    }


async def count(services: Services, table: Any) -> int:
    async with services.db.transaction(write=False) as connection:
        return int((await connection.execute(select(func.count()).select_from(table))).scalar_one())


async def test_without_the_setting_the_store_is_not_mounted_or_listed(services: Services) -> None:
    """The app of a real deployment has no route under /store, none in /openapi.json, and
    changes nothing through any address but the core's own."""
    app = create_app(services=services)
    demo = create_app(
        services=replace(services, settings=replace(services.settings, demo_store=True))
    )

    assert "/account/gift-cards" in route_paths(app)
    assert not any(path.startswith("/store") for path in route_paths(app))
    assert not any(path.startswith("/store") for path in app.openapi()["paths"])
    assert writes(app) == CORE_WRITES
    assert {"/store", "/store/checkout", "/store/orders/{order_id}/refund"} <= route_paths(demo)
    assert writes(demo) - CORE_WRITES == {
        ("POST", path)
        for path in (
            "/store/cart",
            "/store/cart/remove",
            "/store/checkout",
            "/store/orders/{order_id}/refund",
            "/store/gift",
        )
    }


def test_the_core_does_not_import_the_demo() -> None:
    """Building and serving the app without the setting, and the command line, leave the
    demo package unloaded: only the demo's own switch brings it in."""
    program = (
        "import sys\n"
        "from giftcard import cli\n"
        "from giftcard.api.app import create_app\n"
        "from giftcard.config import Settings\n"
        "create_app(Settings(database_url='sqlite://', secret_key=b'k' * 40))\n"
        "assert not [m for m in sys.modules if m.startswith('giftcard.demo')], sys.modules\n"
        "create_app(Settings(database_url='sqlite://', secret_key=b'k' * 40, demo_store=True))\n"
        "assert 'giftcard.demo.pages' in sys.modules\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr


async def test_without_the_setting_every_store_address_is_not_found(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A logged-in shopper asking for any store page, as a browser or not, or sending any
    store form with a valid CSRF token, gets 404; nothing is paid or ordered."""
    await web_sign_up(client)
    token = await csrf(client, "/account/gift-cards")

    for path in STORE_PAGES:
        as_browser = await client.get(path, headers={"Accept": "text/html"})
        assert as_browser.status_code == 404, path
        assert "Page not found" in as_browser.text
        assert_problem(await client.get(path), 404, "not_found", why=path)
    for path in STORE_FORMS:
        sent = await client.post(
            path,
            data={"csrf_token": token, "product": "poster", "quantity": "1", "order_id": ORDER_ID},
            headers={"Accept": "text/html"},
        )
        assert sent.status_code == 404, path

    assert await count(services, payments) == 0
    assert await count(services, store_orders) == 0


async def test_pages_link_to_the_store_only_in_the_demo(
    client: httpx.AsyncClient, demo_client: httpx.AsyncClient
) -> None:
    """Home and Your Gift Cards link to /store in the demo, and nowhere else."""
    for http, linked in ((client, False), (demo_client, True)):
        home = await http.get("/")
        await web_sign_up(http)
        account = await http.get("/account/gift-cards")
        for page in (home, account):
            assert page.status_code == 200
            assert ('href="/store"' in page.text) is linked, (linked, page.url)
        assert (await http.get("/store")).status_code == (200 if linked else 404)


async def test_outside_the_demo_a_shopper_cannot_turn_pretend_money_into_balance(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The attack of the demo store, tried on a real deployment: a shopper who wants
    refunds on their balance has no store page to pay with a test card, and every API
    that moves money refuses their own session. A merchant's key is what it takes: a
    payment the store charged elsewhere and then refunded is the only way in, and it
    is the merchant's decision to give that money as store credit."""
    email = await web_sign_up(client)
    token = await csrf(client, "/account/gift-cards")
    preference = await client.post(
        "/account/refund-preference",
        data={"csrf_token": token, "refund_preference": "gift_card_balance"},
    )
    assert preference.status_code == 303
    session = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    own = {"Authorization": f"Bearer {session.json()['token']}"}
    me = (await client.get("/v1/me", headers=own)).json()
    merchant = await api_key(services, "merchant")

    checkout = await client.post(
        "/store/checkout", data={"csrf_token": token, "order_id": ORDER_ID, "use_balance": "none"}
    )
    assert checkout.status_code == 404
    order = {
        "customer_id": me["id"],
        "order_id": "order-1",
        "amount": 4800,
        "currency": "USD",
        "use_balance": "none",
        "capture": True,
    }
    assert_problem(await client.post("/v1/payments", json=order, headers=own), 403, "forbidden")
    paid = await client.post("/v1/payments", json=order, headers=merchant)
    assert paid.status_code == 201, paid.text
    refund_path = f"/v1/payments/{paid.json()['id']}/refunds"
    refused = await client.post(refund_path, json={"amount": 4800}, headers=own)
    assert_problem(refused, 403, "forbidden")
    issued = await client.post(
        "/v1/cards", json={"amount": 4800, "region": "US", "kind": "digital"}, headers=own
    )
    assert_problem(issued, 403, "forbidden")
    assert (await client.get("/v1/me/balance", headers=own)).json()["available"] == 0

    refunded = await client.post(refund_path, json={"amount": 4800}, headers=merchant)
    assert refunded.status_code == 201, refunded.text
    [card] = await issue(client, merchant, amount=500)
    assert (await web_redeem(client, card["code"])).status_code == 303
    assert (await client.get("/v1/me/balance", headers=own)).json()["available"] == 5300
    assert (await verify(services.db)).problems == []


async def test_the_demo_started_twice_reuses_its_api_key_and_staff_member(
    client: httpx.AsyncClient, services: Services
) -> None:
    """`serve --demo` seeds at every start: the second start makes no second API key or
    staff member. The API key, derived from the secret key, is printed again and works;
    the staff member's random password is printed only when it is created, and logs in;
    the shopper keeps the documented password; only the codes are new."""
    secret_key = services.settings.secret_key

    first = await seed_database(services.db, secret_key, clock=services.clock)
    second = await seed_database(services.db, secret_key, clock=services.clock)

    assert await count(services, api_keys) == 1
    assert await count(services, staff) == 1
    assert first.api_key == second.api_key == demo_api_key(secret_key)
    assert demo_api_key(secret_key[::-1]) != first.api_key
    assert (first.api_key_created, second.api_key_created) == (True, False)
    assert f"  API key   {first.api_key} (admin)" in first.lines
    assert f"  API key   {first.api_key} (admin)" in second.lines
    assert first.staff_password is not None
    assert len(first.staff_password) >= 16
    assert second.staff_password is None
    assert first.staff_password in "\n".join(first.lines)
    assert first.staff_password not in "\n".join(second.lines)
    assert any("password was shown when the demo first created it" in line for line in second.lines)
    codes = [line for line in first.lines + second.lines if line.startswith("  code ")]
    assert len(codes) == len(set(codes)) == 2 * len(DEMO_CARD_AMOUNTS)

    as_staff = await client.post(
        "/v1/sessions", json={"email": DEMO_STAFF_EMAIL, "password": first.staff_password}
    )
    assert as_staff.status_code == 201, as_staff.text
    assert as_staff.json()["staff"]["role"] == "admin"
    as_shopper = await client.post(
        "/v1/sessions", json={"email": DEMO_SHOPPER_EMAIL, "password": DEMO_SHOPPER_PASSWORD}
    )
    assert as_shopper.status_code == 201, as_shopper.text
    await issue(client, {"Authorization": f"Bearer {second.api_key}"})
