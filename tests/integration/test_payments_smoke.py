"""Checkout with the balance: the main paths, once, on each database."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url, text

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
    """PostgreSQL runs transactions at the isolation level configured (SERIALIZABLE for
    the serializable variant, else READ COMMITTED). SQLite has no levels to choose: its
    transactions are serializable because writers run one at a time, and this checks
    what that rests on, that a write transaction takes the write lock when it begins
    (`BEGIN IMMEDIATE`), before its first write, while a read transaction takes none
    and, in WAL mode, a reader is not stopped by a writer."""
    if backend == "sqlite":
        await _check_sqlite_transactions(services)
        return
    async with services.db.transaction() as connection:
        level = (await connection.execute(text("SHOW transaction_isolation"))).scalar_one()
    expected = "serializable" if backend == "postgresql-serializable" else "read committed"
    assert level == expected


def _begin_writing(path: str) -> None:
    """Start and end a write transaction on a connection of its own, without waiting
    for a lock: raises `sqlite3.OperationalError` (database is locked) if one is held."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


def _read(path: str) -> int:
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        count: int = other.execute("SELECT count(*) FROM ledger_accounts").fetchone()[0]
    finally:
        other.close()
    return count


async def _check_sqlite_transactions(services: Services) -> None:
    path = make_url(services.db.url).database
    assert path
    async with services.db.transaction() as connection:
        journal_mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
        # Nothing written yet: the lock was taken by BEGIN itself.
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _begin_writing(path)
        assert _read(path) > 0
    async with services.db.transaction(write=False) as connection:
        await connection.execute(text("SELECT count(*) FROM ledger_accounts"))
        _begin_writing(path)
    assert journal_mode == "wal"
