"""Concurrent requests that move money (SPEC §9): a code's value is credited at most once
and an idempotency key acts once, whatever the concurrency.

Every test fires its requests together with `asyncio.gather` through the in-process app,
on SQLite and on PostgreSQL. The engine's pool is made large enough for every request to
hold a connection at the same time, and the tests check that many really did, so that a
pass means the race was run and not that the requests queued up one by one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import PeakConnections, api_key, burst, counting_connections, issue, sign_up

CONCURRENCY = 50
SAME_KEY_CONCURRENCY = 20


@pytest.fixture
def race_settings(settings: Settings) -> Settings:
    """A pool with room for every request at once, and abuse limits out of the way: the
    race is about the ledger, not about lock-outs (those have tests of their own)."""
    return replace(
        settings,
        database_pool_size=CONCURRENCY,
        limit_redeem_failures_account="10000/15minutes",
        limit_redeem_failures_address="10000/15minutes",
        limit_redeem_misses_service="10000/15minutes",
        limit_signups_address="10000/hour",
    )


@pytest.fixture
async def race_services(race_settings: Settings, clock: FrozenClock) -> AsyncIterator[Services]:
    svc = Services.build(race_settings, clock=clock)
    yield svc
    await svc.close()


@pytest.fixture
async def race_client(race_services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(
        app=create_app(services=race_services), client=("203.0.113.7", 4711)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def peak(race_services: Services) -> Iterator[PeakConnections]:
    with counting_connections(race_services) as counter:
        yield counter


async def assert_ledger_consistent(services: Services) -> None:
    report = await verify(services.db)
    assert report.problems == []


async def balance_of(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/v1/me/balance", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def outcomes(responses: list[httpx.Response]) -> Counter[tuple[int, str | None]]:
    return Counter(
        (r.status_code, r.json().get("code") if r.status_code >= 400 else None) for r in responses
    )


async def test_one_code_redeemed_concurrently_is_credited_once(
    race_client: httpx.AsyncClient, race_services: Services, peak: PeakConnections
) -> None:
    """Given one code and one shopper, 50 simultaneous redemptions of it give exactly one
    201 and 49 code_already_redeemed, and the balance holds the face value once."""
    admin = await api_key(race_services)
    [card] = await issue(race_client, admin, amount=2500)
    shopper = await sign_up(race_client)

    responses = await burst(
        *(
            race_client.post(
                "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
            )
            for _ in range(CONCURRENCY)
        )
    )

    assert outcomes(responses) == {
        (201, None): 1,
        (409, "code_already_redeemed"): CONCURRENCY - 1,
    }, [r.text for r in responses if r.status_code not in (201, 409)]
    [won] = [r.json() for r in responses if r.status_code == 201]
    assert won["amount"] == 2500
    assert won["balance"]["available"] == 2500
    assert await balance_of(race_client, shopper.auth) == {
        "currency": "USD",
        "available": 2500,
        "held": 0,
        "total": 2500,
    }
    history = (await race_client.get("/v1/me/transactions", headers=shopper.auth)).json()
    assert [item["type"] for item in history["data"]] == ["redemption"]
    assert peak.overlapped(10), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(race_services)


async def test_one_code_raced_by_many_shoppers_has_one_winner(
    race_client: httpx.AsyncClient, race_services: Services, peak: PeakConnections
) -> None:
    """Given one code and 50 shoppers, when all redeem it at once, exactly one is
    credited; the others are told it went to another account."""
    admin = await api_key(race_services)
    [card] = await issue(race_client, admin, amount=5000)
    shoppers = await asyncio.gather(*(sign_up(race_client) for _ in range(CONCURRENCY)))

    responses = await burst(
        *(
            race_client.post("/v1/me/redemptions", json={"code": card["code"]}, headers=s.auth)
            for s in shoppers
        )
    )

    assert outcomes(responses) == {
        (201, None): 1,
        (409, "code_already_redeemed"): CONCURRENCY - 1,
    }
    for response in responses:
        if response.status_code == 409:
            assert "another account" in response.json()["detail"]
    balances = await asyncio.gather(*(balance_of(race_client, s.auth) for s in shoppers))
    totals = sorted(b["total"] for b in balances)
    assert totals == [0] * (CONCURRENCY - 1) + [5000]
    winner = next(i for i, r in enumerate(responses) if r.status_code == 201)
    assert balances[winner]["available"] == 5000
    assert peak.overlapped(10), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(race_services)


async def test_many_codes_redeemed_concurrently_into_one_account_all_count(
    race_client: httpx.AsyncClient, race_services: Services, peak: PeakConnections
) -> None:
    """Given 50 different codes, when one shopper redeems them all at once, every one
    succeeds and the balance is their sum: concurrent credits to one balance row are
    never lost."""
    admin = await api_key(race_services)
    amounts = [100 + i for i in range(CONCURRENCY)]
    cards = [
        card
        for chunk in await asyncio.gather(
            *(issue(race_client, admin, amount=amount) for amount in amounts)
        )
        for card in chunk
    ]
    shopper = await sign_up(race_client)

    responses = await burst(
        *(
            race_client.post(
                "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
            )
            for card in cards
        )
    )

    assert [r.status_code for r in responses] == [201] * CONCURRENCY, [
        r.text for r in responses if r.status_code != 201
    ]
    assert sorted(r.json()["amount"] for r in responses) == amounts
    # Each response shows the balance right after its own credit: all distinct, and the
    # largest is the total.
    after = sorted(r.json()["balance"]["available"] for r in responses)
    assert len(set(after)) == CONCURRENCY
    assert after[-1] == sum(amounts)
    assert (await balance_of(race_client, shopper.auth))["total"] == sum(amounts)
    assert peak.overlapped(10), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(race_services)


async def test_same_idempotency_key_sent_at_once_acts_once(
    race_client: httpx.AsyncClient, race_services: Services, peak: PeakConnections
) -> None:
    """Given one redemption sent 20 times at once with the same Idempotency-Key, every
    response is the one 201 body — the duplicates wait for the first and replay its
    answer — and the balance is credited once; a retry afterwards replays the 201."""
    admin = await api_key(race_services)
    [card] = await issue(race_client, admin, amount=1234)
    shopper = await sign_up(race_client)
    headers = {**shopper.auth, "Idempotency-Key": "redeem-once-7f3a"}

    responses = await burst(
        *(
            race_client.post("/v1/me/redemptions", json={"code": card["code"]}, headers=headers)
            for _ in range(SAME_KEY_CONCURRENCY)
        )
    )

    assert [r.status_code for r in responses] == [201] * SAME_KEY_CONCURRENCY, [
        r.text for r in responses
    ]
    created = [r.json() for r in responses]
    assert all(body == created[0] for body in created)
    acted = [r for r in responses if r.headers.get("idempotent-replayed") != "true"]
    assert len(acted) == 1, "exactly one request acted; the others replayed its answer"
    assert created[0]["amount"] == 1234
    assert (await balance_of(race_client, shopper.auth))["total"] == 1234

    retry = await race_client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=headers
    )
    assert retry.status_code == 201
    assert retry.json() == created[0]
    assert retry.headers.get("idempotent-replayed") == "true"
    assert (await balance_of(race_client, shopper.auth))["total"] == 1234
    assert peak.overlapped(5), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(race_services)
