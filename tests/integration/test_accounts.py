"""Accounts over HTTP: sign-up, log-in and log-out, sessions expiring, the customer's own
account, and who may call what."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx

from giftcard.clock import FrozenClock
from giftcard.customers import Role, create_staff
from giftcard.services import Services
from tests.conftest import Shopper, api_key, assert_problem, issue, sign_up

PASSWORD = "correct horse battery"


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


async def customer_count(client: httpx.AsyncClient, services: Services) -> int:
    from sqlalchemy import func, select

    from giftcard.db.tables import customers

    async with services.db.transaction(write=False) as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(customers))).scalar_one()
        )


# --- sign-up --------------------------------------------------------------------------


async def test_sign_up_returns_the_customer_with_normalized_email(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a new email in mixed case with spaces, when signing up in the GB store, then
    201 returns {id, email, name, region, currency, refund_preference} with the email
    lower-cased, GBP from the region and refunds to the original payment method."""
    local = uuid.uuid4().hex[:8]

    response = await client.post(
        "/v1/customers",
        json={
            "email": f"  Ada.{local}@Example.COM ",
            "password": PASSWORD,
            "region": "gb",
            "name": "Ada Lovelace",
        },
    )

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"id", "email", "name", "region", "currency", "refund_preference"}
    assert body["id"].startswith("cus_")
    assert body["email"] == f"ada.{local}@example.com"
    assert body["name"] == "Ada Lovelace"
    assert body["region"] == "GB"
    assert body["currency"] == "GBP"
    assert body["refund_preference"] == "original_payment_method"
    assert "password" not in response.text
    assert PASSWORD not in response.text
    session = await client.post(
        "/v1/sessions", json={"email": f"ADA.{local}@example.com", "password": PASSWORD}
    )
    assert session.status_code == 201, session.text
    assert session.json()["customer"] == body
    jp = await sign_up(client, region="JP")
    me = (await client.get("/v1/me", headers=jp.auth)).json()
    assert me["currency"] == "JPY"
    assert me["name"] is None


async def test_sign_up_with_a_taken_email_is_email_taken(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an account, when someone signs up with the same email in another case, then
    409 email_taken on param `email` and no second account exists."""
    email = new_email()
    first = await client.post(
        "/v1/customers", json={"email": email, "password": PASSWORD, "region": "US"}
    )
    assert first.status_code == 201

    again = await client.post(
        "/v1/customers",
        json={"email": email.upper(), "password": "another password", "region": "DE"},
    )

    body = assert_problem(again, 409, "email_taken", param="email")
    assert "already" in body["detail"]
    assert await customer_count(client, services) == 1


async def test_sign_up_with_bad_fields_is_validation_error_naming_the_field(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a bad email, a short password, an unknown region or a missing field, when
    signing up, then 422 validation_error names the field and no account is created."""
    good = {"email": new_email(), "password": PASSWORD, "region": "US"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "email": "not-an-email"}, "email"),
        ({**good, "email": "a@b"}, "email"),
        ({**good, "email": "two@@example.com"}, "email"),
        ({**good, "email": "sp ace@example.com"}, "email"),
        ({**good, "password": "short"}, "password"),
        ({**good, "password": "1234567"}, "password"),
        ({**good, "region": "XX"}, "region"),
        ({**good, "region": "USA"}, "region"),
        ({**good, "region": ""}, "region"),
        ({"password": PASSWORD, "region": "US"}, "email"),
        ({"email": new_email(), "region": "US"}, "password"),
        ({"email": new_email(), "password": PASSWORD}, "region"),
    ]

    for body, param in cases:
        response = await client.post("/v1/customers", json=body)

        assert_problem(response, 422, "validation_error", param=param)
    assert await customer_count(client, services) == 0
    edge = await client.post("/v1/customers", json={**good, "password": "12345678"})
    assert edge.status_code == 201, edge.text


# --- sessions -------------------------------------------------------------------------


async def test_log_in_customer_and_staff(client: httpx.AsyncClient, services: Services) -> None:
    """Given a customer and a staff member, when each logs in, then 201 gives a token and
    expires_at, with `customer` for the customer and `staff` (not `customer`) for staff."""
    shopper = await sign_up(client)
    staff_email = new_email()
    await create_staff(
        services.db, email=staff_email, password=PASSWORD, role=Role.SUPPORT, clock=services.clock
    )

    as_customer = await client.post(
        "/v1/sessions", json={"email": shopper.email, "password": PASSWORD}
    )
    as_staff = await client.post("/v1/sessions", json={"email": staff_email, "password": PASSWORD})

    assert as_customer.status_code == 201, as_customer.text
    body = as_customer.json()
    assert set(body) == {"token", "expires_at", "customer"}
    assert body["customer"]["id"] == shopper.id
    assert body["token"] != shopper.token
    assert as_staff.status_code == 201, as_staff.text
    staff_body = as_staff.json()
    assert set(staff_body) == {"token", "expires_at", "staff"}
    assert staff_body["staff"]["email"] == staff_email
    assert staff_body["staff"]["role"] == "support"
    assert staff_body["staff"]["id"].startswith("stf_")
    staff_auth = {"Authorization": f"Bearer {staff_body['token']}"}
    assert_problem(await client.get("/v1/me", headers=staff_auth), 403, "forbidden")


async def test_wrong_password_and_unknown_email_give_the_same_401(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an account, when logging in with a wrong password, an unknown email, or an
    email that is not even an address, then each is 401 invalid_credentials with the very
    same body, so the answer does not tell which accounts exist."""
    shopper = await sign_up(client)

    wrong_password = await client.post(
        "/v1/sessions", json={"email": shopper.email, "password": "wrong password!"}
    )
    unknown_email = await client.post(
        "/v1/sessions", json={"email": new_email(), "password": PASSWORD}
    )
    not_an_email = await client.post("/v1/sessions", json={"email": "nobody", "password": PASSWORD})

    body = assert_problem(wrong_password, 401, "invalid_credentials")
    assert "token" not in body
    assert unknown_email.status_code == 401
    assert unknown_email.content == wrong_password.content
    assert not_an_email.content == wrong_password.content


async def test_log_out_revokes_only_that_token(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a shopper logged in twice, when one session logs out, then 204, that token
    gets 401 unauthorized (also for a second log-out) and the other token still works."""
    shopper = await sign_up(client)
    other = await client.post("/v1/sessions", json={"email": shopper.email, "password": PASSWORD})
    other_auth = {"Authorization": f"Bearer {other.json()['token']}"}

    response = await client.delete("/v1/sessions/current", headers=shopper.auth)

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get("/v1/me", headers=shopper.auth), 401, "unauthorized")
    assert_problem(
        await client.delete("/v1/sessions/current", headers=shopper.auth), 401, "unauthorized"
    )
    assert (await client.get("/v1/me", headers=other_auth)).status_code == 200


async def test_session_expires_after_its_ttl(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a session, when the clock reaches a second before its TTL it still works,
    and once past settings.session_ttl_s it is 401 unauthorized."""
    shopper = await sign_up(client)
    ttl_s = services.settings.session_ttl_s

    clock.advance(timedelta(seconds=ttl_s - 1))
    assert (await client.get("/v1/me", headers=shopper.auth)).status_code == 200
    clock.advance(timedelta(seconds=2))

    response = await client.get("/v1/me/balance", headers=shopper.auth)

    body = assert_problem(response, 401, "unauthorized")
    assert "expired" in body["detail"]


# --- the customer's own account -------------------------------------------------------


async def test_get_and_patch_me(client: httpx.AsyncClient, services: Services) -> None:
    """Given a shopper, when they set their refund preference and name, then GET /v1/me
    shows them; an invalid preference or unknown field is 422 and changes nothing."""
    shopper = await sign_up(client, name="Grace")
    before = (await client.get("/v1/me", headers=shopper.auth)).json()
    assert before["refund_preference"] == "original_payment_method"
    assert before["email"] == shopper.email

    patched = await client.patch(
        "/v1/me", json={"refund_preference": "gift_card_balance"}, headers=shopper.auth
    )

    assert patched.status_code == 200, patched.text
    assert patched.json() == {**before, "refund_preference": "gift_card_balance"}
    renamed = await client.patch("/v1/me", json={"name": "Grace Hopper"}, headers=shopper.auth)
    assert renamed.json()["refund_preference"] == "gift_card_balance"
    assert renamed.json()["name"] == "Grace Hopper"
    for bad, param in [
        ({"refund_preference": "cash"}, "refund_preference"),
        ({"refund_preference": "GIFT_CARD_BALANCE"}, "refund_preference"),
        ({"refund_preference": 1}, "refund_preference"),
        ({"email": "new@example.com"}, "email"),
        ({"name": "x" * 201}, "name"),
        ({"name": "bad\u0000name"}, "name"),
    ]:
        response = await client.patch("/v1/me", json=bad, headers=shopper.auth)
        assert_problem(response, 422, "validation_error", param=param)
    after = (await client.get("/v1/me", headers=shopper.auth)).json()
    assert after == renamed.json()


# --- roles ----------------------------------------------------------------------------


async def test_who_may_issue_cards(client: httpx.AsyncClient, services: Services) -> None:
    """Given a customer token, a support key, a merchant key and an admin key, when each
    issues a card, then the customer and support get 403 forbidden and issue nothing,
    while merchant and admin get 201."""
    shopper = await sign_up(client)
    support = await api_key(services, "support")
    merchant = await api_key(services, "merchant")
    admin = await api_key(services, "admin")
    body = {"amount": 1000, "region": "US", "kind": "digital"}

    as_customer = await client.post("/v1/cards", json=body, headers=shopper.auth)
    as_support = await client.post("/v1/cards", json=body, headers=support)
    as_merchant = await client.post("/v1/cards", json=body, headers=merchant)

    assert_problem(as_customer, 403, "forbidden")
    assert_problem(as_support, 403, "forbidden")
    assert as_merchant.status_code == 201, as_merchant.text
    assert (await client.post("/v1/cards", json=body, headers=admin)).status_code == 201
    card_id = as_merchant.json()["data"][0]["id"]
    assert_problem(await client.get(f"/v1/cards/{card_id}", headers=shopper.auth), 403, "forbidden")
    assert_problem(await client.get(f"/v1/cards/{card_id}", headers=support), 403, "forbidden")
    activate = await client.post("/v1/cards/activate", json={"serial": "1"}, headers=shopper.auth)
    assert_problem(activate, 403, "forbidden")


async def test_api_keys_are_not_customers(client: httpx.AsyncClient, services: Services) -> None:
    """Given API keys of every role, when they call the customer's own endpoints, then
    403 forbidden: an API key has no account, balance or session."""
    for role in ("admin", "merchant", "support"):
        key = await api_key(services, role)
        for method, path in [
            ("GET", "/v1/me"),
            ("PATCH", "/v1/me"),
            ("GET", "/v1/me/balance"),
            ("GET", "/v1/me/transactions"),
            ("POST", "/v1/me/redemptions"),
            ("DELETE", "/v1/sessions/current"),
        ]:
            json_body = {"code": "7KQ4-M2ZP-X9CD-R3TW"} if method == "POST" else None
            if method == "PATCH":
                json_body = {"name": "key"}
            response = await client.request(method, path, json=json_body, headers=key)
            assert_problem(response, 403, "forbidden")


async def test_missing_garbage_and_bogus_credentials_are_unauthorized(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given no Authorization header, a non-Bearer scheme, garbage, or well-shaped but
    unknown tokens and keys, when calling /v1/me or /v1/cards, then 401 unauthorized."""
    shopper = await sign_up(client)
    headers_list: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {shopper.token}"},
        {"Authorization": shopper.token},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Bearer gcs_" + "A" * 43},
        {"Authorization": "Bearer gck_" + "A" * 43},
        {"Authorization": f"Bearer {shopper.token}x"},
        {"Authorization": f"Bearer {shopper.token[:-1]}"},
        {"Authorization": "Bearer " + "x" * 5000},
    ]
    for headers in headers_list:
        for method, path in [("GET", "/v1/me"), ("POST", "/v1/cards")]:
            json_body = (
                {"amount": 1, "region": "US", "kind": "digital"} if method == "POST" else None
            )
            response = await client.request(method, path, json=json_body, headers=headers)
            assert_problem(response, 401, "unauthorized")
    assert (await client.get("/v1/me", headers=shopper.auth)).status_code == 200
    lower = {"Authorization": f"bearer {shopper.token}"}
    assert (await client.get("/v1/me", headers=lower)).status_code == 200


async def test_a_customer_sees_only_their_own_data(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given shopper A with a redemption and shopper B with none, when B reads /v1/me,
    balance and history, then B sees only B; A's transaction id as B's cursor is refused
    like a made-up one."""
    admin = await api_key(services)
    [card] = await issue(client, admin, amount=900)
    alice: Shopper = await sign_up(client)
    bob: Shopper = await sign_up(client)
    redeemed = await client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=alice.auth
    )
    assert redeemed.status_code == 201
    alice_txn = redeemed.json()["id"]

    me = (await client.get("/v1/me", headers=bob.auth)).json()
    balance = (await client.get("/v1/me/balance", headers=bob.auth)).json()
    history = await client.get("/v1/me/transactions", headers=bob.auth)
    paged = await client.get(
        "/v1/me/transactions", params={"starting_after": alice_txn}, headers=bob.auth
    )

    assert me["id"] == bob.id
    assert me["email"] == bob.email
    assert balance["total"] == 0
    assert history.json() == {"data": [], "has_more": False}
    assert_problem(paged, 422, "validation_error", param="starting_after")
    assert alice_txn not in paged.text
    alice_history = (await client.get("/v1/me/transactions", headers=alice.auth)).json()
    assert [item["id"] for item in alice_history["data"]] == [alice_txn]
