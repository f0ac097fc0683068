"""Group commit of redemptions on PostgreSQL (`giftcard.redemption._redeem_batch`): the
redemptions of a process that come together commit in one transaction of a few
statements, each answered as if it had run alone; what a batch cannot settle runs by
itself, and a batch that fails leaves every redemption in it to run by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.codes import generate_code
from giftcard.config import Settings
from giftcard.db.tables import journal_transactions, limit_reservations
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import api_key, burst, issue, sent_statements, sign_up

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

CONCURRENCY = 24


@pytest.fixture
async def batch_services(settings: Settings, clock: FrozenClock) -> AsyncIterator[Services]:
    # Lock-outs out of the way: every attempt in flight holds a unit until it is answered.
    relaxed = replace(
        settings,
        database_pool_size=CONCURRENCY,
        limit_redeem_failures_account="10000/15minutes",
        limit_redeem_failures_address="10000/15minutes",
    )
    svc = Services.build(relaxed, clock=clock)
    yield svc
    await svc.close()


@pytest.fixture
async def batch_client(batch_services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(
        app=create_app(services=batch_services), client=("203.0.113.9", 4711)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def redeem(client: httpx.AsyncClient, auth: dict[str, str], code: str, key: str) -> Any:
    return client.post(
        "/v1/me/redemptions", json={"code": code}, headers={**auth, "Idempotency-Key": key}
    )


def available(body: dict[str, Any]) -> int:
    return int(body["balance"]["available"])


async def count(services: Services, table: Any) -> int:
    async with services.db.transaction(write=False) as connection:
        return int((await connection.execute(select(func.count()).select_from(table))).scalar_one())


async def test_redemptions_that_come_together_commit_together(
    batch_client: httpx.AsyncClient, batch_services: Services
) -> None:
    """Given 4 shoppers with 6 codes each (of different amounts), when all 24 are redeemed
    at once, then every one is credited once with its own journal transaction, each
    answer's balance is its shopper's balance right after it (the answers of one
    shopper, in order, add up), their abuse-limit units are given back, a retry replays
    its answer, and the batches took far fewer statements than 24 redemptions alone
    would."""
    admin = await api_key(batch_services)
    shoppers = await asyncio.gather(*(sign_up(batch_client) for _ in range(4)))
    cards = [
        (await issue(batch_client, admin, amount=100 * (n + 1)))[0] for n in range(CONCURRENCY)
    ]
    journal_before = await count(batch_services, journal_transactions)
    units_before = await count(batch_services, limit_reservations)
    with sent_statements(batch_services.db) as sent:
        responses = await burst(
            *(
                redeem(batch_client, shoppers[n % 4].auth, card["code"], f"batch-{n}")
                for n, card in enumerate(cards)
            )
        )
    assert [r.status_code for r in responses] == [201] * CONCURRENCY, [r.text for r in responses]
    batched = [s for s, _ in sent if s.startswith("UPDATE cards SET state") and "unnest" in s]
    assert batched, "no redemptions went in a batch"
    # Alone, a redemption sends 7 statements or more; together, a few per batch.
    assert len(sent) < CONCURRENCY * 4, len(sent)
    assert await count(batch_services, journal_transactions) == journal_before + CONCURRENCY
    for number, shopper in enumerate(shoppers):
        mine = sorted((r.json() for r in responses[number::4]), key=available)
        running = 0
        for body in mine:
            running += body["amount"]
            assert available(body) == running, mine
        balance = (await batch_client.get("/v1/me/balance", headers=shopper.auth)).json()
        assert balance["available"] == running
    assert await count(batch_services, limit_reservations) == units_before
    replayed = await redeem(batch_client, shoppers[1].auth, cards[5]["code"], "batch-5")
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.json() == responses[5].json()
    assert (await verify(batch_services.db)).problems == []


async def test_what_a_batch_cannot_settle_is_answered_as_if_alone(
    batch_client: httpx.AsyncClient, batch_services: Services
) -> None:
    """Given good codes redeemed together with an unknown code, a code redeemed before, one
    code sent twice under two keys, one request sent twice under one key, a retry of a
    request answered before and another code under that request's key, then the good
    codes are credited and every other request gets the answer it would have got alone."""
    admin = await api_key(batch_services)
    shopper = await sign_up(batch_client)
    good = [card["code"] for card in await issue(batch_client, admin, amount=500, count=8)]
    [used, twice, dup, other] = [card["code"] for card in await issue(batch_client, admin, count=4)]
    first = await redeem(batch_client, shopper.auth, used, "used-before")
    assert first.status_code == 201
    auth = shopper.auth
    responses = await burst(
        *(redeem(batch_client, auth, code, f"good-{n}") for n, code in enumerate(good)),
        redeem(batch_client, auth, generate_code(), "unknown"),
        redeem(batch_client, auth, used, "used-again"),
        redeem(batch_client, auth, twice, "twice-a"),
        redeem(batch_client, auth, twice, "twice-b"),
        redeem(batch_client, auth, dup, "same-key"),
        redeem(batch_client, auth, dup, "same-key"),
        redeem(batch_client, auth, used, "used-before"),
        redeem(batch_client, auth, other, "used-before"),
    )
    assert [r.status_code for r in responses[:8]] == [201] * 8
    unknown, used_again, twice_a, twice_b, dup_a, dup_b, retried, reused = responses[8:]
    assert unknown.json()["code"] == "code_not_found"
    assert used_again.json()["code"] == "code_already_redeemed"
    assert sorted([twice_a.status_code, twice_b.status_code]) == [201, 409]
    assert dup_a.status_code == dup_b.status_code == 201
    assert dup_a.json() == dup_b.json()
    assert {dup_a.headers.get("Idempotent-Replayed"), dup_b.headers.get("Idempotent-Replayed")} == {
        None,
        "true",
    }
    assert retried.json() == first.json()
    assert retried.headers.get("Idempotent-Replayed") == "true"
    assert reused.json()["code"] == "idempotency_key_reused"
    balance = (await batch_client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 8 * 500 + 3 * 2500
    assert (await verify(batch_services.db)).problems == []


async def test_a_batch_that_fails_leaves_each_redemption_to_run_alone(
    batch_client: httpx.AsyncClient, batch_services: Services, failing_batches: list[int]
) -> None:
    """Given a batch whose statement fails (here: the journal refuses it), when its
    redemptions are answered, then each was run again by itself and credited once, and
    nothing of the failed batch was kept."""
    admin = await api_key(batch_services)
    shopper = await sign_up(batch_client)
    codes = [card["code"] for card in await issue(batch_client, admin, amount=300, count=12)]
    responses = await burst(
        *(redeem(batch_client, shopper.auth, code, f"fail-{n}") for n, code in enumerate(codes))
    )
    assert failing_batches, "no batch was tried"
    assert [r.status_code for r in responses] == [201] * 12, [r.text for r in responses]
    balance = (await batch_client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 12 * 300
    assert (await verify(batch_services.db)).problems == []
