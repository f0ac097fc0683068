"""Group commit of redemptions on PostgreSQL (`giftcard.redemption._redeem_batch`): the
redemptions of a process that come together commit in one transaction of a few
statements, each answered as if it had run alone; what a batch cannot settle runs by
itself, and a batch that fails leaves every redemption in it to run by itself."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from giftcard import ids
from giftcard.codes import generate_code
from giftcard.config import Settings
from giftcard.db.tables import idempotency_keys, journal_transactions, limit_reservations
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import api_key, burst, issue, sent_statements, sign_up

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

CONCURRENCY = 24


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A pool with room for every request at once, and lock-outs out of the way: every
    attempt in flight holds a unit until it is answered."""
    return replace(
        settings,
        database_pool_size=CONCURRENCY,
        limit_redeem_failures_account="10000/15minutes",
        limit_redeem_failures_address="10000/15minutes",
    )


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
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given 4 shoppers with 6 codes each (of different amounts), when all 24 are redeemed
    at once, then every one is credited once with its own journal transaction, each
    answer's balance is its shopper's balance right after it (the answers of one
    shopper, in order, add up), their abuse-limit units are given back, a retry replays
    its answer, and the batches took far fewer statements than 24 redemptions alone
    would."""
    admin = await api_key(services)
    shoppers = await asyncio.gather(*(sign_up(client) for _ in range(4)))
    cards = [(await issue(client, admin, amount=100 * (n + 1)))[0] for n in range(CONCURRENCY)]
    journal_before = await count(services, journal_transactions)
    units_before = await count(services, limit_reservations)
    with sent_statements(services.db) as sent:
        responses = await burst(
            *(
                redeem(client, shoppers[n % 4].auth, card["code"], f"batch-{n}")
                for n, card in enumerate(cards)
            )
        )
    assert [r.status_code for r in responses] == [201] * CONCURRENCY, [r.text for r in responses]
    batched = [s for s, _ in sent if s.startswith("UPDATE cards SET state") and "unnest" in s]
    assert batched, "no redemptions went in a batch"
    # Alone, a redemption sends 7 statements or more; together, a few per batch.
    assert len(sent) < CONCURRENCY * 4, len(sent)
    assert await count(services, journal_transactions) == journal_before + CONCURRENCY
    for number, shopper in enumerate(shoppers):
        mine = sorted((r.json() for r in responses[number::4]), key=available)
        running = 0
        for body in mine:
            running += body["amount"]
            assert available(body) == running, mine
        balance = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
        assert balance["available"] == running
    assert await count(services, limit_reservations) == units_before
    replayed = await redeem(client, shoppers[1].auth, cards[5]["code"], "batch-5")
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.json() == responses[5].json()
    assert (await verify(services.db)).problems == []


async def test_what_a_batch_cannot_settle_is_answered_as_if_alone(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given good codes redeemed together with an unknown code, a code redeemed before, one
    code sent twice under two keys, one request sent twice under one key, a retry of a
    request answered before and another code under that request's key, then the good
    codes are credited and every other request gets the answer it would have got alone."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    good = [card["code"] for card in await issue(client, admin, amount=500, count=8)]
    [used, twice, dup, other] = [card["code"] for card in await issue(client, admin, count=4)]
    first = await redeem(client, shopper.auth, used, "used-before")
    assert first.status_code == 201
    auth = shopper.auth
    responses = await burst(
        *(redeem(client, auth, code, f"good-{n}") for n, code in enumerate(good)),
        redeem(client, auth, generate_code(), "unknown"),
        redeem(client, auth, used, "used-again"),
        redeem(client, auth, twice, "twice-a"),
        redeem(client, auth, twice, "twice-b"),
        redeem(client, auth, dup, "same-key"),
        redeem(client, auth, dup, "same-key"),
        redeem(client, auth, used, "used-before"),
        redeem(client, auth, other, "used-before"),
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
    balance = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 8 * 500 + 3 * 2500
    assert (await verify(services.db)).problems == []


async def test_a_batch_that_fails_leaves_each_redemption_to_run_alone(
    client: httpx.AsyncClient, services: Services, failing_batches: list[int]
) -> None:
    """Given a batch whose statement fails (here: the journal refuses it), when its
    redemptions are answered, then each was run again by itself and credited once, and
    nothing of the failed batch was kept."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    codes = [card["code"] for card in await issue(client, admin, amount=300, count=12)]
    responses = await burst(
        *(redeem(client, shopper.auth, code, f"fail-{n}") for n, code in enumerate(codes))
    )
    assert failing_batches, "no batch was tried"
    assert [r.status_code for r in responses] == [201] * 12, [r.text for r in responses]
    balance = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 12 * 300
    assert (await verify(services.db)).problems == []


async def test_a_redemption_whose_key_is_held_waits_and_leaves_the_batch_alone(
    client: httpx.AsyncClient, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a key held by another request still in flight (its claim not committed) and
    redemptions sent together, one of them under that key: the batch waits for the
    holder, takes no card for that redemption and commits the others' (the batch does
    not fail); the one left out runs alone and gets what a key used for another request
    gets, and its card is still there to redeem."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    codes = [card["code"] for card in await issue(client, admin, amount=400, count=6)]
    scope = f"customer:{ids.parse_id(ids.CUSTOMER, shopper.id)}"
    key = {"scope": scope, "key": "held"}
    async with services.db.engine.connect() as holder:
        await holder.begin()
        row = {**key, "fingerprint": b"another request", "created_at": services.clock.now()}
        await holder.execute(insert(idempotency_keys).values(row))
        sent = asyncio.ensure_future(
            burst(
                redeem(client, shopper.auth, codes[0], "held"),
                *(
                    redeem(client, shopper.auth, code, f"free-{n}")
                    for n, code in enumerate(codes[1:])
                ),
            )
        )
        await asyncio.sleep(0.5)  # long enough for the batch to meet the held key
        assert not sent.done()
        answered = update(idempotency_keys).values(response_status=201, response_body="{}")
        await holder.execute(answered.filter_by(**key))
        await holder.commit()
    held, *free = await sent
    assert [r.status_code for r in free] == [201] * 5, [r.text for r in free]
    assert held.json()["code"] == "idempotency_key_reused"
    assert "a batch of redemptions failed" not in caplog.text
    again = await redeem(client, shopper.auth, codes[0], "another")
    assert again.status_code == 201, again.text
    assert (await verify(services.db)).problems == []
