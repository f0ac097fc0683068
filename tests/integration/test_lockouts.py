"""Abuse limits (SPEC §8): failed redemptions lock an account and an address, sign-ups
are limited per address, failed log-ins lock an account.

Each test runs twice: with the counts in process memory, and in Redis (the way several
servers share them). The database is SQLite only: the limits do not depend on it. Every
Redis test gets a key prefix of its own, so tests never see each other's counts, and
checks that its counts really are in Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from giftcard.abuse import AbuseLimits
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.codes import ALPHABET, generate_code
from giftcard.config import Settings
from giftcard.services import Services
from tests.conftest import Shopper, api_key, issue, sign_up

HOME = "203.0.113.7"
ELSEWHERE = "198.51.100.23"
WINDOW_S = 15 * 60
BURST_TIMEOUT_S = 60


@pytest.fixture
def backend() -> str:
    """Only SQLite: these tests are parametrized over the limits' storage instead."""
    return "sqlite"


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Lab:
    """Builds a service with the limits a test asks for, and clients at any address."""

    settings: Settings
    clock: FrozenClock
    redis_url: str | None
    key_prefix: str = field(default_factory=lambda: f"giftcard-test-{uuid.uuid4().hex}")
    services: list[Services] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def start(self, **limits: str) -> Services:
        settings = replace(self.settings, redis_url=self.redis_url, **limits)
        svc = Services.build(settings, clock=self.clock)
        svc.limits = AbuseLimits(settings, key_prefix=self.key_prefix)
        self.services.append(svc)
        return svc

    def client(self, svc: Services, address: str = HOME) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=create_app(services=svc), client=(address, 4711))
        http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        self.clients.append(http)
        return http

    async def redis_keys(self) -> list[str]:
        assert self.redis_url is not None
        connection = redis.Redis.from_url(self.redis_url)
        try:
            return [
                key.decode() async for key in connection.scan_iter(match=f"{self.key_prefix}:*")
            ]
        finally:
            await connection.aclose()

    async def assert_counted_in_storage(self) -> None:
        """With Redis configured, the counts are there and not in process memory."""
        if self.redis_url is None:
            return
        keys = await self.redis_keys()
        assert keys, f"nothing was counted in Redis under {self.key_prefix}"

    async def close(self) -> None:
        for http in self.clients:
            await http.aclose()
        for svc in self.services:
            await svc.close()
        if self.redis_url is not None:
            connection = redis.Redis.from_url(self.redis_url)
            try:
                keys = await self.redis_keys()
                if keys:
                    await connection.delete(*keys)
            finally:
                await connection.aclose()


@pytest.fixture
async def lab(
    settings: Settings, clock: FrozenClock, storage: str, request: pytest.FixtureRequest
) -> AsyncIterator[Lab]:
    redis_url = request.getfixturevalue("redis_url") if storage == "redis" else None
    built = Lab(settings, clock, redis_url)
    yield built
    await built.close()


def mistyped(code: str) -> str:
    """`code` with one symbol replaced: the check symbol catches it."""
    normalized = code.replace("-", "")
    replacement = ALPHABET[(ALPHABET.index(normalized[5]) + 1) % len(ALPHABET)]
    return normalized[:5] + replacement + normalized[6:]


async def redeem(client: httpx.AsyncClient, shopper: Shopper, code: str) -> httpx.Response:
    return await client.post("/v1/me/redemptions", json={"code": code}, headers=shopper.auth)


def assert_locked(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "too_many_attempts"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW_S


async def card_state(client: httpx.AsyncClient, admin: dict[str, str], card: Any) -> str:
    response = await client.get(f"/v1/cards/{card['id']}", headers=admin)
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


async def total_balance(client: httpx.AsyncClient, shopper: Shopper) -> int:
    response = await client.get("/v1/me/balance", headers=shopper.auth)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def test_account_locked_after_refused_attempts_refuses_valid_code(lab: Lab) -> None:
    """Given an account limit of 3, three refused attempts of different kinds (mistyped,
    unknown, other store) lock the account: the next attempt with a VALID code gets 429
    with Retry-After and does not redeem it, answered exactly like an unknown code, while
    a second account at the same address can still redeem that code."""
    svc = lab.start(limit_redeem_failures_account="3/15minutes")
    client = lab.client(svc)
    admin = await api_key(svc)
    [card] = await issue(client, admin, amount=2500)
    [british] = await issue(client, admin, amount=2000, region="GB")
    shopper = await sign_up(client)

    refused = [
        await redeem(client, shopper, mistyped(card["code"])),
        await redeem(client, shopper, generate_code()),
        await redeem(client, shopper, british["code"]),
    ]
    assert [r.json()["code"] for r in refused] == [
        "code_mistyped",
        "code_not_found",
        "region_mismatch",
    ]

    locked_valid = await redeem(client, shopper, card["code"])
    locked_unknown = await redeem(client, shopper, generate_code())

    assert_locked(locked_valid)
    assert_locked(locked_unknown)
    assert locked_valid.json() == locked_unknown.json()
    assert await card_state(client, admin, card) == "active"
    assert await total_balance(client, shopper) == 0

    neighbour = await sign_up(client)
    redeemed = await redeem(client, neighbour, card["code"])
    assert redeemed.status_code == 201, redeemed.text
    assert await total_balance(client, neighbour) == 2500
    await lab.assert_counted_in_storage()


async def test_lock_counts_each_refusal_up_to_the_limit(lab: Lab) -> None:
    """The edge: with a limit of 3, the third refused attempt is still answered on its
    merits; only the fourth is locked."""
    svc = lab.start(limit_redeem_failures_account="3/15minutes")
    client = lab.client(svc)
    shopper = await sign_up(client)

    answers = [(await redeem(client, shopper, "not-a-code")).status_code for _ in range(3)]
    assert answers == [422, 422, 422]
    assert_locked(await redeem(client, shopper, "not-a-code"))
    await lab.assert_counted_in_storage()


async def test_address_locked_across_accounts(lab: Lab) -> None:
    """Given an address limit of 4 and a generous account limit, two accounts at one
    address that each fail twice lock the address: both, and any other account using
    that address, get 429 even with a valid code; the same account from another address
    is not locked."""
    svc = lab.start(
        limit_redeem_failures_account="100/15minutes",
        limit_redeem_failures_address="4/15minutes",
    )
    home = lab.client(svc, HOME)
    away = lab.client(svc, ELSEWHERE)
    admin = await api_key(svc)
    [card] = await issue(home, admin, amount=700)
    first = await sign_up(home)
    second = await sign_up(home)
    third = await sign_up(away)

    for shopper in (first, second):
        assert (await redeem(home, shopper, mistyped(card["code"]))).status_code == 422
        assert (await redeem(home, shopper, "0000")).status_code == 422

    for shopper in (first, second, third):
        assert_locked(await redeem(home, shopper, card["code"]))
    assert await card_state(home, admin, card) == "active"

    redeemed = await redeem(away, first, card["code"])
    assert redeemed.status_code == 201, redeemed.text
    assert await total_balance(away, first) == 700
    await lab.assert_counted_in_storage()


async def test_successful_redemptions_never_count(lab: Lab) -> None:
    """Given an account limit of 3: two failures, then three successes, leave room for
    one more failure (answered on its merits); only after it is the account locked."""
    svc = lab.start(limit_redeem_failures_account="3/15minutes")
    client = lab.client(svc)
    admin = await api_key(svc)
    cards = await issue(client, admin, amount=100, count=4)
    shopper = await sign_up(client)

    assert (await redeem(client, shopper, generate_code())).status_code == 404
    assert (await redeem(client, shopper, mistyped(cards[0]["code"]))).status_code == 422
    for card in cards[:3]:
        response = await redeem(client, shopper, card["code"])
        assert response.status_code == 201, response.text
    third_failure = await redeem(client, shopper, cards[0]["code"])
    assert third_failure.status_code == 409, third_failure.text
    assert third_failure.json()["code"] == "code_already_redeemed"

    assert_locked(await redeem(client, shopper, cards[3]["code"]))
    assert await total_balance(client, shopper) == 300
    await lab.assert_counted_in_storage()


async def test_sign_ups_limited_per_address(lab: Lab) -> None:
    """Given a sign-up limit of 3 per address, the fourth sign-up from it gets 429 with
    Retry-After and creates nothing; another address can still sign up."""
    svc = lab.start(limit_signups_address="3/hour")
    home = lab.client(svc, HOME)
    away = lab.client(svc, ELSEWHERE)

    def body(name: str) -> dict[str, str]:
        return {"email": f"{name}@example.com", "password": "correct horse battery", "region": "US"}

    for i in range(3):
        created = await home.post("/v1/customers", json=body(f"ok{i}-{uuid.uuid4().hex[:6]}"))
        assert created.status_code == 201, created.text
    refused_email = f"late-{uuid.uuid4().hex[:6]}"
    refused = await home.post("/v1/customers", json=body(refused_email))
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "too_many_attempts"
    assert 1 <= int(refused.headers["retry-after"]) <= 3600

    # The refused sign-up created no account: the email is still free elsewhere.
    created_elsewhere = await away.post("/v1/customers", json=body(refused_email))
    assert created_elsewhere.status_code == 201, created_elsewhere.text
    await lab.assert_counted_in_storage()


async def test_log_in_failures_lock_the_account(lab: Lab) -> None:
    """Given a log-in failure limit of 3, three wrong passwords lock the account: the
    right password then gets 429 with Retry-After; another account logs in normally."""
    svc = lab.start(limit_login_failures_account="3/15minutes")
    client = lab.client(svc)
    victim = await sign_up(client)
    other = await sign_up(client)

    for _ in range(3):
        wrong = await client.post(
            "/v1/sessions", json={"email": victim.email, "password": "wrong password here"}
        )
        assert wrong.status_code == 401, wrong.text
        assert wrong.json()["code"] == "invalid_credentials"

    right = await client.post(
        "/v1/sessions", json={"email": victim.email, "password": "correct horse battery"}
    )
    assert_locked(right)
    # The lock is per account and ignores how the email is spelled.
    shouted = await client.post(
        "/v1/sessions",
        json={"email": victim.email.upper(), "password": "correct horse battery"},
    )
    assert_locked(shouted)

    fine = await client.post(
        "/v1/sessions", json={"email": other.email, "password": "correct horse battery"}
    )
    assert fine.status_code == 201, fine.text
    await lab.assert_counted_in_storage()


@pytest.mark.parametrize("storage", ["redis"])
async def test_servers_sharing_redis_share_the_lock(lab: Lab) -> None:
    """Given two servers on one database and one Redis, failures on the first lock the
    account on the second: the counts are shared, as GIFTCARD_REDIS_URL promises."""
    first = lab.start(limit_redeem_failures_account="2/15minutes")
    second = lab.start(limit_redeem_failures_account="2/15minutes")
    client_first = lab.client(first)
    client_second = lab.client(second)
    admin = await api_key(first)
    [card] = await issue(client_first, admin, amount=900)
    shopper = await sign_up(client_first)

    for _ in range(2):
        assert (await redeem(client_first, shopper, generate_code())).status_code == 404

    assert_locked(await redeem(client_second, shopper, card["code"]))
    assert await card_state(client_second, admin, card) == "active"
    await lab.assert_counted_in_storage()


async def test_a_burst_of_guesses_is_cut_off_at_the_limit(lab: Lab) -> None:
    """Given an account limit of 3, 50 guesses sent at once get 3 answers on their merits
    and 47 × 429: checking before counting must not let a burst slip past the lock."""
    svc = lab.start(limit_redeem_failures_account="3/15minutes")
    client = lab.client(svc)
    shopper = await sign_up(client)

    responses = await asyncio.wait_for(
        asyncio.gather(*(redeem(client, shopper, generate_code()) for _ in range(50))),
        BURST_TIMEOUT_S,
    )

    assert Counter(r.status_code for r in responses) == {404: 3, 429: 47}
    await lab.assert_counted_in_storage()


async def test_a_burst_of_valid_codes_is_never_limited(lab: Lab) -> None:
    """Given an account limit of 3, ten valid codes redeemed at once all succeed: only
    refusals count, so attempts that succeed are never refused, however many run."""
    svc = lab.start(limit_redeem_failures_account="3/15minutes")
    client = lab.client(svc)
    admin = await api_key(svc)
    cards = await issue(client, admin, amount=100, count=10)
    shopper = await sign_up(client)

    responses = await asyncio.wait_for(
        asyncio.gather(*(redeem(client, shopper, card["code"]) for card in cards)),
        BURST_TIMEOUT_S,
    )

    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    assert await total_balance(client, shopper) == 1000


async def test_a_burst_of_password_guesses_is_cut_off_at_the_limit(lab: Lab) -> None:
    """Given a log-in failure limit of 3, 20 wrong passwords sent at once get 3 × 401 and
    17 × 429."""
    svc = lab.start(limit_login_failures_account="3/15minutes")
    client = lab.client(svc)
    victim = await sign_up(client)

    responses = await asyncio.wait_for(
        asyncio.gather(
            *(
                client.post(
                    "/v1/sessions", json={"email": victim.email, "password": f"guess {i:04}"}
                )
                for i in range(20)
            )
        ),
        BURST_TIMEOUT_S,
    )

    assert Counter(r.status_code for r in responses) == {401: 3, 429: 17}
    await lab.assert_counted_in_storage()
