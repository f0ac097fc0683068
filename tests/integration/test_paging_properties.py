"""Paging properties (SPEC §6 "Lists use cursor pagination"): whatever the history and
whatever limits a client pages with, it reads every item exactly once, newest first.

`test_history_paging.py` pages one by one through fixed histories; here hypothesis
picks the history (redemptions, payments and adjustments of any amounts; gifts bought)
and the sequence of limits, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.services import Services
from tests.conftest import Shopper, api_key, issue, sign_up

EXAMPLES_MAX = 8
HISTORY_LENGTH_MAX = 12
GIFTS_MAX = 8
PAGE_SIZE_MAX = 100
LIMIT_GENEROUS = "100000/hour"

# Small limits most of the time, where the page boundaries fall inside the history.
limits = st.lists(
    st.one_of(st.integers(1, 3), st.integers(1, PAGE_SIZE_MAX)), min_size=1, max_size=20
)
movements = st.lists(
    st.tuples(st.sampled_from(["redemption", "payment", "adjustment"]), st.integers(1, 5000)),
    max_size=HISTORY_LENGTH_MAX,
)
BOUNDED = settings(
    max_examples=EXAMPLES_MAX,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(name="settings")
def generous_settings(settings: Settings) -> Settings:
    """Every example signs a shopper up from one address: no sign-up limit gets in the way."""
    return replace(settings, limit_signups_address=LIMIT_GENEROUS)


async def read_all(
    client: httpx.AsyncClient, path: str, shopper: Shopper, page_limits: list[int], total: int
) -> list[dict[str, Any]]:
    """Every item of a list, asking for pages with the given limits in turn (over again
    when they run out), each after the last item of the page before."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for limit in itertools.islice(itertools.cycle(page_limits), total + 2):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["starting_after"] = cursor
        response = await client.get(path, params=params, headers=shopper.auth)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= limit
        items += page["data"]
        if not page["has_more"]:
            return items
        assert page["data"], "an empty page that says there is more"
        cursor = page["data"][-1]["id"]
    raise AssertionError(f"{path} did not end after {total + 2} pages")


def newest_first(items: list[dict[str, Any]]) -> bool:
    times = [datetime.fromisoformat(item["created_at"]) for item in items]
    return all(later >= earlier for later, earlier in itertools.pairwise(times))


@BOUNDED
@given(history=movements, page_limits=limits)
async def test_any_limits_read_every_transaction_once_newest_first(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    history: list[tuple[str, int]],
    page_limits: list[int],
) -> None:
    """Given a history of redemptions, payments and adjustments of any amounts, one
    second apart, when the shopper pages through it with any sequence of limits, then
    they read each movement exactly once, newest first, with its signed amount."""
    admin = await api_key(services, "admin")
    shopper = await sign_up(client)
    expected: list[tuple[str, int]] = []
    available = 0
    for kind, amount in history:
        clock.advance(timedelta(seconds=1))
        if kind == "payment":
            amount = min(amount, available)
            if amount == 0:
                continue
            paid = await client.post(
                "/v1/payments",
                json={
                    "customer_id": shopper.id,
                    "order_id": f"o-{len(expected)}",
                    "amount": amount,
                    "currency": "USD",
                    "use_balance": amount,
                },
                headers=admin,
            )
            assert paid.status_code == 201, paid.text
            available -= amount
            expected.append(("payment", -amount))
        elif kind == "redemption":
            [card] = await issue(client, admin, amount=amount)
            redeemed = await client.post(
                "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
            )
            assert redeemed.status_code == 201, redeemed.text
            available += amount
            expected.append(("redemption", amount))
        else:
            adjusted = await client.post(
                f"/v1/support/customers/{shopper.id}/adjustments",
                json={"amount": amount, "reason": "goodwill", "note": "paging"},
                headers=admin,
            )
            assert adjusted.status_code == 201, adjusted.text
            assert adjusted.json()["status"] == "applied"
            available += amount
            expected.append(("adjustment", amount))

    items = await read_all(client, "/v1/me/transactions", shopper, page_limits, len(expected))

    assert [(item["type"], item["amount"]) for item in items] == expected[::-1]
    assert len({item["id"] for item in items}) == len(items)
    assert newest_first(items)


@BOUNDED
@given(gift_count=st.integers(0, GIFTS_MAX), page_limits=limits)
async def test_any_limits_read_every_gift_once_newest_first(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    gift_count: int,
    page_limits: list[int],
) -> None:
    """Given gifts a shopper bought, one second apart, when they page through their gifts
    with any sequence of limits, then they read each gift exactly once, newest first."""
    admin = await api_key(services, "admin")
    shopper = await sign_up(client)
    bought = []
    for number in range(gift_count):
        clock.advance(timedelta(seconds=1))
        gift = await client.post(
            "/v1/gifts",
            json={
                "amount": 2500,
                "region": "US",
                "recipient_email": f"friend{number}@example.com",
                "sender_name": "Paging",
                "purchaser_customer_id": shopper.id,
            },
            headers=admin,
        )
        assert gift.status_code == 201, gift.text
        bought.append(gift.json()["id"])

    items = await read_all(client, "/v1/me/gifts", shopper, page_limits, gift_count)

    assert [item["id"] for item in items] == bought[::-1]
    assert newest_first(items)
