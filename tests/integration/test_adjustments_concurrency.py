"""Adjustments raced (on SQLite, PostgreSQL at READ COMMITTED and at SERIALIZABLE): two
approvals of one adjustment at once apply it once, whether they reach one process or
two; a deduction racing a payment of the same balance never takes it below zero."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import func, select

from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.db.tables import audit_log, journal_transactions
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import ALL_ISOLATIONS, api_key, burst, staff_member
from tests.integration.test_adjustments import adjust, balance
from tests.integration.test_support_customers import funded

pytestmark = ALL_ISOLATIONS

ROUNDS = 8


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(
        settings,
        database_pool_size=20,
        limit_redeem_failures_account="10000/15minutes",
        limit_signups_address="10000/hour",
    )


@pytest.fixture
async def second_client(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """Another server process on the same database: its own services and pool."""
    other = Services.build(settings, clock=clock)
    transport = httpx.ASGITransport(app=create_app(services=other), client=("203.0.113.8", 4712))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await other.close()


async def adjustment_transactions(services: Services) -> int:
    async with services.db.transaction(write=False) as connection:
        return int(
            (
                await connection.execute(
                    select(func.count())
                    .select_from(journal_transactions)
                    .where(journal_transactions.c.type == "adjustment")
                )
            ).scalar_one()
        )


async def approvals_recorded(services: Services) -> int:
    async with services.db.transaction(write=False) as connection:
        return int(
            (
                await connection.execute(
                    select(func.count())
                    .select_from(audit_log)
                    .where(audit_log.c.action == "adjustment.approve")
                )
            ).scalar_one()
        )


@pytest.mark.parametrize("processes", ["one", "two"])
async def test_two_approvals_at_once_apply_an_adjustment_once(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    services: Services,
    processes: str,
) -> None:
    shopper = await funded(client, services, 1000)
    creator = await staff_member(client, services, "support")
    one = await staff_member(client, services, "support")
    two = await staff_member(client, services, "admin")
    other = second_client if processes == "two" else client
    made = []
    for _ in range(ROUNDS):
        response = await adjust(client, creator.auth, shopper, 20000)
        assert response.json()["status"] == "pending_approval"
        made.append(response.json()["id"])

    results = await burst(
        *(
            request
            for adjustment_id in made
            for request in (
                client.post(f"/v1/support/adjustments/{adjustment_id}/approve", headers=one.auth),
                other.post(f"/v1/support/adjustments/{adjustment_id}/approve", headers=two.auth),
            )
        )
    )

    for index in range(ROUNDS):
        pair = results[2 * index : 2 * index + 2]
        assert sorted(r.status_code for r in pair) == [200, 409], [r.text for r in pair]
    assert await balance(client, shopper) == 1000 + ROUNDS * 20000
    assert await adjustment_transactions(services) == ROUNDS
    assert await approvals_recorded(services) == ROUNDS
    assert (await verify(services.db)).problems == []


async def test_a_deduction_racing_a_payment_never_overdraws(
    client: httpx.AsyncClient, services: Services
) -> None:
    admin = await api_key(services, "admin")
    key = await api_key(services, "support")
    seen: Counter[tuple[int, int]] = Counter()
    for round_ in range(ROUNDS):
        shopper = await funded(client, services, 2500)
        deduction, payment = await asyncio.gather(
            adjust(client, key, shopper, -2500, reason="fraud_reversal"),
            client.post(
                "/v1/payments",
                json={
                    "customer_id": shopper.id,
                    "order_id": f"race-{round_}",
                    "amount": 2500,
                    "currency": "USD",
                    "use_balance": "max",
                },
                headers=admin,
            ),
        )
        assert payment.status_code == 201, payment.text
        assert deduction.status_code in (201, 409), deduction.text
        paid_from_balance = payment.json()["gift_card_amount"]
        deducted = 2500 if deduction.status_code == 201 else 0
        if deduction.status_code == 409:
            assert deduction.json()["code"] == "insufficient_balance"
        # Exactly one of them had the balance.
        assert paid_from_balance + deducted == 2500
        assert await balance(client, shopper) == 0
        seen[(deduction.status_code, paid_from_balance)] += 1
    assert (await verify(services.db)).problems == []
