"""Abuse limits (SPEC §8): refused redemptions lock an account and an address, sign-ups are
limited per address, failed log-ins lock an email at one address and an address.

Each test runs on SQLite and PostgreSQL, and with the limits' units in the database and
in Redis. Several `Services` objects on one database (and one Redis) stand in for the
worker processes of one server: the limits must be exact across them. Every Redis test
gets a key prefix of its own, so tests never see each other's units, and each test
checks that its units really are in the store it chose.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from sqlalchemy import func, select

from giftcard import customers, redemption
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.codes import ALPHABET, generate_code
from giftcard.config import Settings
from giftcard.db.tables import limit_reservations
from giftcard.errors import GiftcardError
from giftcard.services import Services
from tests.conftest import ALL_ISOLATIONS, Shopper, api_key, assert_problem, issue, sign_up
from tests.services import free_port

HOME = "203.0.113.7"
ELSEWHERE = "198.51.100.23"
WINDOW_S = 15 * 60
BURST_TIMEOUT_S = 120
WORKERS = 4
PASSWORD = "correct horse battery"
CODES = 6


@pytest.fixture(params=["database", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Lab:
    """Builds services (one per stand-in worker) sharing one database, one clock and one
    store for the limits, with the limits a test asks for, and clients at any address."""

    settings: Settings
    clock: FrozenClock
    redis_url: str | None
    key_prefix: str = field(default_factory=lambda: f"giftcard-test-{uuid.uuid4().hex}")
    services: list[Services] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    async def start(self, **limits: str) -> Services:
        settings = replace(
            self.settings, redis_url=self.redis_url, limit_key_prefix=self.key_prefix, **limits
        )
        svc = Services.build(settings, clock=self.clock)
        self.services.append(svc)
        return svc

    async def workers(self, count: int = WORKERS, **limits: str) -> list[Services]:
        return [await self.start(**limits) for _ in range(count)]

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
                key.decode() async for key in connection.scan_iter(match=f"{{{self.key_prefix}}}:*")
            ]
        finally:
            await connection.aclose()

    async def units_in_database(self) -> int:
        async with self.services[0].db.transaction(write=False) as connection:
            return int(
                (
                    await connection.execute(select(func.count()).select_from(limit_reservations))
                ).scalar_one()
            )

    async def assert_counted_in_storage(self) -> None:
        """The units are in the store this test chose, and only there."""
        if self.redis_url is None:
            assert await self.units_in_database() > 0, "nothing was counted in the database"
            return
        assert await self.redis_keys(), f"nothing was counted in Redis under {self.key_prefix}"
        assert await self.units_in_database() == 0

    async def close(self) -> None:
        for http in self.clients:
            await http.aclose()
        if self.redis_url is not None:
            connection = redis.Redis.from_url(self.redis_url)
            try:
                keys = await self.redis_keys()
                if keys:
                    await connection.delete(*keys)
            finally:
                await connection.aclose()
        for svc in self.services:
            await svc.close()


@pytest.fixture
async def lab(
    settings: Settings, clock: FrozenClock, storage: str, request: pytest.FixtureRequest
) -> AsyncIterator[Lab]:
    redis_url = request.getfixturevalue("redis_url") if storage == "redis" else None
    built = Lab(settings, clock, redis_url)
    yield built
    await built.close()


async def open_connections(workers: list[Services], count: int) -> None:
    """Open `count` pooled connections in every worker before a burst, so that the burst's
    attempts are not spread out in time by connecting one after another."""

    async def hold(svc: Services) -> None:
        async with svc.db.transaction(write=False) as connection:
            await connection.execute(select(1))
            await asyncio.sleep(0.05)

    await asyncio.gather(*(hold(svc) for svc in workers for _ in range(count)))


def mistyped(code: str) -> str:
    """`code` with one symbol replaced: the check symbol catches it."""
    normalized = code.replace("-", "")
    replacement = ALPHABET[(ALPHABET.index(normalized[5]) + 1) % len(ALPHABET)]
    return normalized[:5] + replacement + normalized[6:]


async def redeem(client: httpx.AsyncClient, shopper: Shopper, code: str) -> httpx.Response:
    return await client.post("/v1/me/redemptions", json={"code": code}, headers=shopper.auth)


async def log_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/sessions", json={"email": email, "password": password})


def assert_locked(response: httpx.Response, window_s: int = WINDOW_S) -> int:
    """A 429 too_many_attempts problem; its Retry-After, in seconds."""
    assert_problem(response, 429, "too_many_attempts")
    retry_after_s = int(response.headers["retry-after"])
    assert 1 <= retry_after_s <= window_s, retry_after_s
    return retry_after_s


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


async def test_ten_refusals_then_every_attempt_is_locked(lab: Lab) -> None:
    """With the default limits (10 refusals per account in 15 minutes), ten refused
    attempts of different kinds are each answered on their merits; the eleventh, with a
    VALID code, gets 429 with Retry-After and does not redeem it, answered exactly like an
    unknown code; a second account at the same address can still redeem that code."""
    svc = await lab.start()
    client = lab.client(svc)
    admin = await api_key(svc)
    [card] = await issue(client, admin, amount=2500)
    [british] = await issue(client, admin, amount=2000, region="GB")
    shopper = await sign_up(client)

    refused = []
    for attempt in range(10):
        code = [mistyped(card["code"]), generate_code(), british["code"], "0000"][attempt % 4]
        refused.append((await redeem(client, shopper, code)).json()["code"])
    assert Counter(refused) == {
        "code_mistyped": 3,
        "code_not_found": 3,
        "region_mismatch": 2,
        "code_malformed": 2,
    }

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
    svc = await lab.start(limit_redeem_failures_account="3/15minutes")
    client = lab.client(svc)
    shopper = await sign_up(client)

    answers = [(await redeem(client, shopper, "not-a-code")).status_code for _ in range(3)]
    assert answers == [422, 422, 422]
    assert_locked(await redeem(client, shopper, "not-a-code"))
    await lab.assert_counted_in_storage()


async def test_lock_out_ends_when_the_window_has_passed(lab: Lab, clock: FrozenClock) -> None:
    """Given an account locked by 3 refusals spread over 10 minutes, Retry-After says
    when the oldest leaves the window; a second before that the account is still locked,
    at that moment a valid code is redeemed again (and one more refusal locks it again)."""
    svc = await lab.start(limit_redeem_failures_account="3/15minutes")
    client = lab.client(svc)
    admin = await api_key(svc)
    [card] = await issue(client, admin, amount=1200)
    shopper = await sign_up(client)
    for minute in (0, 5, 10):
        if minute:
            clock.advance(timedelta(minutes=5))
        assert (await redeem(client, shopper, generate_code())).status_code == 404

    # The first refusal leaves the 15-minute window 5 minutes from now.
    retry_after_s = assert_locked(await redeem(client, shopper, card["code"]))
    assert retry_after_s == 5 * 60

    clock.advance(timedelta(seconds=retry_after_s - 1))
    assert_locked(await redeem(client, shopper, card["code"]))
    clock.advance(timedelta(seconds=1))
    redeemed = await redeem(client, shopper, card["code"])
    assert redeemed.status_code == 201, redeemed.text
    assert (await redeem(client, shopper, generate_code())).status_code == 404
    assert_locked(await redeem(client, shopper, generate_code()))
    await lab.assert_counted_in_storage()


async def test_address_locked_across_accounts(lab: Lab) -> None:
    """Given an address limit of 4 and a generous account limit, two accounts at one
    address that each fail twice lock the address: both, and any other account using
    that address, get 429 even with a valid code; the same account from another address
    is not locked."""
    svc = await lab.start(
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


async def test_successful_redemptions_give_their_units_back(lab: Lab) -> None:
    """Given an account limit of 3: 100 successful redemptions in a row never lock the
    account, since each gives back what it reserved; after them, 3 refusals are still
    answered on their merits and only the fourth attempt is locked."""
    svc = await lab.start(limit_redeem_failures_account="3/15minutes")
    client = lab.client(svc)
    admin = await api_key(svc)
    cards = await issue(client, admin, amount=100, count=100)
    shopper = await sign_up(client)

    for card in cards:
        response = await redeem(client, shopper, card["code"])
        assert response.status_code == 201, response.text
    assert await total_balance(client, shopper) == 100 * 100

    answers = [(await redeem(client, shopper, card["code"])).status_code for card in cards[:3]]
    assert answers == [409, 409, 409]
    assert_locked(await redeem(client, shopper, cards[3]["code"]))
    await lab.assert_counted_in_storage()


async def test_sign_ups_limited_per_address(lab: Lab) -> None:
    """Given a sign-up limit of 3 per address, the fourth sign-up from it gets 429 with
    Retry-After and creates nothing; another address can still sign up."""
    svc = await lab.start(limit_signups_address="3/hour")
    home = lab.client(svc, HOME)
    away = lab.client(svc, ELSEWHERE)

    def body(name: str) -> dict[str, str]:
        return {"email": f"{name}@example.com", "password": PASSWORD, "region": "US"}

    for i in range(3):
        created = await home.post("/v1/customers", json=body(f"ok{i}-{uuid.uuid4().hex[:6]}"))
        assert created.status_code == 201, created.text
    refused_email = f"late-{uuid.uuid4().hex[:6]}"
    assert_locked(await home.post("/v1/customers", json=body(refused_email)), window_s=3600)

    # The refused sign-up created no account: the email is still free elsewhere.
    created_elsewhere = await away.post("/v1/customers", json=body(refused_email))
    assert created_elsewhere.status_code == 201, created_elsewhere.text
    await lab.assert_counted_in_storage()


async def test_a_stranger_locks_an_email_only_at_the_strangers_address(lab: Lab) -> None:
    """Given a limit of 3 failed log-ins per email and address: a stranger's 3 wrong
    passwords from one address lock that email there (the right password too, however
    the email is spelled), while its owner, at home, logs in at once; a successful
    log-in gives its unit back, so the owner's own typo does not add up with them."""
    svc = await lab.start(limit_login_failures_account="3/15minutes")
    home = lab.client(svc, HOME)
    stranger = lab.client(svc, ELSEWHERE)
    owner = await sign_up(home)

    for _ in range(3):
        assert_problem(
            await log_in(stranger, owner.email, "wrong password here"), 401, "invalid_credentials"
        )
    assert_locked(await log_in(stranger, owner.email, PASSWORD))
    assert_locked(await log_in(stranger, owner.email.upper(), PASSWORD))

    assert_problem(await log_in(home, owner.email, "my own typo"), 401, "invalid_credentials")
    for _ in range(5):
        at_home = await log_in(home, owner.email, PASSWORD)
        assert at_home.status_code == 201, at_home.text
    await lab.assert_counted_in_storage()


async def test_failed_log_ins_from_one_address_lock_it_whatever_the_email(lab: Lab) -> None:
    """Given a limit of 4 failed log-ins per address and a generous one per email: four
    wrong passwords for four different emails from one address lock the address, for
    every email (a right password too); the same accounts log in from another address."""
    svc = await lab.start(
        limit_login_failures_account="100/15minutes", limit_login_failures_address="4/15minutes"
    )
    home = lab.client(svc, HOME)
    guesser = lab.client(svc, ELSEWHERE)
    victims = [await sign_up(home) for _ in range(5)]

    for victim in victims[:4]:
        assert_problem(
            await log_in(guesser, victim.email, "wrong password here"), 401, "invalid_credentials"
        )
    assert_locked(await log_in(guesser, victims[4].email, PASSWORD))
    assert_locked(await log_in(guesser, f"nobody-{uuid.uuid4().hex[:6]}@example.com", "x" * 12))

    for victim in victims:
        response = await log_in(home, victim.email, PASSWORD)
        assert response.status_code == 201, response.text
    await lab.assert_counted_in_storage()


async def test_a_locked_account_is_refused_among_others_redeeming_at_once(lab: Lab) -> None:
    """Given an account locked by its refusals, when it sends valid codes at the moment a
    neighbour sends theirs (on PostgreSQL they go in one transaction together, the limits
    read without their locks), then each of its codes is refused with 429 and stays
    active, and every one of the neighbour's is redeemed."""
    # Where units are reserved while in flight (Redis), the neighbour's codes at once
    # take every unit of their account, and every code sent at once one of the address.
    svc = await lab.start(
        limit_redeem_failures_account=f"{CODES}/15minutes",
        limit_redeem_failures_address=f"{4 * CODES}/15minutes",
    )
    client = lab.client(svc)
    admin = await api_key(svc)
    mine = await issue(client, admin, amount=500, count=CODES)
    theirs = await issue(client, admin, amount=700, count=CODES)
    locked, neighbour = await sign_up(client), await sign_up(client)
    for _ in range(CODES):
        assert (await redeem(client, locked, generate_code())).status_code == 404

    answers = await asyncio.gather(
        *(redeem(client, locked, card["code"]) for card in mine),
        *(redeem(client, neighbour, card["code"]) for card in theirs),
    )

    for answer in answers[: len(mine)]:
        assert_locked(answer)
    assert [answer.status_code for answer in answers[len(mine) :]] == [201] * len(theirs)
    assert {await card_state(client, admin, card) for card in mine} == {"active"}
    assert await total_balance(client, locked) == 0
    assert await total_balance(client, neighbour) == 700 * len(theirs)
    await lab.assert_counted_in_storage()


async def test_workers_share_the_lock(lab: Lab) -> None:
    """Given two services on one database and one store, refusals on the first lock the
    account on the second: the units are shared, as every worker must see them."""
    first, second = await lab.workers(2, limit_redeem_failures_account="2/15minutes")
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


async def test_retry_after_is_never_longer_than_the_window(lab: Lab, clock: FrozenClock) -> None:
    """Given an account locked by refusals that other workers counted at a moment half a
    second after this attempt read its clock (as happens when attempts race across
    workers), the refusal's Retry-After is the whole window, not a second past it."""
    first, second = await lab.workers(2, limit_redeem_failures_account="2/15minutes")
    shopper = await sign_up(lab.client(first))
    for _ in range(2):
        assert (await redeem(lab.client(first), shopper, generate_code())).status_code == 404

    clock.advance(timedelta(seconds=-0.5))
    assert assert_locked(await redeem(lab.client(second), shopper, generate_code())) == WINDOW_S
    await lab.assert_counted_in_storage()


@ALL_ISOLATIONS
async def test_a_burst_across_workers_gets_exactly_the_allowed_refusals(lab: Lab) -> None:
    """Given four services sharing one database and store (four workers) and the default
    limit of 10, 40 unknown codes sent at once by one account, spread over the workers,
    get exactly 10 answers on their merits (404) and 30 × 429: reserving before the code
    is looked at, in one atomic step, lets no burst slip past the limit (at SERIALIZABLE
    too, where the reservation still reads what the one before it committed)."""
    workers = await lab.workers()
    clients = [lab.client(svc) for svc in workers]
    shopper = await sign_up(clients[0])
    await open_connections(workers, 10)

    responses = await asyncio.wait_for(
        asyncio.gather(
            *(redeem(clients[i % WORKERS], shopper, generate_code()) for i in range(40))
        ),
        BURST_TIMEOUT_S,
    )

    assert Counter(r.status_code for r in responses) == {404: 10, 429: 30}
    await lab.assert_counted_in_storage()


async def test_a_burst_through_the_use_case_gets_exactly_the_allowed_refusals(
    lab: Lab,
) -> None:
    """The same burst without HTTP in front: 40 unknown codes for one account, through
    `redeem_limited` on four workers at once, so that every attempt reaches its
    reservation at the same moment. Exactly 10 are refused on their merits, 30 locked."""
    workers = await lab.workers()
    customer = await customers.sign_up(
        workers[0].db,
        email="burst@example.com",
        password=PASSWORD,
        region="US",
        name=None,
        clock=lab.clock,
    )

    async def attempt(svc: Services) -> str:
        try:
            await redemption.redeem_limited(
                svc.unit_of_work(),
                svc.limits,
                customer,
                generate_code(),
                address=HOME,
                secret_key=svc.settings.secret_key,
                actor="test",
            )
        except GiftcardError as error:
            return error.code.value
        return "redeemed"

    await open_connections(workers, 10)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(attempt(workers[i % WORKERS]) for i in range(40))), BURST_TIMEOUT_S
    )

    assert Counter(outcomes) == {"code_not_found": 10, "too_many_attempts": 30}
    await lab.assert_counted_in_storage()


async def test_a_burst_of_password_guesses_across_workers_is_cut_off(lab: Lab) -> None:
    """Given four workers and a limit of 3 failed log-ins per email and address, 20 wrong
    passwords sent at once get 3 × 401 and 17 × 429."""
    workers = await lab.workers(limit_login_failures_account="3/15minutes")
    clients = [lab.client(svc, ELSEWHERE) for svc in workers]
    victim = await sign_up(lab.client(workers[0]))

    responses = await asyncio.wait_for(
        asyncio.gather(
            *(log_in(clients[i % WORKERS], victim.email, f"guess {i:04}") for i in range(20))
        ),
        BURST_TIMEOUT_S,
    )

    assert Counter(r.status_code for r in responses) == {401: 3, 429: 17}
    await lab.assert_counted_in_storage()


async def test_maintenance_purges_units_past_their_window(lab: Lab, clock: FrozenClock) -> None:
    """Units that left their window are removed by the server's sweeper (database) or
    by Redis itself; either way the account is free again."""
    svc = await lab.start(limit_redeem_failures_account="2/15minutes")
    client = lab.client(svc)
    shopper = await sign_up(client)
    for _ in range(2):
        assert (await redeem(client, shopper, generate_code())).status_code == 404
    await lab.assert_counted_in_storage()

    # The sign-up's unit has the longest window, an hour.
    clock.advance(timedelta(hours=1))
    await svc.maintain_once()

    if lab.redis_url is None:
        assert await lab.units_in_database() == 0
    assert (await redeem(client, shopper, generate_code())).status_code == 404


async def test_redis_down_refuses_limited_requests_with_503(
    settings: Settings, clock: FrozenClock
) -> None:
    """Given GIFTCARD_REDIS_URL pointing at a closed port: redeeming, signing up and
    logging in are refused with 503 service_unavailable and a detail naming Redis (never
    a 500, never let through uncounted), nothing is redeemed, and /readyz answers 503."""
    svc = Services.build(
        replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"), clock=clock
    )
    try:
        customer = await customers.sign_up(
            svc.db,
            email="down@example.com",
            password=PASSWORD,
            region="US",
            name=None,
            clock=clock,
        )
        session = await customers.log_in(
            svc.db, email=customer.email, password=PASSWORD, ttl_s=3600, clock=clock
        )
        shopper = Shopper(str(customer.id), customer.email, session.token, "US")
        transport = httpx.ASGITransport(app=create_app(services=svc), client=(HOME, 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            admin = await api_key(svc)
            [card] = await issue(client, admin, amount=500)

            answers = [
                await redeem(client, shopper, card["code"]),
                await client.post(
                    "/v1/customers",
                    json={"email": "new@example.com", "password": PASSWORD, "region": "US"},
                ),
                await log_in(client, customer.email, PASSWORD),
                await client.get("/readyz"),
            ]
            for response in answers:
                body = assert_problem(response, 503, "service_unavailable")
                assert "Redis" in body["detail"], body
            assert await card_state(client, admin, card) == "active"
            assert await total_balance(client, shopper) == 0
    finally:
        await svc.close()


GENEROUS = "10000/15minutes"


def address(number: int) -> str:
    """A distinct client address for each number, as many guessers' would be."""
    return f"198.18.{number // 250}.{number % 250 + 1}"


async def test_codes_matching_no_card_pause_redemptions_for_everyone(
    lab: Lab, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a service-wide limit of 3 codes that match no card an hour, and per-requester
    limits that never bind: mistyped, malformed, already redeemed and other stores' codes
    are answered on their merits without spending it, and so are successful redemptions;
    three unknown codes from three addresses fill it. Then a VALID code from a fourth
    address and a new account is refused 429 like any other (paused, not checked), the
    card stays active and the pause is logged once; it did not count against that
    requester, and once the hour has moved past the oldest unknown code the same code is
    redeemed."""
    svc = await lab.start(
        limit_redeem_failures_account=GENEROUS,
        limit_redeem_failures_address=GENEROUS,
        limit_redeem_misses_service="3/hour",
    )
    admin = await api_key(svc)
    home = lab.client(svc, HOME)
    cards = await issue(home, admin, amount=500, count=5)
    [british] = await issue(home, admin, amount=500, region="GB")
    shopper = await sign_up(home)

    for card in cards[:4]:
        assert (await redeem(home, shopper, card["code"])).status_code == 201
    merits = [
        (await redeem(home, shopper, code)).json()["code"]
        for code in (
            mistyped(cards[4]["code"]),
            "0000",
            cards[0]["code"],
            british["code"],
        )
        for _ in range(2)
    ]
    assert Counter(merits) == {
        "code_mistyped": 2,
        "code_malformed": 2,
        "code_already_redeemed": 2,
        "region_mismatch": 2,
    }

    for number in range(3):
        guesser = lab.client(svc, address(number))
        answer = await redeem(guesser, await sign_up(guesser), generate_code())
        assert_problem(answer, 404, "code_not_found")
        clock.advance(timedelta(minutes=10))

    owner_client = lab.client(svc, address(99))
    owner = await sign_up(owner_client)
    with caplog.at_level("WARNING", logger="giftcard.limits"):
        paused = await redeem(owner_client, owner, cards[4]["code"])
        again = await redeem(owner_client, owner, generate_code())
    retry_after_s = assert_locked(paused, window_s=3600)
    assert retry_after_s == 3600 - 30 * 60
    assert_locked(again, window_s=3600)
    assert "paused" in paused.json()["detail"]
    assert paused.json()["detail"] == again.json()["detail"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "redemptions are paused" in warnings[0]
    assert await card_state(home, admin, cards[4]) == "active"

    clock.advance(timedelta(seconds=retry_after_s))
    redeemed = await redeem(owner_client, owner, cards[4]["code"])
    assert redeemed.status_code == 201, redeemed.text
    assert await total_balance(owner_client, owner) == 500
    await lab.assert_counted_in_storage()


async def test_a_paused_service_does_not_count_against_the_requester(lab: Lab) -> None:
    """Given an account limit of 1 and a service-wide limit of 1: once another shopper's
    unknown code has filled the service's, this account's paused attempts are refused
    but not counted: after three of them, a mistyped code (which the check symbol
    refuses without looking anything up) is still answered on its merits, spending the
    account's one refusal, and only then is the account locked."""
    svc = await lab.start(
        limit_redeem_failures_account="1/15minutes",
        limit_redeem_failures_address=GENEROUS,
        limit_redeem_misses_service="1/hour",
    )
    home = lab.client(svc, HOME)
    away = lab.client(svc, ELSEWHERE)
    admin = await api_key(svc)
    [card] = await issue(home, admin, amount=300)
    shopper = await sign_up(home)
    assert_problem(await redeem(away, await sign_up(away), generate_code()), 404, "code_not_found")

    for _ in range(3):
        assert_locked(await redeem(home, shopper, card["code"]), window_s=3600)
    # A code the check symbol refuses does not look anything up, so it is answered on
    # its merits while redemptions are paused, and spends the account's one refusal.
    assert_problem(await redeem(home, shopper, mistyped(card["code"])), 422, "code_mistyped")
    assert_locked(await redeem(home, shopper, mistyped(card["code"])))


@ALL_ISOLATIONS
async def test_a_burst_from_many_addresses_checks_exactly_the_service_limit(lab: Lab) -> None:
    """Given four workers on one database and store, a service-wide limit of 12, and 40
    unknown codes sent at once from 40 addresses and accounts (so that no requester's own
    limit binds), exactly 12 are looked up (404) and 28 refused (429): the service-wide
    unit is reserved before the lookup, atomically, across the workers."""
    workers = await lab.workers(limit_redeem_misses_service="12/hour")
    guessers = []
    for number in range(40):
        http = lab.client(workers[number % WORKERS], address(number))
        guessers.append((http, await sign_up(http)))
    await open_connections(workers, 10)

    responses = await asyncio.wait_for(
        asyncio.gather(*(redeem(http, shopper, generate_code()) for http, shopper in guessers)),
        BURST_TIMEOUT_S,
    )

    assert Counter(r.status_code for r in responses) == {404: 12, 429: 28}
    await lab.assert_counted_in_storage()
