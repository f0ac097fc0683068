"""Group commit of payments on PostgreSQL (`giftcard.payments._pay_batch`): the payments
of a process that come together commit in one transaction, each taking its part of its
customer's balance in its turn; what a batch cannot settle runs by itself, and a batch
that fails leaves every payment in it to run by itself."""

from __future__ import annotations

import uuid
from dataclasses import replace

import httpx
import pytest

from giftcard.config import Settings
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import Shopper, api_key, batches_of_more_than, burst, sent_statements
from tests.integration.test_payments_concurrency import balance_of, funded_shopper, pay

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

CONCURRENCY = 32


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A pool with room for every request at once."""
    return replace(settings, database_pool_size=CONCURRENCY)


def keyed(key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key or uuid.uuid4().hex}


@pytest.mark.parametrize("capture", [True, False], ids=["captured", "held"])
async def test_payments_from_one_balance_take_it_in_turn_in_one_transaction(
    client: httpx.AsyncClient, services: Services, capture: bool
) -> None:
    """Given a balance of 5,000 and 32 orders of 300 paid from it at once, then the
    balance pays 16 orders in full, one in part and none of the rest, never more than it
    holds; each payment's journal transaction records the balance right after it; and
    most of them were settled together, in far fewer statements than alone."""
    admin = await api_key(services)
    merchant = await api_key(services, "merchant")
    shopper = await funded_shopper(client, admin, 5000)
    before = batches_of_more_than("payments", 8)
    with sent_statements(services.db) as sent:
        responses = await burst(
            *(
                pay(
                    client,
                    merchant,
                    shopper,
                    f"turn-{n}",
                    300,
                    capture=capture,
                    headers=keyed(),
                )
                for n in range(CONCURRENCY)
            )
        )
    assert [r.status_code for r in responses] == [201] * CONCURRENCY, [r.text for r in responses]
    assert batches_of_more_than("payments", 8) > before, "the payments did not go together"
    assert len(sent) < CONCURRENCY * 3, len(sent)
    gifts = sorted((r.json()["gift_card_amount"] for r in responses), reverse=True)
    assert gifts == [300] * 16 + [200] + [0] * 15
    balance = await balance_of(client, shopper)
    assert balance["available"] == 0
    assert balance["held"] == (0 if capture else 5000)
    history = (await client.get("/v1/me/transactions?limit=100", headers=shopper.auth)).json()[
        "data"
    ]
    afters = [item["balance_after"] for item in history if item["type"] != "redemption"]
    assert sorted(afters, reverse=True) == [5000 - 300 * n for n in range(1, 17)] + [0]
    assert (await verify(services.db)).problems == []


async def test_what_a_payment_batch_cannot_settle_is_answered_as_if_alone(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given good payments sent together with one for an unknown customer, one in another
    currency, one for an order that already has a live payment, one order twice under two
    keys and one request twice under one key, then the good ones are paid and every other
    request gets the answer it would have got alone."""
    admin = await api_key(services)
    merchant = await api_key(services, "merchant")
    shopper = await funded_shopper(client, admin, 10_000)
    first = await pay(client, merchant, shopper, "paid-before", 100, headers=keyed())
    assert first.status_code == 201
    nobody = Shopper("cus_" + "2" * 13, "nobody@example.com", "", "US")
    responses = await burst(
        *(pay(client, merchant, shopper, f"good-{n}", 100, headers=keyed()) for n in range(8)),
        pay(client, merchant, nobody, "nobody", 100, headers=keyed()),
        pay(client, merchant, shopper, "euros", 100, currency="EUR", headers=keyed()),
        pay(client, merchant, shopper, "twice", 100, headers=keyed("twice-a")),
        pay(client, merchant, shopper, "twice", 100, headers=keyed("twice-b")),
        pay(client, merchant, shopper, "same-key", 100, headers=keyed("same-key")),
        pay(client, merchant, shopper, "same-key", 100, headers=keyed("same-key")),
    )
    assert [r.status_code for r in responses[:8]] == [201] * 8, [r.text for r in responses]
    unknown, euros, twice_a, twice_b, same_a, same_b = responses[8:]
    assert unknown.status_code == 404
    assert euros.json()["code"] == "currency_mismatch"
    assert sorted([twice_a.status_code, twice_b.status_code]) == [201, 409]
    assert same_a.json() == same_b.json()
    assert {
        same_a.headers.get("Idempotent-Replayed"),
        same_b.headers.get("Idempotent-Replayed"),
    } == {
        None,
        "true",
    }
    again = await pay(client, merchant, shopper, "paid-before", 100, headers=keyed())
    assert again.json()["code"] == "invalid_state"
    assert (await balance_of(client, shopper))["available"] == 10_000 - 11 * 100
    assert (await verify(services.db)).problems == []


async def test_a_payment_batch_that_fails_leaves_each_payment_to_run_alone(
    client: httpx.AsyncClient, services: Services, failing_batches: list[int]
) -> None:
    """Given a batch whose statement fails (here: the journal refuses it), then each of its
    payments ran again by itself and was paid once, and nothing of the batch was kept."""
    admin = await api_key(services)
    merchant = await api_key(services, "merchant")
    shopper = await funded_shopper(client, admin, 1000)
    responses = await burst(
        *(pay(client, merchant, shopper, f"fail-{n}", 100, headers=keyed()) for n in range(12))
    )
    assert failing_batches, "no batch was tried"
    assert [r.status_code for r in responses] == [201] * 12, [r.text for r in responses]
    assert sorted(r.json()["gift_card_amount"] for r in responses) == [0, 0] + [100] * 10
    assert (await balance_of(client, shopper))["available"] == 0
    assert (await verify(services.db)).problems == []
