"""Checkout with the balance (SPEC §6 Payments, issue 3): how much the balance pays,
holds, captures, voids, expiry, refunds, idempotency keys and bad input, each checked
on the amounts, the balance, the shopper's history and the ledger's invariants."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from giftcard import ids, payments
from giftcard.clock import FrozenClock
from giftcard.db.tables import payments as payments_table
from giftcard.db.tables import refunds as refunds_table
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import ALL_ISOLATIONS, Shopper, api_key, assert_problem, issue, sign_up

pytestmark = ALL_ISOLATIONS

Json = dict[str, Any]


# --- helpers -------------------------------------------------------------------------


async def funded(client: httpx.AsyncClient, merchant: dict[str, str], amount: int) -> Shopper:
    """A new US shopper whose available balance is `amount` (no card when it is 0)."""
    shopper = await sign_up(client)
    if amount:
        [card] = await issue(client, merchant, amount=amount)
        redeemed = await client.post(
            "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
        )
        assert redeemed.status_code == 201, redeemed.text
    return shopper


async def pay(
    client: httpx.AsyncClient,
    merchant: dict[str, str],
    shopper: Shopper,
    amount: int,
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    body: Json = {
        "customer_id": shopper.id,
        "order_id": "order-1",
        "amount": amount,
        "currency": "USD",
        "use_balance": "max",
        "capture": True,
    }
    body.update(fields)
    return await client.post("/v1/payments", json=body, headers={**merchant, **(headers or {})})


async def paid(
    client: httpx.AsyncClient,
    merchant: dict[str, str],
    shopper: Shopper,
    amount: int,
    **fields: Any,
) -> Json:
    response = await pay(client, merchant, shopper, amount, **fields)
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


async def balance(client: httpx.AsyncClient, shopper: Shopper) -> Json:
    response = await client.get("/v1/me/balance", headers=shopper.auth)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def usd(available: int, held: int = 0) -> Json:
    return {"currency": "USD", "available": available, "held": held, "total": available + held}


async def history(client: httpx.AsyncClient, shopper: Shopper) -> list[tuple[str, int, int]]:
    """The shopper's history, newest first, as (type, signed amount, balance_after)."""
    response = await client.get("/v1/me/transactions?limit=100", headers=shopper.auth)
    assert response.status_code == 200, response.text
    return [(row["type"], row["amount"], row["balance_after"]) for row in response.json()["data"]]


async def fetch(client: httpx.AsyncClient, merchant: dict[str, str], payment_id: str) -> Json:
    response = await client.get(f"/v1/payments/{payment_id}", headers=merchant)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def count(services: Services, table: Any) -> int:
    async with services.db.transaction(write=False) as connection:
        return int((await connection.execute(select(func.count()).select_from(table))).scalar_one())


async def assert_verified(services: Services) -> None:
    report = await verify(services.db)
    assert report.problems == []


async def set_preference(client: httpx.AsyncClient, shopper: Shopper, preference: str) -> None:
    response = await client.patch(
        "/v1/me", json={"refund_preference": preference}, headers=shopper.auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["refund_preference"] == preference


def hold_ttl(services: Services) -> timedelta:
    return timedelta(seconds=services.settings.hold_ttl_s)


async def advance(
    client: httpx.AsyncClient, clock: FrozenClock, delta: timedelta, *shoppers: Shopper
) -> None:
    """Move the clock, and log the shoppers in again: their sessions may have lapsed."""
    clock.advance(delta)
    for shopper in shoppers:
        session = await client.post(
            "/v1/sessions", json={"email": shopper.email, "password": "correct horse battery"}
        )
        assert session.status_code == 201, session.text
        shopper.token = session.json()["token"]


# --- how much the balance pays ---------------------------------------------------------


async def test_use_balance_max_none_and_integer_split_the_order(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given shoppers with balances above, below and at zero, when they pay with "max",
    "none" or an integer, then gift_card_amount = min(requested, available, total) and
    other_amount is the rest, taken from the balance at once."""
    merchant = await api_key(services, "merchant")
    cases = [
        # (balance, order, use_balance, expected gift_card_amount)
        (5000, 3000, "max", 3000),  # balance > order: the order is paid in full
        (2000, 3000, "max", 2000),  # balance < order: all the balance, the rest elsewhere
        (0, 3000, "max", 0),  # no balance: all elsewhere
        (5000, 3000, "none", 0),
        (5000, 3000, 1200, 1200),  # less than available and order
        (1000, 3000, 2500, 1000),  # more than available: capped at the balance
        (5000, 3000, 3000, 3000),  # the whole order, exactly
        (5000, 3000, 0, 0),
    ]
    for number, (start, order, use, gift) in enumerate(cases):
        shopper = await funded(client, merchant, start)
        payment = await paid(
            client, merchant, shopper, order, use_balance=use, order_id=f"o-{number}"
        )
        why = (start, order, use)
        assert payment["status"] == "captured", why
        assert payment["amount"] == order, why
        assert payment["currency"] == "USD", why
        assert payment["customer_id"] == shopper.id, why
        assert payment["gift_card_amount"] == gift, why
        assert payment["other_amount"] == order - gift, why
        assert payment["captured_amount"] == order, why
        assert payment["refunded_amount"] == 0, why
        assert payment["hold_expires_at"] is None, why
        assert payment["refunds"] == {"data": [], "has_more": False}, why
        assert await balance(client, shopper) == usd(start - gift), why
        expected_history = [("payment", -gift, start - gift)] if gift else []
        if start:
            expected_history.append(("redemption", start, start))
        assert await history(client, shopper) == expected_history, why
    assert await count(services, payments_table) == len(cases)
    await assert_verified(services)


async def test_use_balance_defaults_to_max_and_capture_to_true(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a shopper with 4000, when a payment leaves out use_balance and capture,
    then the balance pays as much as it can and the payment is captured at once."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 4000)
    response = await client.post(
        "/v1/payments",
        json={"customer_id": shopper.id, "order_id": "o", "amount": 6000, "currency": "USD"},
        headers=merchant,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["gift_card_amount"], body["other_amount"]) == (
        "captured",
        4000,
        2000,
    )
    assert await balance(client, shopper) == usd(0)
    await assert_verified(services)


async def test_capture_false_places_a_hold(client: httpx.AsyncClient, services: Services) -> None:
    """Given a shopper with 5000, when a payment with capture false uses 3000, then
    available falls by 3000, held rises by 3000, total stays, and the hold expires
    after the configured TTL."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 3000, capture=False)
    assert payment["status"] == "authorized"
    assert (payment["gift_card_amount"], payment["other_amount"]) == (3000, 0)
    assert payment["captured_amount"] == 0
    expires_at = datetime.fromisoformat(payment["hold_expires_at"])
    created_at = datetime.fromisoformat(payment["created_at"])
    assert expires_at - created_at == hold_ttl(services)
    assert (await fetch(client, merchant, payment["id"])) == payment
    assert await balance(client, shopper) == usd(2000, held=3000)
    assert await history(client, shopper) == [("payment", -3000, 2000), ("redemption", 5000, 5000)]
    await assert_verified(services)


# --- refusals when creating ------------------------------------------------------------


async def test_currency_mismatch_is_refused(client: httpx.AsyncClient, services: Services) -> None:
    """Given a US shopper (USD) and a GB shopper (GBP), when a payment arrives in
    another currency than the shopper's, then it is 409 currency_mismatch on `currency`
    and nothing is held or created; in the shopper's own currency it goes through."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    british = await sign_up(client, region="GB")
    for who, currency in [(shopper, "EUR"), (shopper, "GBP"), (british, "USD")]:
        response = await pay(client, merchant, who, 1000, currency=currency)
        assert_problem(response, 409, "currency_mismatch", param="currency", why=currency)
    assert await balance(client, shopper) == usd(5000)
    assert await count(services, payments_table) == 0
    in_pounds = await paid(client, merchant, british, 1000, currency="GBP")
    assert (in_pounds["currency"], in_pounds["gift_card_amount"]) == ("GBP", 0)


async def test_unknown_or_malformed_customer_is_not_found(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given no such customer, when a payment names an unknown or malformed customer id,
    then it is 404 not_found on customer_id and no payment exists."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    for customer_id in [
        ids.format_id(ids.CUSTOMER, 987654),
        "cus_987654",
        "cus_abc",
        "nope",
        "pay_1",
        "cus_",
        "",
    ]:
        response = await pay(client, merchant, shopper, 1000, customer_id=customer_id)
        assert_problem(response, 404, "not_found", param="customer_id", why=customer_id)
    assert await balance(client, shopper) == usd(5000)
    assert await count(services, payments_table) == 0


async def test_one_live_payment_per_customer_and_order(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a live payment for an order, when the store pays the same order again for
    the same customer, then it is 409 invalid_state with nothing moved; after a void it
    is allowed, and another customer may always use the same order_id."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    other = await funded(client, merchant, 1000)

    held = await paid(client, merchant, shopper, 2000, order_id="A-1", capture=False)
    again = await pay(client, merchant, shopper, 2000, order_id="A-1", capture=False)
    assert_problem(again, 409, "invalid_state", param="order_id")
    captured_again = await pay(client, merchant, shopper, 500, order_id="A-1")
    assert_problem(captured_again, 409, "invalid_state", param="order_id")
    assert await balance(client, shopper) == usd(3000, held=2000)
    assert await count(services, payments_table) == 1

    theirs = await paid(client, merchant, other, 2000, order_id="A-1")
    assert (theirs["gift_card_amount"], theirs["other_amount"]) == (1000, 1000)
    assert await balance(client, other) == usd(0)

    voided = await client.post(f"/v1/payments/{held['id']}/void", headers=merchant)
    assert voided.status_code == 200, voided.text
    retried = await paid(client, merchant, shopper, 2000, order_id="A-1")
    assert retried["status"] == "captured"
    assert retried["id"] != held["id"]
    assert await balance(client, shopper) == usd(3000)

    # A captured payment is live too.
    assert_problem(await pay(client, merchant, shopper, 100, order_id="A-1"), 409, "invalid_state")
    assert await count(services, payments_table) == 3
    await assert_verified(services)


# --- capture ---------------------------------------------------------------------------


async def test_capture_in_full(client: httpx.AsyncClient, services: Services) -> None:
    """Given a 3000 hold on a 5000 balance, when it is captured without an amount, then
    the whole hold is taken: held 0, available 2000, total 2000, no release."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 3000, capture=False)
    response = await client.post(f"/v1/payments/{payment['id']}/capture", headers=merchant)
    assert response.status_code == 200, response.text
    captured = response.json()
    assert captured["status"] == "captured"
    assert captured["captured_amount"] == 3000
    assert captured["gift_card_amount"] == 3000
    assert await balance(client, shopper) == usd(2000)
    assert await history(client, shopper) == [("payment", -3000, 2000), ("redemption", 5000, 5000)]
    assert await fetch(client, merchant, payment["id"]) == captured
    await assert_verified(services)


async def test_partial_capture_releases_the_rest(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a 4000 hold, when 2500 is captured, then 1500 returns to available (a
    release in the history) and only 2500 leaves the balance."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 4000, capture=False)
    response = await client.post(
        f"/v1/payments/{payment['id']}/capture", json={"amount": 2500}, headers=merchant
    )
    assert response.status_code == 200, response.text
    captured = response.json()
    assert (captured["status"], captured["captured_amount"]) == ("captured", 2500)
    assert await balance(client, shopper) == usd(2500)
    assert await history(client, shopper) == [
        ("release", 1500, 2500),
        ("payment", -4000, 1000),
        ("redemption", 5000, 5000),
    ]
    await assert_verified(services)


async def test_partial_capture_of_a_split_payment_takes_the_balance_first(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a hold of 2000 from the balance on an 8000 order, when 5000 is captured,
    then the gift-card part is captured whole and nothing is released."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 2000)
    payment = await paid(client, merchant, shopper, 8000, capture=False)
    assert (payment["gift_card_amount"], payment["other_amount"]) == (2000, 6000)
    response = await client.post(
        f"/v1/payments/{payment['id']}/capture", json={"amount": 5000}, headers=merchant
    )
    assert response.status_code == 200, response.text
    assert response.json()["captured_amount"] == 5000
    assert await balance(client, shopper) == usd(0)
    assert [kind for kind, _, _ in await history(client, shopper)] == ["payment", "redemption"]
    await assert_verified(services)


async def test_a_payment_says_what_the_store_charges_elsewhere_before_and_after_capture(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a 10000 order held with 3000 from the balance, the payment says the store
    must charge 7000 elsewhere; after a partial capture of 5000 it says 2000 (5000 less
    the balance's 3000), and after one of 2000, that the balance paid 2000 and the store
    charges nothing, the rest of the hold released."""
    merchant = await api_key(services, "merchant")
    for capture, gift_after, other_after in ((5000, 3000, 2000), (2000, 2000, 0)):
        shopper = await funded(client, merchant, 3000)
        payment = await paid(client, merchant, shopper, 10000, capture=False)
        assert (payment["gift_card_amount"], payment["other_amount"]) == (3000, 7000)
        assert (payment["captured_gift_card_amount"], payment["captured_other_amount"]) == (0, 0)
        response = await client.post(
            f"/v1/payments/{payment['id']}/capture", json={"amount": capture}, headers=merchant
        )
        assert response.status_code == 200, response.text
        for shown in (response.json(), await fetch(client, merchant, payment["id"])):
            assert shown["captured_amount"] == capture
            assert (shown["gift_card_amount"], shown["other_amount"]) == (gift_after, other_after)
            assert (shown["captured_gift_card_amount"], shown["captured_other_amount"]) == (
                gift_after,
                other_after,
            )
        assert await balance(client, shopper) == usd(3000 - gift_after)
    await assert_verified(services)


async def test_refunds_are_listed_a_page_at_a_time(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a payment refunded 25 times, the payment shows its 10 newest refunds with
    has_more, and GET /v1/payments/{id}/refunds pages through all 25, newest first,
    without gaps or repeats; a cursor from another payment or of another kind is refused."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 2500)
    url = f"/v1/payments/{payment['id']}/refunds"
    made = []
    for _ in range(25):
        response = await client.post(url, json={"amount": 100}, headers=merchant)
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    newest_first = made[::-1]

    shown = await fetch(client, merchant, payment["id"])
    assert [item["id"] for item in shown["refunds"]["data"]] == newest_first[:10]
    assert shown["refunds"]["has_more"] is True
    assert shown["refunded_amount"] == 2500

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["starting_after"] = cursor
        page = await client.get(url, params=params, headers=merchant)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["data"]]
        if not page.json()["has_more"]:
            break
        cursor = seen[-1]
    assert seen == newest_first

    everything = await client.get(url, params={"limit": 100}, headers=merchant)
    assert [item["id"] for item in everything.json()["data"]] == newest_first
    assert everything.json()["has_more"] is False
    for bad in ({"limit": 0}, {"limit": 101}, {"starting_after": payment["id"]}):
        assert_problem(await client.get(url, params=bad, headers=merchant), 422, "validation_error")
    assert_problem(
        await client.get("/v1/payments/pay_999999/refunds", headers=merchant), 404, "not_found"
    )
    shopper_token = await client.get(url, headers=shopper.auth)
    assert_problem(shopper_token, 403, "forbidden")


async def test_capture_more_than_authorized_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a 3000 authorization, when 3001 is captured, then it is 422 on `amount`
    and the hold stays as it was."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 3000, capture=False)
    response = await client.post(
        f"/v1/payments/{payment['id']}/capture", json={"amount": 3001}, headers=merchant
    )
    assert_problem(response, 422, "validation_error", param="amount")
    assert (await fetch(client, merchant, payment["id"]))["status"] == "authorized"
    assert await balance(client, shopper) == usd(2000, held=3000)
    await assert_verified(services)


async def test_capture_of_a_voided_payment_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a voided payment, when it is captured, then it is 409 invalid_state and the
    released money stays available."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 3000, capture=False)
    assert (await client.post(f"/v1/payments/{payment['id']}/void", headers=merchant)).is_success
    response = await client.post(f"/v1/payments/{payment['id']}/capture", headers=merchant)
    assert_problem(response, 409, "invalid_state")
    assert (await fetch(client, merchant, payment["id"]))["status"] == "voided"
    assert await balance(client, shopper) == usd(5000)
    await assert_verified(services)


async def test_capture_of_a_captured_payment_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a payment captured at once, when it is captured again, then it is 409
    invalid_state and nothing more leaves the balance."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 3000)
    response = await client.post(f"/v1/payments/{payment['id']}/capture", headers=merchant)
    assert_problem(response, 409, "invalid_state")
    assert await balance(client, shopper) == usd(2000)
    await assert_verified(services)


async def test_capture_or_void_after_the_hold_expired_is_refused(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a hold past its TTL that no sweeper has released yet, when it is captured or
    voided, then it is 409 invalid_state and the money is still held (for the sweeper,
    which marks it expired)."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 3000, capture=False)
    await advance(client, clock, hold_ttl(services) + timedelta(seconds=1), shopper)
    response = await client.post(f"/v1/payments/{payment['id']}/capture", headers=merchant)
    assert_problem(response, 409, "invalid_state")
    voided = await client.post(f"/v1/payments/{payment['id']}/void", headers=merchant)
    assert_problem(voided, 409, "invalid_state")
    assert await balance(client, shopper) == usd(2000, held=3000)
    await services.maintain_once()
    assert await balance(client, shopper) == usd(5000)
    after_sweep = await client.post(f"/v1/payments/{payment['id']}/capture", headers=merchant)
    assert_problem(after_sweep, 409, "invalid_state")
    assert (await fetch(client, merchant, payment["id"]))["status"] == "expired"
    await assert_verified(services)


async def test_capture_just_before_expiry_succeeds(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a hold one second short of its TTL, when it is captured, then it is
    captured (the edge where valid becomes invalid is the TTL itself)."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 3000, capture=False)
    await advance(client, clock, hold_ttl(services) - timedelta(seconds=1), shopper)
    response = await client.post(f"/v1/payments/{payment['id']}/capture", headers=merchant)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "captured"
    assert await balance(client, shopper) == usd(2000)
    await assert_verified(services)


# --- void ------------------------------------------------------------------------------


async def test_void_releases_the_hold(client: httpx.AsyncClient, services: Services) -> None:
    """Given a 3000 hold, when it is voided, then the payment is voided, the whole hold
    is available again, and the history shows a release."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 4500, capture=False, use_balance=3000)
    response = await client.post(f"/v1/payments/{payment['id']}/void", headers=merchant)
    assert response.status_code == 200, response.text
    voided = response.json()
    assert voided["status"] == "voided"
    assert voided["captured_amount"] == 0
    assert await balance(client, shopper) == usd(5000)
    assert await history(client, shopper) == [
        ("release", 3000, 5000),
        ("payment", -3000, 2000),
        ("redemption", 5000, 5000),
    ]
    rows = (await client.get("/v1/me/transactions", headers=shopper.auth)).json()["data"]
    assert [row.get("payment_id") for row in rows[:2]] == [payment["id"], payment["id"]]
    assert all(row["description"] for row in rows)
    await assert_verified(services)


async def test_void_of_a_captured_payment_or_twice_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a captured payment and a voided one, when either is voided, then it is 409
    invalid_state and no money moves."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    captured = await paid(client, merchant, shopper, 1000, order_id="c")
    held = await paid(client, merchant, shopper, 1500, order_id="h", capture=False)
    assert (await client.post(f"/v1/payments/{held['id']}/void", headers=merchant)).is_success
    before = await history(client, shopper)
    for payment in (captured, held):
        response = await client.post(f"/v1/payments/{payment['id']}/void", headers=merchant)
        assert_problem(response, 409, "invalid_state", why=payment["id"])
    assert (await fetch(client, merchant, captured["id"]))["status"] == "captured"
    assert (await fetch(client, merchant, held["id"]))["status"] == "voided"
    assert await balance(client, shopper) == usd(4000)
    assert await history(client, shopper) == before
    await assert_verified(services)


async def test_void_of_a_payment_that_used_no_balance(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an authorization that used none of the balance, when it is voided, then it
    is voided and the balance and history are untouched."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 2000, capture=False, use_balance="none")
    assert await balance(client, shopper) == usd(5000)
    response = await client.post(f"/v1/payments/{payment['id']}/void", headers=merchant)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "voided"
    assert await balance(client, shopper) == usd(5000)
    assert await history(client, shopper) == [("redemption", 5000, 5000)]
    await assert_verified(services)


# --- holds that expire -----------------------------------------------------------------


async def test_the_sweeper_releases_expired_holds_only(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a hold, when the sweeper runs before its TTL it does nothing; when it runs
    after the TTL, then the payment is expired, the balance restored, and the history
    shows one release."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 3000, capture=False)
    captured = await paid(client, merchant, shopper, 500, order_id="other")

    await advance(client, clock, hold_ttl(services) - timedelta(seconds=1), shopper)
    await services.maintain_once()
    assert (await fetch(client, merchant, payment["id"]))["status"] == "authorized"
    assert await balance(client, shopper) == usd(1500, held=3000)

    await advance(client, clock, timedelta(seconds=2), shopper)
    await services.maintain_once()
    expired = await fetch(client, merchant, payment["id"])
    assert expired["status"] == "expired"
    assert expired["captured_amount"] == 0
    assert (await fetch(client, merchant, captured["id"]))["status"] == "captured"
    assert await balance(client, shopper) == usd(4500)
    assert await history(client, shopper) == [
        ("release", 3000, 4500),
        ("payment", -500, 1500),
        ("payment", -3000, 2000),
        ("redemption", 5000, 5000),
    ]

    await services.maintain_once()
    assert await balance(client, shopper) == usd(4500)
    assert [kind for kind, _, _ in await history(client, shopper)].count("release") == 1
    void = await client.post(f"/v1/payments/{payment['id']}/void", headers=merchant)
    assert_problem(void, 409, "invalid_state")
    await assert_verified(services)


async def test_concurrent_sweeps_release_each_hold_once(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given four expired holds (one of them holding nothing), when two sweeps run at
    once, then together they expire each exactly once and every balance is restored."""
    merchant = await api_key(services, "merchant")
    shoppers = [await funded(client, merchant, 1000 * (n + 1)) for n in range(3)]
    for shopper in shoppers:
        await paid(client, merchant, shopper, 800, capture=False)
    # A hold that took nothing from the balance expires too, moving no money.
    nothing_held = await paid(
        client, merchant, shoppers[0], 800, capture=False, use_balance="none", order_id="none"
    )
    await advance(client, clock, hold_ttl(services) + timedelta(seconds=1), *shoppers)

    first, second = await asyncio.gather(
        payments.expire_holds(services.db, clock=services.clock),
        payments.expire_holds(services.db, clock=services.clock),
    )
    assert first + second == 4
    await asyncio.gather(services.maintain_once(), services.maintain_once())
    for n, shopper in enumerate(shoppers):
        assert await balance(client, shopper) == usd(1000 * (n + 1))
        kinds = [kind for kind, _, _ in await history(client, shopper)]
        assert kinds == ["release", "payment", "redemption"]
    assert (await fetch(client, merchant, nothing_held["id"]))["status"] == "expired"
    assert await balance(client, shoppers[0]) == usd(1000)
    await assert_verified(services)


# --- refunds ---------------------------------------------------------------------------


async def test_partial_refunds_up_to_the_captured_amount(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a captured 10000 order that the balance paid 3000 of (preference
    original_payment_method), when it is refunded in parts, then the gift-card part goes
    back to the balance first, the rest is reported for the card, an over-refund changes
    nothing, and the payment ends "refunded" with every refund listed."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 3000)
    payment = await paid(client, merchant, shopper, 10000)
    assert (payment["gift_card_amount"], payment["other_amount"]) == (3000, 7000)
    refunds_url = f"/v1/payments/{payment['id']}/refunds"

    expected = [  # (amount, to_gift_card_balance, to_original_payment_method, available)
        (2000, 2000, 0, 2000),
        (4000, 1000, 3000, 3000),
    ]
    for amount, to_balance, to_card, available in expected:
        response = await client.post(refunds_url, json={"amount": amount}, headers=merchant)
        assert response.status_code == 201, response.text
        made = response.json()
        assert made["payment_id"] == payment["id"]
        assert (made["amount"], made["currency"]) == (amount, "USD")
        assert (made["to_gift_card_balance"], made["to_original_payment_method"]) == (
            to_balance,
            to_card,
        )
        assert await balance(client, shopper) == usd(available)
    assert (await fetch(client, merchant, payment["id"]))["status"] == "captured"

    before = await history(client, shopper)
    over = await client.post(refunds_url, json={"amount": 4001}, headers=merchant)
    assert_problem(over, 409, "invalid_state", param="amount")
    after_refusal = await fetch(client, merchant, payment["id"])
    assert (after_refusal["refunded_amount"], len(after_refusal["refunds"]["data"])) == (6000, 2)
    assert await history(client, shopper) == before
    assert await balance(client, shopper) == usd(3000)

    last = await client.post(refunds_url, json={"amount": 4000}, headers=merchant)
    assert last.status_code == 201, last.text
    assert (last.json()["to_gift_card_balance"], last.json()["to_original_payment_method"]) == (
        0,
        4000,
    )
    shown = await fetch(client, merchant, payment["id"])
    assert shown["status"] == "refunded"
    assert (shown["captured_amount"], shown["refunded_amount"]) == (10000, 10000)
    # Newest first, like every list.
    listed = shown["refunds"]["data"]
    assert shown["refunds"]["has_more"] is False
    assert [item["amount"] for item in listed] == [4000, 4000, 2000]
    assert [item["to_gift_card_balance"] for item in listed] == [0, 1000, 2000]
    assert [item["to_original_payment_method"] for item in listed] == [4000, 3000, 0]
    assert listed[0] == last.json()
    assert (
        shown["refunded_to_gift_card_balance"],
        shown["refunded_to_original_payment_method"],
    ) == (
        3000,
        7000,
    )

    assert_problem(
        await client.post(refunds_url, json={"amount": 1}, headers=merchant), 409, "invalid_state"
    )
    assert await balance(client, shopper) == usd(3000)
    assert await history(client, shopper) == [
        ("refund", 1000, 3000),
        ("refund", 2000, 2000),
        ("payment", -3000, 0),
        ("redemption", 3000, 3000),
    ]
    assert await count(services, refunds_table) == 3
    await assert_verified(services)


async def test_refund_preference_gift_card_balance_credits_the_other_part_now(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a shopper who prefers gift_card_balance and a 6000 order the balance paid
    1000 of, when 4000 is refunded, then all 4000 is credited to the balance now and
    nothing goes to the original payment method."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 1000)
    await set_preference(client, shopper, "gift_card_balance")
    payment = await paid(client, merchant, shopper, 6000)
    response = await client.post(
        f"/v1/payments/{payment['id']}/refunds", json={"amount": 4000}, headers=merchant
    )
    assert response.status_code == 201, response.text
    made = response.json()
    assert (made["to_gift_card_balance"], made["to_original_payment_method"]) == (4000, 0)
    assert await balance(client, shopper) == usd(4000)
    assert await history(client, shopper) == [
        ("refund", 4000, 4000),
        ("payment", -1000, 0),
        ("redemption", 1000, 1000),
    ]
    await assert_verified(services)


async def test_refund_of_a_payment_without_balance_follows_the_preference(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given two payments that used no balance, when each is refunded, then with
    gift_card_balance the money is credited to the balance, and with
    original_payment_method it is reported for the card and the balance is untouched."""
    merchant = await api_key(services, "merchant")
    to_balance = await funded(client, merchant, 0)
    await set_preference(client, to_balance, "gift_card_balance")
    to_card = await funded(client, merchant, 2000)

    first = await paid(client, merchant, to_balance, 2500, use_balance="none")
    second = await paid(client, merchant, to_card, 2500, use_balance="none")
    assert first["gift_card_amount"] == second["gift_card_amount"] == 0

    made = await client.post(
        f"/v1/payments/{first['id']}/refunds", json={"amount": 2500}, headers=merchant
    )
    assert made.status_code == 201, made.text
    assert (made.json()["to_gift_card_balance"], made.json()["to_original_payment_method"]) == (
        2500,
        0,
    )
    assert await balance(client, to_balance) == usd(2500)
    assert await history(client, to_balance) == [("refund", 2500, 2500)]
    assert (await fetch(client, merchant, first["id"]))["status"] == "refunded"

    made = await client.post(
        f"/v1/payments/{second['id']}/refunds", json={"amount": 1000}, headers=merchant
    )
    assert made.status_code == 201, made.text
    assert (made.json()["to_gift_card_balance"], made.json()["to_original_payment_method"]) == (
        0,
        1000,
    )
    assert await balance(client, to_card) == usd(2000)
    assert await history(client, to_card) == [("redemption", 2000, 2000)]
    await assert_verified(services)


async def test_refund_follows_the_preference_at_refund_time(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a split payment, when the shopper changes the refund preference between two
    refunds, then each refund's other part follows the preference of its own moment."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 1000)
    payment = await paid(client, merchant, shopper, 5000)
    refunds_url = f"/v1/payments/{payment['id']}/refunds"
    first = (await client.post(refunds_url, json={"amount": 2000}, headers=merchant)).json()
    assert (first["to_gift_card_balance"], first["to_original_payment_method"]) == (1000, 1000)
    await set_preference(client, shopper, "gift_card_balance")
    second = (await client.post(refunds_url, json={"amount": 3000}, headers=merchant)).json()
    assert (second["to_gift_card_balance"], second["to_original_payment_method"]) == (3000, 0)
    assert await balance(client, shopper) == usd(4000)
    assert (await fetch(client, merchant, payment["id"]))["status"] == "refunded"
    await assert_verified(services)


async def test_refund_of_a_partially_captured_hold_is_bounded_by_the_capture(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a 5000 hold captured for 3000, when 3001 is refunded it is refused, and
    when 3000 is refunded the payment is fully refunded and the balance whole again."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 5000, capture=False)
    captured = await client.post(
        f"/v1/payments/{payment['id']}/capture", json={"amount": 3000}, headers=merchant
    )
    assert captured.status_code == 200, captured.text
    refunds_url = f"/v1/payments/{payment['id']}/refunds"
    assert_problem(
        await client.post(refunds_url, json={"amount": 3001}, headers=merchant),
        409,
        "invalid_state",
        param="amount",
    )
    assert await balance(client, shopper) == usd(2000)
    made = await client.post(refunds_url, json={"amount": 3000}, headers=merchant)
    assert made.status_code == 201, made.text
    assert made.json()["to_gift_card_balance"] == 3000
    assert await balance(client, shopper) == usd(5000)
    shown = await fetch(client, merchant, payment["id"])
    assert (shown["status"], shown["captured_amount"], shown["refunded_amount"]) == (
        "refunded",
        3000,
        3000,
    )
    await assert_verified(services)


async def test_refund_of_an_uncaptured_payment_is_refused(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given an authorized, a voided and an expired payment, when each is refunded, then
    it is 409 invalid_state and no refund or money movement happens."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    authorized = await paid(client, merchant, shopper, 1000, order_id="a", capture=False)
    voided = await paid(client, merchant, shopper, 1000, order_id="v", capture=False)
    assert (await client.post(f"/v1/payments/{voided['id']}/void", headers=merchant)).is_success
    expired = await paid(client, merchant, shopper, 1000, order_id="e", capture=False)
    await advance(client, clock, hold_ttl(services) + timedelta(seconds=1), shopper)
    await services.maintain_once()
    # The first one expired too by now; make a fresh authorization for the authorized case.
    assert (await fetch(client, merchant, authorized["id"]))["status"] == "expired"
    authorized = await paid(client, merchant, shopper, 1000, order_id="a2", capture=False)
    before = await history(client, shopper)
    for payment in (authorized, voided, expired):
        response = await client.post(
            f"/v1/payments/{payment['id']}/refunds", json={"amount": 100}, headers=merchant
        )
        assert_problem(response, 409, "invalid_state", why=payment["order_id"])
    assert await count(services, refunds_table) == 0
    assert await history(client, shopper) == before
    assert await balance(client, shopper) == usd(4000, held=1000)
    await assert_verified(services)


# --- idempotency keys ------------------------------------------------------------------


async def test_idempotent_create(client: httpx.AsyncClient, services: Services) -> None:
    """Given a payment made with an Idempotency-Key, when the same request is retried it
    gets the same response and nothing moves again; the same key with another body is
    409 idempotency_key_reused."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    key = {"Idempotency-Key": "create-1"}
    first = await pay(client, merchant, shopper, 2000, headers=key)
    assert first.status_code == 201, first.text
    retry = await pay(client, merchant, shopper, 2000, headers=key)
    assert retry.status_code == 201, retry.text
    assert retry.json() == first.json()
    assert retry.headers.get("idempotent-replayed") == "true"
    assert await balance(client, shopper) == usd(3000)
    assert await count(services, payments_table) == 1

    reused = await pay(client, merchant, shopper, 2001, headers=key)
    assert_problem(reused, 409, "idempotency_key_reused")
    reused = await pay(client, merchant, shopper, 2000, headers=key, order_id="order-2")
    assert_problem(reused, 409, "idempotency_key_reused")
    assert await balance(client, shopper) == usd(3000)
    assert await count(services, payments_table) == 1

    # Keys belong to their caller: another merchant's identical key is its own request.
    other_merchant = await api_key(services, "merchant")
    theirs = await pay(client, other_merchant, shopper, 500, headers=key, order_id="o-3")
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["id"] != first.json()["id"]
    # The key's length is 1 to 255 characters.
    too_long = await pay(
        client, merchant, shopper, 500, headers={"Idempotency-Key": "k" * 256}, order_id="o-4"
    )
    assert_problem(too_long, 422, "validation_error", param="Idempotency-Key")
    longest = await pay(
        client, merchant, shopper, 500, headers={"Idempotency-Key": "k" * 255}, order_id="o-4"
    )
    assert longest.status_code == 201, longest.text
    assert await balance(client, shopper) == usd(2000)
    assert await count(services, payments_table) == 3
    await assert_verified(services)


async def test_idempotent_capture(client: httpx.AsyncClient, services: Services) -> None:
    """Given a capture made with an Idempotency-Key, when it is retried it gets the same
    response (not invalid_state) and captures once; another amount under the key is
    idempotency_key_reused."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 4000, capture=False)
    url = f"/v1/payments/{payment['id']}/capture"
    key = {**merchant, "Idempotency-Key": "capture-1"}
    first = await client.post(url, json={"amount": 3000}, headers=key)
    assert first.status_code == 200, first.text
    retry = await client.post(url, json={"amount": 3000}, headers=key)
    assert (retry.status_code, retry.json()) == (200, first.json())
    assert_problem(
        await client.post(url, json={"amount": 2000}, headers=key), 409, "idempotency_key_reused"
    )
    assert await balance(client, shopper) == usd(2000)
    assert [kind for kind, _, _ in await history(client, shopper)] == [
        "release",
        "payment",
        "redemption",
    ]
    await assert_verified(services)


async def test_idempotent_void(client: httpx.AsyncClient, services: Services) -> None:
    """Given a void made with an Idempotency-Key, when it is retried it gets the same 200
    and releases once; the key on another payment's void is idempotency_key_reused."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 1000, capture=False, order_id="1")
    other = await paid(client, merchant, shopper, 1000, capture=False, order_id="2")
    key = {**merchant, "Idempotency-Key": "void-1"}
    first = await client.post(f"/v1/payments/{payment['id']}/void", headers=key)
    assert first.status_code == 200, first.text
    retry = await client.post(f"/v1/payments/{payment['id']}/void", headers=key)
    assert (retry.status_code, retry.json()) == (200, first.json())
    assert_problem(
        await client.post(f"/v1/payments/{other['id']}/void", headers=key),
        409,
        "idempotency_key_reused",
    )
    assert (await fetch(client, merchant, other["id"]))["status"] == "authorized"
    assert await balance(client, shopper) == usd(4000, held=1000)
    assert [kind for kind, _, _ in await history(client, shopper)].count("release") == 1
    await assert_verified(services)


async def test_idempotent_refund(client: httpx.AsyncClient, services: Services) -> None:
    """Given a refund made with an Idempotency-Key, when it is retried it gets the same
    201 with the same refund id and refunds once; another amount under the key is
    idempotency_key_reused."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 4000)
    url = f"/v1/payments/{payment['id']}/refunds"
    key = {**merchant, "Idempotency-Key": "refund-1"}
    first = await client.post(url, json={"amount": 1500}, headers=key)
    assert first.status_code == 201, first.text
    retry = await client.post(url, json={"amount": 1500}, headers=key)
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert_problem(
        await client.post(url, json={"amount": 1000}, headers=key), 409, "idempotency_key_reused"
    )
    shown = await fetch(client, merchant, payment["id"])
    assert shown["refunded_amount"] == 1500
    assert [item["id"] for item in shown["refunds"]["data"]] == [first.json()["id"]]
    assert await balance(client, shopper) == usd(2500)
    assert await count(services, refunds_table) == 1
    await assert_verified(services)


async def test_idempotent_refusal_is_replayed(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an over-refund refused under an Idempotency-Key, when the same request is
    retried, then the same 409 comes back and nothing is refunded."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 1000)
    url = f"/v1/payments/{payment['id']}/refunds"
    key = {**merchant, "Idempotency-Key": "over-1"}
    first = await client.post(url, json={"amount": 1001}, headers=key)
    assert_problem(first, 409, "invalid_state", param="amount")
    retry = await client.post(url, json={"amount": 1001}, headers=key)
    assert_problem(retry, 409, "invalid_state", param="amount")
    assert retry.json() == first.json()
    assert await count(services, refunds_table) == 0
    assert await balance(client, shopper) == usd(4000)


# --- bad input -------------------------------------------------------------------------


async def test_bad_payment_bodies_are_refused_and_change_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a shopper with 5000, when a payment has a zero, negative, fractional or
    textual amount, a use_balance out of range or unknown, or an empty or too long
    order_id, then each is a 422 problem and no payment or balance change happens."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    bad: list[tuple[Json, str | None]] = [
        ({"amount": 0}, "amount"),
        ({"amount": -1}, "amount"),
        ({"amount": 10.5}, "amount"),
        ({"amount": 1000.0}, "amount"),
        ({"amount": "1000"}, "amount"),
        ({"amount": None}, "amount"),
        ({"amount": 1_000_000_001}, "amount"),  # above AMOUNT_MINOR_MAX
        ({"customer_id": 1}, "customer_id"),
        ({"use_balance": 1001}, "use_balance"),  # larger than the order
        ({"use_balance": -1}, None),
        ({"use_balance": "all"}, None),
        ({"use_balance": 10.5}, None),
        ({"use_balance": "500"}, None),
        ({"use_balance": True}, None),
        ({"order_id": ""}, "order_id"),
        ({"order_id": "x" * 256}, "order_id"),
        ({"order_id": "line\nbreak"}, "order_id"),
        ({"capture": "yes"}, "capture"),
        ({"currency": "US"}, "currency"),
        ({"tip": 5}, "tip"),
    ]
    for change, param in bad:
        fields = {"amount": 1000, **change}
        response = await pay(client, merchant, shopper, fields.pop("amount"), **fields)
        body = assert_problem(response, 422, "validation_error", why=str(change))
        if param is not None:
            assert body["param"] == param, (change, body)
        else:
            assert str(body["param"]).startswith("use_balance"), (change, body)
    missing = await client.post(
        "/v1/payments", json={"customer_id": shopper.id, "amount": 1000}, headers=merchant
    )
    assert_problem(missing, 422, "validation_error")
    assert await count(services, payments_table) == 0
    assert await balance(client, shopper) == usd(5000)
    # The edges that are still valid: an order_id of 255 characters, use_balance = order.
    edge = await paid(client, merchant, shopper, 1000, order_id="x" * 255, use_balance=1000)
    assert edge["gift_card_amount"] == 1000
    assert await balance(client, shopper) == usd(4000)


async def test_bad_capture_and_refund_amounts_are_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an authorized and a captured payment, when capture or refund amounts are
    zero, negative, fractional or text, then each is 422 on `amount` and nothing
    changes."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    held = await paid(client, merchant, shopper, 1000, capture=False, order_id="h")
    captured = await paid(client, merchant, shopper, 1000, order_id="c")
    for amount in [0, -5, 10.5, 500.0, "500", True]:
        response = await client.post(
            f"/v1/payments/{held['id']}/capture", json={"amount": amount}, headers=merchant
        )
        assert_problem(response, 422, "validation_error", param="amount", why=repr(amount))
        response = await client.post(
            f"/v1/payments/{captured['id']}/refunds", json={"amount": amount}, headers=merchant
        )
        assert_problem(response, 422, "validation_error", param="amount", why=repr(amount))
    no_amount = await client.post(
        f"/v1/payments/{captured['id']}/refunds", json={}, headers=merchant
    )
    assert_problem(no_amount, 422, "validation_error", param="amount")
    assert (await fetch(client, merchant, held["id"]))["status"] == "authorized"
    assert (await fetch(client, merchant, captured["id"]))["refunded_amount"] == 0
    assert await count(services, refunds_table) == 0
    assert await balance(client, shopper) == usd(3000, held=1000)
    await assert_verified(services)


async def test_only_merchant_and_admin_keys_may_use_payments(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a held payment, when a customer token, a support key or no credentials call
    each payment endpoint, then it is 403 or 401 and nothing changes; an admin key may."""
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 1000, capture=False)
    body = {
        "customer_id": shopper.id,
        "order_id": "o-2",
        "amount": 500,
        "currency": "USD",
        "use_balance": "max",
    }
    calls: list[tuple[str, str, Json | None]] = [
        ("POST", "/v1/payments", body),
        ("POST", f"/v1/payments/{payment['id']}/capture", None),
        ("POST", f"/v1/payments/{payment['id']}/void", None),
        ("POST", f"/v1/payments/{payment['id']}/refunds", {"amount": 100}),
        ("GET", f"/v1/payments/{payment['id']}", None),
    ]
    for method, url, json in calls:
        for headers, status, code in [
            (shopper.auth, 403, "forbidden"),
            (support, 403, "forbidden"),
            ({}, 401, "unauthorized"),
            ({"Authorization": "Bearer not-a-real-key"}, 401, "unauthorized"),
        ]:
            response = await client.request(method, url, json=json, headers=headers)
            assert_problem(response, status, code, why=f"{method} {url} {headers}")
    assert (await fetch(client, merchant, payment["id"]))["status"] == "authorized"
    assert await count(services, payments_table) == 1
    assert await balance(client, shopper) == usd(4000, held=1000)

    admin = await api_key(services, "admin")
    voided = await client.post(f"/v1/payments/{payment['id']}/void", headers=admin)
    assert voided.status_code == 200, voided.text
    assert await balance(client, shopper) == usd(5000)
    await assert_verified(services)


async def test_unknown_payment_is_not_found(client: httpx.AsyncClient, services: Services) -> None:
    """Given one payment, when an unknown or malformed payment id is read, captured,
    voided or refunded, then each is 404 not_found and nothing changes."""
    merchant = await api_key(services, "merchant")
    shopper = await funded(client, merchant, 5000)
    payment = await paid(client, merchant, shopper, 1000, capture=False)
    for payment_id in [
        ids.format_id(ids.PAYMENT, 987654),
        "pay_987654",
        "pay_x",
        "cus_1",
        "1",
        "pay_" + "9" * 30,
    ]:
        for method, suffix, json in [
            ("GET", "", None),
            ("POST", "/capture", None),
            ("POST", "/void", None),
            ("POST", "/refunds", {"amount": 100}),
        ]:
            response = await client.request(
                method, f"/v1/payments/{payment_id}{suffix}", json=json, headers=merchant
            )
            assert_problem(response, 404, "not_found", why=f"{method} {payment_id}{suffix}")
    assert (await fetch(client, merchant, payment["id"]))["status"] == "authorized"
    assert await count(services, payments_table) == 1
    assert await count(services, refunds_table) == 0
    assert await balance(client, shopper) == usd(4000, held=1000)
    await assert_verified(services)
