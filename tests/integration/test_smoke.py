"""The whole redemption path, once, on each database."""

from __future__ import annotations

import httpx

from giftcard.services import Services
from tests.conftest import api_key, issue, sign_up


async def test_issue_sign_up_redeem_balance_history(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an issued code and a new shopper, redeeming it raises the balance and is in
    the history."""
    admin = await api_key(services)
    [card] = await issue(client, admin, amount=2500)
    shopper = await sign_up(client)

    response = await client.post(
        "/v1/me/redemptions", json={"code": card["code"].lower()}, headers=shopper.auth
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["amount"] == 2500
    assert body["balance"] == {"currency": "USD", "available": 2500, "held": 0, "total": 2500}
    balance = await client.get("/v1/me/balance", headers=shopper.auth)
    assert balance.json() == {"currency": "USD", "available": 2500, "held": 0, "total": 2500}
    history = (await client.get("/v1/me/transactions", headers=shopper.auth)).json()
    assert history["has_more"] is False
    assert [item["type"] for item in history["data"]] == ["redemption"]
    assert history["data"][0]["balance_after"] == 2500
