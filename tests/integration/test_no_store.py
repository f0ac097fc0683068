"""No cache keeps an API answer: every answer under /v1, errors included, says
`Cache-Control: no-store`, since answers there carry balances, histories and codes."""

from __future__ import annotations

import httpx

from giftcard.api.app import create_app
from giftcard.services import Services
from tests.conftest import api_key, issue, sign_up


def assert_not_stored(response: httpx.Response, why: str) -> None:
    assert response.headers.get("cache-control") == "no-store", (why, response.headers)


async def test_answers_with_balances_histories_and_codes_are_not_stored(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A code at issuance, a redemption, a balance, a history, a customer and a payment
    are each answered with no-store."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    issued = await client.post(
        "/v1/cards", json={"amount": 900, "region": "US", "kind": "digital"}, headers=admin
    )
    assert issued.status_code == 201, issued.text
    card = issued.json()["data"][0]
    redeemed = await client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
    )
    paid = await client.post(
        "/v1/payments",
        json={
            "customer_id": shopper.id,
            "order_id": "o-cache",
            "amount": 100,
            "currency": "USD",
            "use_balance": "max",
        },
        headers=admin,
    )
    assert paid.status_code == 201, paid.text
    answers = {
        "issued codes": issued,
        "redemption": redeemed,
        "balance": await client.get("/v1/me/balance", headers=shopper.auth),
        "history": await client.get("/v1/me/transactions", headers=shopper.auth),
        "customer": await client.get("/v1/me", headers=shopper.auth),
        "card": await client.get(f"/v1/cards/{card['id']}", headers=admin),
        "payment": await client.get(f"/v1/payments/{paid.json()['id']}", headers=admin),
    }

    for why, response in answers.items():
        assert response.status_code < 300, (why, response.text)
        assert_not_stored(response, why)


async def test_error_answers_are_not_stored(client: httpx.AsyncClient, services: Services) -> None:
    """Refusals of every kind, from the door, the use case, the router and the size
    limit, are answered with no-store too."""
    shopper = await sign_up(client)
    [card] = await issue(client, await api_key(services), amount=100)
    assert (
        await client.post("/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth)
    ).status_code == 201
    answers = {
        "401": await client.get("/v1/me/balance"),
        "409 already redeemed": await client.post(
            "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
        ),
        "422 bad cursor": await client.get(
            "/v1/me/transactions?starting_after=txn_987654321", headers=shopper.auth
        ),
        "404 no route": await client.get("/v1/nothing-here"),
        "413 body too large": await client.post(
            "/v1/me/redemptions",
            content=b"{" + b" " * (services.settings.request_body_bytes_max + 1) + b"}",
            headers={**shopper.auth, "Content-Type": "application/json"},
        ),
    }

    for why, response in answers.items():
        assert response.status_code == int(why[:3]), (why, response.text)
        assert_not_stored(response, why)


async def test_a_server_error_is_not_stored(services: Services) -> None:
    """An unexpected failure, answered outside every middleware, is marked too."""
    app = create_app(services=services)

    @app.get("/v1/failing-on-purpose")
    async def failing() -> None:
        raise RuntimeError("a bug, on purpose")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/v1/failing-on-purpose")

    assert response.status_code == 500
    assert_not_stored(response, "500")
