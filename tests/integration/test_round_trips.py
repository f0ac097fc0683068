"""What a redemption and a payment cost the database, counted so that it never grows.

On PostgreSQL every request goes through a proxy that counts round trips (turns of the
conversation: the service sends, then waits for the answer); on SQLite, statements. The
service is warmed first (its pool holds connections, its statements are prepared), so
that what is counted is the cost of one more request in a running service. The limits
below are today's counts: an optimisation lowers them here, and a change that adds a
round trip to the hot path fails this test until it is argued for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.codes import generate_code
from giftcard.config import Settings
from giftcard.db.tables import limit_reservations
from giftcard.services import Services
from tests.conftest import Shopper, api_key, burst, counting_connections, issue, sign_up
from tests.round_trips import counting_proxy

# What one more request costs today.
REDEMPTION_ROUND_TRIPS = 7
PAYMENT_ROUND_TRIPS = 7
BALANCE_ROUND_TRIPS = 2
REDEMPTION_STATEMENTS = 11
PAYMENT_STATEMENTS = 9
# A small pool, so that a burst needs every connection it allows.
POOL = 4


@asynccontextmanager
async def service(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    svc = Services.build(settings, clock=clock)
    try:
        transport = httpx.ASGITransport(app=create_app(services=svc), client=("203.0.113.7", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            http.services = svc  # type: ignore[attr-defined]
            yield http
    finally:
        await svc.close()


async def one_of_each(
    http: httpx.AsyncClient, shopper: Shopper, merchant: dict[str, str], code: str
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The two requests measured: a redemption by the shopper, a captured payment from
    its balance by the store; each with an idempotency key, as clients send them."""

    async def redeem() -> None:
        response = await http.post(
            "/v1/me/redemptions",
            json={"code": code},
            headers={**shopper.auth, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text

    async def pay() -> None:
        response = await http.post(
            "/v1/payments",
            json={
                "customer_id": shopper.id,
                "order_id": f"order-{uuid.uuid4().hex}",
                "amount": 100,
                "currency": "USD",
                "use_balance": "max",
                "capture": True,
            },
            headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text

    return redeem, pay


async def measure(
    http: httpx.AsyncClient, reset: Callable[[], None], count: Callable[[], int]
) -> tuple[int, int]:
    svc: Services = http.services  # type: ignore[attr-defined]
    merchant = await api_key(svc, "merchant")
    admin = await api_key(svc)
    cards = await issue(http, admin, amount=1000, count=2)
    shopper = await sign_up(http)
    costs = []
    for card in cards:  # the first of each warms the service; the second is counted
        redeem, pay = await one_of_each(http, shopper, merchant, card["code"])
        reset()
        await redeem()
        redemption = count()
        reset()
        await pay()
        costs.append((redemption, count()))
    return costs[-1]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_round_trips_per_redemption_and_payment(
    settings: Settings, clock: FrozenClock
) -> None:
    """A warm service's redemption and captured payment, each with an idempotency key,
    take no more round trips to PostgreSQL than they do today."""
    async with (
        counting_proxy(settings.database_url) as (url, counter),
        service(replace(settings, database_url=url), clock) as http,
    ):
        redemption, payment = await measure(http, counter.reset, lambda: counter.turns)
    print(f"\nround trips to PostgreSQL: redemption {redemption}, payment {payment}")
    assert redemption <= REDEMPTION_ROUND_TRIPS
    assert payment <= PAYMENT_ROUND_TRIPS


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_balance_is_one_round_trip_after_authentication(
    settings: Settings, clock: FrozenClock
) -> None:
    """`GET /v1/me/balance` reads the session, then both balances in one statement without
    BEGIN and COMMIT: two round trips."""
    async with (
        counting_proxy(settings.database_url) as (url, counter),
        service(replace(settings, database_url=url), clock) as http,
    ):
        shopper = await sign_up(http)
        trips = []
        for _ in range(2):  # the first warms the service; the second is counted
            counter.reset()
            response = await http.get("/v1/me/balance", headers=shopper.auth)
            assert response.status_code == 200, response.text
            trips.append(counter.turns)
    assert trips[-1] <= BALANCE_ROUND_TRIPS, trips


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_redemption_on_sqlite_is_one_write_transaction_refused_or_not(
    settings: Settings, clock: FrozenClock
) -> None:
    """SQLite writes one transaction at a time, each with its own wait for the disk: a
    redemption under the abuse limits (counted in the database), with an idempotency
    key, takes one, whether it credits the code or is refused (an unknown code, whose
    refusal counts and is stored under the key in that same transaction)."""
    writes = [0]
    async with service(settings, clock) as http:
        svc: Services = http.services  # type: ignore[attr-defined]

        @event.listens_for(svc.db.engine.sync_engine, "before_cursor_execute")
        def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement == "BEGIN IMMEDIATE":
                writes[0] += 1

        admin = await api_key(svc)
        cards = await issue(http, admin, amount=1000, count=2)
        shopper = await sign_up(http)
        outcomes = []
        for code in (cards[0]["code"], cards[1]["code"], generate_code()):
            writes[0] = 0
            response = await http.post(
                "/v1/me/redemptions",
                json={"code": code},
                headers={**shopper.auth, "Idempotency-Key": uuid.uuid4().hex},
            )
            outcomes.append((response.status_code, writes[0]))
        async with svc.db.transaction(write=False) as connection:
            units = (
                await connection.execute(
                    select(func.count()).where(limit_reservations.c.limit_key.contains(":redeem-"))
                )
            ).scalar_one()
    assert outcomes == [(201, 1), (201, 1), (404, 1)]
    # The refusal counted on the account, the address and the service-wide limit.
    assert units == 3


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_statements_per_redemption_and_payment(
    settings: Settings, clock: FrozenClock
) -> None:
    """The same on SQLite, in statements."""
    statements = [0]
    async with service(settings, clock) as http:
        svc: Services = http.services  # type: ignore[attr-defined]

        @event.listens_for(svc.db.engine.sync_engine, "before_cursor_execute")
        def _count(*_args: Any) -> None:
            statements[0] += 1

        def reset() -> None:
            statements[0] = 0

        redemption, payment = await measure(http, reset, lambda: statements[0])
    print(f"\nstatements on SQLite: redemption {redemption}, payment {payment}")
    assert redemption <= REDEMPTION_STATEMENTS
    assert payment <= PAYMENT_STATEMENTS


async def test_a_warm_service_opens_no_connection_for_its_next_burst(
    settings: Settings, clock: FrozenClock
) -> None:
    """Two bursts of requests, each wanting more connections than the pool allows: the
    first opens at most the pool's size, and the second is served by those, opening none
    (a new connection costs a connect and the preparing of every statement it runs)."""
    async with service(replace(settings, database_pool_size=POOL), clock) as http:
        svc: Services = http.services  # type: ignore[attr-defined]
        shopper = await sign_up(http)
        opened = [0]

        def _opened(*_args: Any) -> None:
            opened[0] += 1

        event.listen(svc.db.engine.sync_engine.pool, "connect", _opened)
        new_connections = []
        with counting_connections(svc) as peak:
            for _ in range(2):
                before = opened[0]
                responses = await burst(
                    *(http.get("/v1/me/balance", headers=shopper.auth) for _ in range(4 * POOL))
                )
                assert {response.status_code for response in responses} == {200}
                new_connections.append(opened[0] - before)
    if not settings.database_url.startswith("sqlite"):
        # On SQLite a read runs in this process without waiting, and a request takes
        # the connection the one before it kept: the burst needs fewer.
        assert peak.peak == POOL
    assert new_connections[0] <= POOL
    assert new_connections[1] == 0, new_connections
