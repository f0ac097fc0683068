"""Payments raced against each other (SPEC §6 Payments, §9): however many requests arrive
at once, a balance is never overspent, a hold is settled once, and a payment is never
refunded beyond what it captured.

Every test fires its requests together with `asyncio.gather` through the in-process app,
on SQLite, PostgreSQL at READ COMMITTED and PostgreSQL at SERIALIZABLE (where the losers
of a race are retried by `Database.run`). The pool has room for every request at once,
and the tests that race requests check that many connections really were in use
together, so that a pass means the race was run and not that the requests queued up.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from giftcard import ids
from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.db.tables import journal_transactions, payments
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import (
    ALL_ISOLATIONS,
    PeakConnections,
    Shopper,
    api_key,
    assert_problem,
    burst,
    counting_connections,
    issue,
    sign_up,
)

pytestmark = ALL_ISOLATIONS

CONCURRENCY = 50
PAIRS = 20
SAME_KEY_CONCURRENCY = 20
REFUND_CONCURRENCY = 20
SWEEPERS = 2
# Connections that must have been checked out at one time for a burst to count as a race.
OVERLAP_MIN = 10


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A pool with room for every request at once, and abuse limits out of the way: the
    race is about the ledger, not about lock-outs."""
    return replace(
        settings,
        database_pool_size=CONCURRENCY,
        limit_redeem_failures_account="10000/15minutes",
        limit_redeem_failures_address="10000/15minutes",
        limit_signups_address="10000/hour",
        # Holds are expired by moving the clock past their TTL; sessions must outlive that.
        session_ttl_s=10 * settings.hold_ttl_s,
    )


@pytest.fixture
def peak(services: Services) -> Iterator[PeakConnections]:
    with counting_connections(services) as counter:
        yield counter


def outcomes(responses: list[httpx.Response]) -> Counter[tuple[int, str | None]]:
    return Counter(
        (r.status_code, r.json().get("code") if r.status_code >= 400 else None) for r in responses
    )


async def funded_shopper(client: httpx.AsyncClient, admin: dict[str, str], amount: int) -> Shopper:
    """A new shopper whose balance is `amount`, redeemed from one card."""
    [card] = await issue(client, admin, amount=amount)
    shopper = await sign_up(client)
    redeemed = await client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
    )
    assert redeemed.status_code == 201, redeemed.text
    return shopper


async def balance_of(client: httpx.AsyncClient, shopper: Shopper) -> dict[str, Any]:
    response = await client.get("/v1/me/balance", headers=shopper.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def pay(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shopper: Shopper,
    order_id: str,
    amount: int,
    *,
    use_balance: str | int = "max",
    capture: bool = True,
    headers: dict[str, str] | None = None,
    currency: str = "USD",
) -> Any:
    return client.post(
        "/v1/payments",
        json={
            "customer_id": shopper.id,
            "order_id": order_id,
            "amount": amount,
            "currency": currency,
            "use_balance": use_balance,
            "capture": capture,
        },
        headers={**admin, **(headers or {})},
    )


async def payment_of(
    client: httpx.AsyncClient, admin: dict[str, str], payment_id: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/payments/{payment_id}", headers=admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def releases_per_payment(services: Services, payment_ids: list[str]) -> dict[str, int]:
    """How many release transactions the ledger holds for each payment."""
    numbers = {ids.parse_id(ids.PAYMENT, p): p for p in payment_ids}
    async with services.db.transaction(write=False) as connection:
        rows = (
            await connection.execute(
                select(journal_transactions.c.payment_id, func.count())
                .where(
                    journal_transactions.c.type == "release",
                    journal_transactions.c.payment_id.in_(list(numbers)),
                )
                .group_by(journal_transactions.c.payment_id)
            )
        ).all()
    found = {numbers[row[0]]: int(row[1]) for row in rows}
    return {p: found.get(p, 0) for p in payment_ids}


async def assert_ledger_consistent(services: Services) -> None:
    report = await verify(services.db)
    assert report.problems == []


@pytest.mark.parametrize("capture", [True, False], ids=["captured", "held"])
@pytest.mark.parametrize("use_balance", ["max", 300], ids=["use-max", "use-up-to-300"])
async def test_simultaneous_payments_never_overspend_one_balance(
    client: httpx.AsyncClient,
    services: Services,
    peak: PeakConnections,
    capture: bool,
    use_balance: str | int,
) -> None:
    """Given a balance of 10000 and 50 orders that together could use more, when all 50
    are paid at once, the balance pays exactly min(balance, what they asked for) in
    total, never more; at most one order gets part of what it asked for; the money
    the balance did not pay is each order's other_amount; and held is exactly the
    gift-card part of the authorizations."""
    admin = await api_key(services, "merchant")
    initial = 10000
    shopper = await funded_shopper(client, admin, initial)
    amounts = [150 + 10 * i for i in range(CONCURRENCY)]
    # An integer use_balance may not exceed its order: "up to 300" is min(300, amount).
    uses = [use_balance if use_balance == "max" else min(int(use_balance), a) for a in amounts]
    wanted = [a if use == "max" else int(use) for a, use in zip(amounts, uses, strict=True)]
    assert sum(wanted) > initial, "the orders must be able to overspend for the test to mean it"
    peak.reset()

    responses = await burst(
        *(
            pay(
                client,
                admin,
                shopper,
                f"order-{i}",
                amount,
                use_balance=use,
                capture=capture,
            )
            for i, (amount, use) in enumerate(zip(amounts, uses, strict=True))
        )
    )

    assert [r.status_code for r in responses] == [201] * CONCURRENCY, [
        r.text for r in responses if r.status_code != 201
    ]
    paid = [r.json() for r in responses]
    gift = [p["gift_card_amount"] for p in paid]
    assert sum(gift) == min(initial, sum(wanted))
    for p, want in zip(paid, wanted, strict=True):
        assert 0 <= p["gift_card_amount"] <= want
        assert p["gift_card_amount"] + p["other_amount"] == p["amount"]
        assert p["status"] == ("captured" if capture else "authorized")
        assert p["captured_amount"] == (p["amount"] if capture else 0)
    # Each payment took what was left when its turn came: all of what it wanted, nothing,
    # or (once) the remainder.
    partial = [g for g, want in zip(gift, wanted, strict=True) if 0 < g < want]
    assert len(partial) <= 1, partial
    held = 0 if capture else sum(gift)
    assert await balance_of(client, shopper) == {
        "currency": "USD",
        "available": initial - sum(gift),
        "held": held,
        "total": initial - sum(gift) + held,
    }
    assert peak.overlapped(OVERLAP_MIN), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(services)


async def test_one_order_paid_many_times_at_once_is_paid_once(
    client: httpx.AsyncClient, services: Services, peak: PeakConnections
) -> None:
    """Given a store that retries an order without an idempotency key, when 20 payments
    for the same order arrive at once, exactly one is made and the others are refused
    with invalid_state: the balance is charged once."""
    admin = await api_key(services, "merchant")
    shopper = await funded_shopper(client, admin, 5000)
    peak.reset()

    responses = await burst(
        *(pay(client, admin, shopper, "order-once", 3000) for _ in range(SAME_KEY_CONCURRENCY))
    )

    assert outcomes(responses) == {
        (201, None): 1,
        (409, "invalid_state"): SAME_KEY_CONCURRENCY - 1,
    }, [r.text for r in responses]
    assert (await balance_of(client, shopper))["available"] == 2000
    assert peak.overlapped(OVERLAP_MIN), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(services)


async def authorized_payments(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shopper: Shopper,
    count: int,
    *,
    amount: int,
    use_balance: str | int = "max",
    prefix: str,
) -> list[dict[str, Any]]:
    made = []
    for i in range(count):
        response = await pay(
            client,
            admin,
            shopper,
            f"{prefix}-{i}",
            amount,
            use_balance=use_balance,
            capture=False,
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made


async def test_capture_and_void_racing_on_one_payment_have_one_winner(
    client: httpx.AsyncClient, services: Services, peak: PeakConnections
) -> None:
    """Given 20 authorizations of 500 from the balance (orders of 800), when each is
    captured (in full, or 400 of it) and voided at the same instant, exactly one of the
    two wins per payment and the other is refused with invalid_state; the payment ends
    in the winner's state and the balance holds what the winners left: nothing held,
    and every hold either captured or back in available."""
    admin = await api_key(services, "merchant")
    initial = PAIRS * 500
    shopper = await funded_shopper(client, admin, initial)
    held = await authorized_payments(
        client, admin, shopper, PAIRS, amount=800, use_balance=500, prefix="race"
    )
    assert all(p["gift_card_amount"] == 500 for p in held)
    capture_amounts = [800 if i % 2 == 0 else 400 for i in range(PAIRS)]
    requests: list[tuple[int, str, Any]] = []
    for i, payment in enumerate(held):
        requests.append(
            (
                i,
                "capture",
                client.post(
                    f"/v1/payments/{payment['id']}/capture",
                    json={"amount": capture_amounts[i]},
                    headers=admin,
                ),
            )
        )
        requests.append(
            (i, "void", client.post(f"/v1/payments/{payment['id']}/void", headers=admin))
        )
    random.Random(PAIRS).shuffle(requests)
    peak.reset()

    responses = await burst(*(request for _, _, request in requests))

    by_payment: dict[int, dict[str, httpx.Response]] = {}
    for (i, action, _), response in zip(requests, responses, strict=True):
        by_payment.setdefault(i, {})[action] = response
    captured_gift = 0
    winners: Counter[str] = Counter()
    for i, payment in enumerate(held):
        results = by_payment[i]
        statuses = sorted(r.status_code for r in results.values())
        assert statuses == [200, 409], {a: r.text for a, r in results.items()}
        [winner] = [action for action, r in results.items() if r.status_code == 200]
        [loser] = [r for r in results.values() if r.status_code == 409]
        assert_problem(loser, 409, "invalid_state")
        winners[winner] += 1
        final = await payment_of(client, admin, payment["id"])
        if winner == "capture":
            assert final["status"] == "captured"
            assert final["captured_amount"] == capture_amounts[i]
            captured_gift += min(capture_amounts[i], 500)
        else:
            assert final["status"] == "voided"
            assert final["captured_amount"] == 0
        assert final == results[winner].json()
    assert await balance_of(client, shopper) == {
        "currency": "USD",
        "available": initial - captured_gift,
        "held": 0,
        "total": initial - captured_gift,
    }
    # A hold that was captured in part released its remainder once; a voided one, all of
    # it once; one captured in full released nothing.
    releases = await releases_per_payment(services, [p["id"] for p in held])
    for i, payment in enumerate(held):
        won = "capture" if by_payment[i]["capture"].status_code == 200 else "void"
        expected = 0 if won == "capture" and capture_amounts[i] >= 500 else 1
        assert releases[payment["id"]] == expected, (won, capture_amounts[i])
    assert peak.overlapped(OVERLAP_MIN), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(services)


@pytest.mark.parametrize(
    ("refund_amount", "preference"),
    [(1000, "original_payment_method"), (700, "gift_card_balance")],
    ids=["1000-to-original", "700-to-balance"],
)
async def test_simultaneous_refunds_never_exceed_what_was_captured(
    client: httpx.AsyncClient,
    services: Services,
    peak: PeakConnections,
    refund_amount: int,
    preference: str,
) -> None:
    """Given a captured payment of 10000 (6000 from the balance, 4000 from a card), when
    20 refunds of `refund_amount` arrive at once, exactly as many succeed as fit into
    10000 and the rest are refused with invalid_state; the balance's 6000 returns to the
    balance first, and the card's part follows the refund preference."""
    admin = await api_key(services, "merchant")
    shopper = await funded_shopper(client, admin, 6000)
    changed = await client.patch(
        "/v1/me", json={"refund_preference": preference}, headers=shopper.auth
    )
    assert changed.status_code == 200, changed.text
    created = await pay(client, admin, shopper, "order-refunds", 10000)
    assert created.status_code == 201, created.text
    payment = created.json()
    assert (payment["gift_card_amount"], payment["other_amount"]) == (6000, 4000)
    fits = 10000 // refund_amount
    peak.reset()

    responses = await burst(
        *(
            client.post(
                f"/v1/payments/{payment['id']}/refunds",
                json={"amount": refund_amount},
                headers=admin,
            )
            for _ in range(REFUND_CONCURRENCY)
        )
    )

    assert outcomes(responses) == {
        (201, None): fits,
        (409, "invalid_state"): REFUND_CONCURRENCY - fits,
    }, [r.text for r in responses]
    refunded = fits * refund_amount
    made = [r.json() for r in responses if r.status_code == 201]
    assert all(m["amount"] == refund_amount for m in made)
    to_balance = sum(m["to_gift_card_balance"] for m in made)
    to_original = sum(m["to_original_payment_method"] for m in made)
    assert to_balance + to_original == refunded
    if preference == "gift_card_balance":
        assert (to_balance, to_original) == (refunded, 0)
    else:
        assert (to_balance, to_original) == (min(refunded, 6000), max(0, refunded - 6000))
    final = await payment_of(client, admin, payment["id"])
    assert final["refunded_amount"] == refunded
    assert final["status"] == ("refunded" if refunded == 10000 else "captured")
    listed = await client.get(
        f"/v1/payments/{payment['id']}/refunds", params={"limit": 100}, headers=admin
    )
    assert sorted(r["id"] for r in listed.json()["data"]) == sorted(m["id"] for m in made)
    assert await balance_of(client, shopper) == {
        "currency": "USD",
        "available": to_balance,
        "held": 0,
        "total": to_balance,
    }
    assert peak.overlapped(OVERLAP_MIN), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(services)


@pytest.mark.parametrize("capture", [True, False], ids=["captured", "held"])
async def test_same_idempotency_key_sent_at_once_pays_once(
    client: httpx.AsyncClient, services: Services, peak: PeakConnections, capture: bool
) -> None:
    """Given one payment sent 20 times at once under the same Idempotency-Key, every
    response is the one 201 body (the duplicates wait for the first and replay it),
    exactly one payment exists, the balance is charged once, and a retry afterwards
    replays the 201."""
    admin = await api_key(services, "merchant")
    shopper = await funded_shopper(client, admin, 5000)
    key = {"Idempotency-Key": f"checkout-{shopper.id}"}
    peak.reset()

    responses = await burst(
        *(
            pay(client, admin, shopper, "order-key", 3000, capture=capture, headers=key)
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
    assert created[0]["gift_card_amount"] == 3000
    async with services.db.transaction(write=False) as connection:
        rows = (
            await connection.execute(
                select(func.count())
                .select_from(payments)
                .where(payments.c.customer_id == ids.parse_id(ids.CUSTOMER, shopper.id))
            )
        ).scalar_one()
    assert rows == 1
    assert await balance_of(client, shopper) == {
        "currency": "USD",
        "available": 2000,
        "held": 0 if capture else 3000,
        "total": 2000 if capture else 5000,
    }
    retry = await pay(client, admin, shopper, "order-key", 3000, capture=capture, headers=key)
    assert retry.status_code == 201
    assert retry.json() == created[0]
    assert retry.headers.get("idempotent-replayed") == "true"
    assert (await balance_of(client, shopper))["available"] == 2000
    assert peak.overlapped(5), f"requests did not overlap: peak {peak.peak} connections"
    await assert_ledger_consistent(services)


def no_failed_maintenance(caplog: pytest.LogCaptureFixture) -> None:
    """maintain_once logs and swallows its errors; a sweeper that failed must not pass
    unnoticed because the other one did the work."""
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failed == [], [r.getMessage() for r in failed]


async def test_two_sweepers_racing_release_each_hold_once(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given three shoppers with ten holds each past their expiry, plus a captured and a
    voided payment, when two sweepers run at the same time, every hold is expired and
    released exactly once, the others are untouched, and every balance is whole again."""
    caplog.set_level(logging.INFO)
    admin = await api_key(services, "merchant")
    shoppers = [await funded_shopper(client, admin, 5000) for _ in range(3)]
    holds: list[dict[str, Any]] = []
    for n, shopper in enumerate(shoppers):
        holds += await authorized_payments(
            client, admin, shopper, 10, amount=400, prefix=f"sweep-{n}"
        )
    captured = await pay(client, admin, shoppers[0], "kept-captured", 500)
    voided = await pay(client, admin, shoppers[1], "kept-voided", 500, capture=False)
    assert (await client.post(f"/v1/payments/{voided.json()['id']}/void", headers=admin)).is_success
    clock.advance(timedelta(seconds=services.settings.hold_ttl_s))

    await burst(*(services.maintain_once() for _ in range(SWEEPERS)))

    no_failed_maintenance(caplog)
    for hold in holds:
        assert (await payment_of(client, admin, hold["id"]))["status"] == "expired"
    releases = await releases_per_payment(services, [h["id"] for h in holds])
    assert set(releases.values()) == {1}, releases
    assert (await payment_of(client, admin, captured.json()["id"]))["status"] == "captured"
    assert (await payment_of(client, admin, voided.json()["id"]))["status"] == "voided"
    balances = [await balance_of(client, s) for s in shoppers]
    assert [(b["available"], b["held"]) for b in balances] == [(4500, 0), (5000, 0), (5000, 0)]
    # Nothing is left for a later sweep.
    await services.maintain_once()
    assert set((await releases_per_payment(services, [h["id"] for h in holds])).values()) == {1}
    await assert_ledger_consistent(services)


async def test_capture_and_void_racing_the_sweeper_after_expiry(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given 20 holds just past their expiry, when the store captures half of them and
    voids the other half while two sweepers run, every capture and every void is refused
    with invalid_state whether or not a sweeper got there first (an expired hold is the
    sweeper's to release), every hold ends expired and is released exactly once, and
    the whole balance is available again."""
    caplog.set_level(logging.INFO)
    admin = await api_key(services, "merchant")
    initial = PAIRS * 300
    shopper = await funded_shopper(client, admin, initial)
    holds = await authorized_payments(client, admin, shopper, PAIRS, amount=300, prefix="late")
    clock.advance(timedelta(seconds=services.settings.hold_ttl_s))

    requests = [
        client.post(f"/v1/payments/{h['id']}/capture", headers=admin)
        if i % 2 == 0
        else client.post(f"/v1/payments/{h['id']}/void", headers=admin)
        for i, h in enumerate(holds)
    ]
    results = await burst(*requests, *(services.maintain_once() for _ in range(SWEEPERS)))

    no_failed_maintenance(caplog)
    responses: list[httpx.Response] = results[:PAIRS]
    for hold, response in zip(holds, responses, strict=True):
        assert_problem(response, 409, "invalid_state")
        assert (await payment_of(client, admin, hold["id"]))["status"] == "expired"
    releases = await releases_per_payment(services, [h["id"] for h in holds])
    assert set(releases.values()) == {1}, releases
    assert await balance_of(client, shopper) == {
        "currency": "USD",
        "available": initial,
        "held": 0,
        "total": initial,
    }
    await assert_ledger_consistent(services)
