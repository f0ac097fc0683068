"""Checkout with the balance: the main paths, once, on each database."""

from __future__ import annotations

from typing import Any

import httpx

from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import ALL_ISOLATIONS, Shopper, api_key, issue, sign_up

pytestmark = ALL_ISOLATIONS


async def funded(
    client: httpx.AsyncClient, services: Services, amount: int
) -> tuple[Shopper, dict[str, str]]:
    admin = await api_key(services, "merchant")
    [card] = await issue(client, admin, amount=amount)
    shopper = await sign_up(client)
    redeemed = await client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
    )
    assert redeemed.status_code == 201
    return shopper, admin


async def balance(client: httpx.AsyncClient, shopper: Shopper) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    return body


async def test_hold_capture_refund(client: httpx.AsyncClient, services: Services) -> None:
    shopper, admin = await funded(client, services, 5000)
    created = await client.post(
        "/v1/payments",
        json={
            "customer_id": shopper.id,
            "order_id": "o-1",
            "amount": 8000,
            "currency": "USD",
            "use_balance": "max",
            "capture": False,
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "authorized"
    assert payment["gift_card_amount"] == 5000
    assert payment["other_amount"] == 3000
    assert await balance(client, shopper) == {
        "currency": "USD",
        "available": 0,
        "held": 5000,
        "total": 5000,
    }

    captured = await client.post(
        f"/v1/payments/{payment['id']}/capture", json={"amount": 7000}, headers=admin
    )
    assert captured.status_code == 200, captured.text
    assert captured.json()["captured_amount"] == 7000
    assert await balance(client, shopper) == {
        "currency": "USD",
        "available": 0,
        "held": 0,
        "total": 0,
    }

    refunded = await client.post(
        f"/v1/payments/{payment['id']}/refunds", json={"amount": 6000}, headers=admin
    )
    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["to_gift_card_balance"] == 5000
    assert refunded.json()["to_original_payment_method"] == 1000
    assert (await balance(client, shopper))["available"] == 5000
    history = (await client.get("/v1/me/transactions", headers=shopper.auth)).json()["data"]
    assert [item["type"] for item in history] == ["refund", "payment", "redemption"]
    assert history[0]["payment_id"] == payment["id"]
    report = await verify(services.db)
    assert report.problems == []


async def test_the_isolation_level_is_the_one_asked_for(services: Services, backend: str) -> None:
    """The serializable variant really runs PostgreSQL transactions at SERIALIZABLE."""
    if backend == "sqlite":
        return
    from sqlalchemy import text

    async with services.db.transaction() as connection:
        level = (await connection.execute(text("SHOW transaction_isolation"))).scalar_one()
    expected = "serializable" if backend == "postgresql-serializable" else "read committed"
    assert level == expected
