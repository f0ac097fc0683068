"""How long would a guesser need to find a valid code? Measured on a real server.

A real `giftcard serve` with three workers runs at the DEFAULT abuse limits (SPEC §8; no
GIFTCARD_LIMIT_ variable is set), on SQLite and on PostgreSQL. Three attackers, each
from loopback addresses of its own (127.0.0.2 upward, bound as the client's source
address, so that the server counts them as distinct clients, which its access log is
checked to confirm), send well-formed guesses that pass the check symbol, several at a
time, so that they land on different workers:

- one address, one account;
- one address, many accounts (as many as the address may sign up, which is measured
  too), more than enough to fill the address's limit;
- many addresses, each with many accounts.

The test does not wait out a 15-minute window. It measures where refusals start (how
many guesses are checked against the database before every further one is answered
429 `too_many_attempts`) and how long the window is (each refusal's `Retry-After` is the
time until the oldest counted guess leaves its window, so the window is at least the
largest `Retry-After` minus the second it is rounded up by). The hourly rate follows
from how the limits count: every refused guess holds its unit for one window from its
own moment, so no window-long interval holds more than the limit, and an hour at most
`limit x 3600 / window`, which a patient guesser reaches by sending a guess whenever a
unit comes free. Using the shortest window the answers allow errs in the guesser's
favour.

From that rate: the expected number of guesses to hit one of 10 million active cards,
when guessing distinct codes that pass the check at random among the 32^15 that do, is
(32^15 + 1) / (10^7 + 1), and so the expected years. The limits are per account and per
address, so an attacker with N addresses gets N times one address's rate: the test
asserts that one address (with any number of accounts, on any number of workers) needs
more than 10^9 years, and prints what N addresses need. Run it with `-s` to see the
table.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from giftcard.codes import ALPHABET, CODE_LENGTH, generate_code
from tests.e2e.server import Server, base_env, create_api_key, issue_cards, running_server

pytestmark = pytest.mark.e2e

WORKERS = 3
REQUEST_TIMEOUT_S = 60
BURST_TIMEOUT_S = 180
# Guesses on the wire at once from one address: enough to race the workers, few enough
# that the guessers' 32 fit the server's default connection pools.
IN_FLIGHT_MAX = 8
PASSWORD = "correct horse battery"

# SPEC §8 defaults, which the server is expected to apply when nothing is configured.
ACCOUNT_LIMIT = 10
ADDRESS_LIMIT = 50
REDEEM_WINDOW_S = 15 * 60
SIGNUP_LIMIT = 20
SIGNUP_WINDOW_S = 3600

# Guesses per account: more than the account's limit, so that every limit is reached.
GUESSES_PER_ACCOUNT = ACCOUNT_LIMIT + 2
# Accounts used per guessing address: together they could make more failed guesses than
# the address is allowed, so it is the address's limit that shows.
ACCOUNTS_PER_ADDRESS = ADDRESS_LIMIT // ACCOUNT_LIMIT + 1
SIGNUP_ATTEMPTS_MAX = SIGNUP_LIMIT + 5
MANY_ADDRESSES = 4

ACTIVE_CARDS = 10_000_000
# The check symbol is fixed by the other fifteen, so only 32^15 strings are codes that a
# guesser who knows the scheme would try; a guess failing the check is wasted, and counts.
CODE_SPACE: int = len(ALPHABET) ** (CODE_LENGTH - 1)
HOURS_PER_YEAR = 365.25 * 24
YEARS_REQUIRED = 1e9


@dataclass
class Attacker:
    """The accounts one source address guesses with."""

    address: str
    accounts: list[dict[str, str]] = field(default_factory=list)


class Window:
    """Bounds on a limit's window from the refusals' Retry-After headers.

    A refusal's Retry-After is the time until the oldest counted attempt leaves the
    window, rounded up to a whole second. That attempt was counted after `started` and
    before the refusal, so the window lies between Retry-After - 1 and Retry-After plus
    the seconds since `started`."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.shortest_s = 0
        self.longest_s = math.inf

    def __repr__(self) -> str:
        return f"Window({self.shortest_s}s to {self.longest_s}s)"

    def refused(self, response: httpx.Response) -> None:
        retry_after_s = int(response.headers["retry-after"])
        elapsed_s = math.ceil(time.monotonic() - self.started)
        self.shortest_s = max(self.shortest_s, retry_after_s - 1)
        self.longest_s = min(self.longest_s, retry_after_s + elapsed_s)

    def checked(self, expected_s: int) -> int:
        """The shortest window the answers allow, once they are seen to allow `expected_s`:
        the shortest window gives the guesser the highest rate."""
        assert self.longest_s < math.inf, "no attempt was refused"
        assert self.shortest_s <= expected_s <= self.longest_s, (self.shortest_s, self.longest_s)
        return self.shortest_s


@dataclass
class Burst:
    """What a burst of guesses from some addresses was answered."""

    checked: int  # answered code_not_found: looked up, so a real guess
    refused: int  # answered too_many_attempts
    window: Window
    checked_by_address: Counter[str]
    checked_by_account: Counter[str]


@dataclass(frozen=True)
class Row:
    attacker: str
    addresses: int
    accounts: int
    checked: int
    window_s: int

    @property
    def guesses_per_hour(self) -> float:
        return self.checked * 3600 / self.window_s

    @property
    def years(self) -> float:
        return expected_guesses() / self.guesses_per_hour / HOURS_PER_YEAR


def expected_guesses() -> float:
    """Mean draws until the first active card when drawing distinct codes at random."""
    return (CODE_SPACE + 1) / (ACTIVE_CARDS + 1)


def client(server: Server, address: str) -> httpx.AsyncClient:
    """A client whose requests leave from `address`, so that the server sees it."""
    return httpx.AsyncClient(
        base_url=server.base_url,
        timeout=REQUEST_TIMEOUT_S,
        transport=httpx.AsyncHTTPTransport(local_address=address),
        limits=httpx.Limits(max_connections=IN_FLIGHT_MAX),
    )


async def sign_up(http: httpx.AsyncClient, email: str) -> httpx.Response:
    return await http.post(
        "/v1/customers", json={"email": email, "password": PASSWORD, "region": "US"}
    )


async def log_in(http: httpx.AsyncClient, email: str) -> dict[str, str]:
    session = await http.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert session.status_code == 201, session.text
    return {"Authorization": f"Bearer {session.json()['token']}"}


async def attacker(server: Server, address: str, accounts: int) -> Attacker:
    """`accounts` accounts signed up and logged in from `address`."""
    found = Attacker(address)
    async with client(server, address) as http:
        for number in range(accounts):
            email = f"guesser-{number}@{address}.example"
            created = await sign_up(http, email)
            assert created.status_code == 201, created.text
            found.accounts.append(await log_in(http, email))
    return found


async def guess(attackers: Sequence[Attacker], server: Server) -> Burst:
    """Every account sends GUESSES_PER_ACCOUNT random codes that pass the check symbol,
    each address IN_FLIGHT_MAX at a time; all addresses at once."""
    checked_by_address: Counter[str] = Counter()
    checked_by_account: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    window = Window()

    async def one(
        http: httpx.AsyncClient, address: str, account: int, auth: dict[str, str]
    ) -> None:
        response = await http.post(
            "/v1/me/redemptions", json={"code": generate_code()}, headers=auth
        )
        code = response.json().get("code")
        outcomes[code] += 1
        if code == "code_not_found":
            checked_by_address[address] += 1
            checked_by_account[f"{address} #{account}"] += 1
        elif code == "too_many_attempts":
            window.refused(response)
        else:
            pytest.fail(f"a guess was answered {response.status_code}: {response.text}")

    async def from_address(who: Attacker) -> None:
        async with client(server, who.address) as http:
            # Interleaved, so that the accounts' guesses race each other.
            work = [
                (account, auth)
                for _ in range(GUESSES_PER_ACCOUNT)
                for account, auth in enumerate(who.accounts)
            ]
            gate = asyncio.Semaphore(IN_FLIGHT_MAX)

            async def gated(account: int, auth: dict[str, str]) -> None:
                async with gate:
                    await one(http, who.address, account, auth)

            await asyncio.gather(*(gated(account, auth) for account, auth in work))

    await asyncio.wait_for(
        asyncio.gather(*(from_address(who) for who in attackers)), BURST_TIMEOUT_S
    )
    assert set(outcomes) <= {"code_not_found", "too_many_attempts"}, outcomes
    return Burst(
        checked=outcomes["code_not_found"],
        refused=outcomes["too_many_attempts"],
        window=window,
        checked_by_address=checked_by_address,
        checked_by_account=checked_by_account,
    )


def access_log_clients(log_path: Path) -> set[str]:
    clients = set()
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == "request" and entry.get("path") == "/v1/me/redemptions":
                clients.add(entry["client"])
    return clients


def table(rows: Sequence[Row]) -> str:
    lines = [
        f"{'attacker':<34} {'addr':>4} {'accts':>5} {'checked':>7} {'window':>7} "
        f"{'guesses/hour':>12} {'expected years':>14}"
    ]
    for row in rows:
        lines.append(
            f"{row.attacker:<34} {row.addresses:>4} {row.accounts:>5} {row.checked:>7} "
            f"{row.window_s:>6}s {row.guesses_per_hour:>12.1f} {row.years:>14.3g}"
        )
    return "\n".join(lines)


async def test_guessing_a_code_takes_more_than_a_billion_years_per_address(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given a real server with three workers at the default limits, when guessers from
    one address with one account, one address with many accounts, and four addresses
    with many accounts each send more well-formed guesses than they are allowed, then
    exactly the limits' worth are checked (10 per account, 50 per address, whatever the
    number of accounts or workers), every further one is refused for a 15-minute window,
    a valid code is refused too while locked, an address may sign up 20 accounts an
    hour, and one address's rate leaves more than 10^9 expected years per hit."""
    env = base_env(server_database_url)
    assert not any(key.startswith("GIFTCARD_LIMIT_") for key in env)
    log_path = tmp_path / "server.log"
    with running_server(env, log_path, workers=WORKERS) as server:
        # Sign-ups from one address: 20 an hour, then refused for the rest of the hour.
        hoarder = Attacker("127.0.0.3")
        signup_window = Window()
        async with client(server, hoarder.address) as http:
            for number in range(SIGNUP_ATTEMPTS_MAX):
                email = f"hoarder-{number}@example.com"
                created = await sign_up(http, email)
                if created.status_code == 429:
                    signup_window.refused(created)
                    break
                assert created.status_code == 201, created.text
                if len(hoarder.accounts) < ACCOUNTS_PER_ADDRESS:
                    hoarder.accounts.append(await log_in(http, email))
            signups_allowed = number
        assert signups_allowed == SIGNUP_LIMIT
        signup_window_s = signup_window.checked(SIGNUP_WINDOW_S)

        # Each address signs its accounts up at the same time as the others, as
        # independent attackers would, which also keeps the test short.
        lone, *crowd = await asyncio.gather(
            attacker(server, "127.0.0.2", accounts=1),
            *(
                attacker(server, f"127.0.0.{4 + number}", accounts=ACCOUNTS_PER_ADDRESS)
                for number in range(MANY_ADDRESSES)
            ),
        )

        started = time.monotonic()
        lone_burst = await guess([lone], server)
        hoarder_burst = await guess([hoarder], server)
        crowd_burst = await guess(crowd, server)
        burst_s = time.monotonic() - started

        # Locked out, a valid code is refused like any other guess, so the lock tells the
        # guesser nothing; from a fresh address and account the same code is redeemed.
        (card,) = issue_cards(server, create_api_key(env), amount=2500)
        async with client(server, lone.address) as http:
            locked = await http.post(
                "/v1/me/redemptions", json={"code": card["code"]}, headers=lone.accounts[0]
            )
        owner = await attacker(server, "127.0.0.99", accounts=1)
        async with client(server, owner.address) as http:
            redeemed = await http.post(
                "/v1/me/redemptions", json={"code": card["code"]}, headers=owner.accounts[0]
            )
        assert locked.status_code == 429, locked.text
        assert redeemed.status_code == 201, redeemed.text

    # Refusals start exactly at each limit, across the workers.
    assert lone_burst.checked == ACCOUNT_LIMIT, lone_burst
    assert hoarder_burst.checked == ADDRESS_LIMIT, hoarder_burst
    assert max(hoarder_burst.checked_by_account.values()) <= ACCOUNT_LIMIT
    assert crowd_burst.checked_by_address == dict.fromkeys(
        [who.address for who in crowd], ADDRESS_LIMIT
    ), crowd_burst
    assert lone_burst.refused
    assert hoarder_burst.refused
    assert crowd_burst.refused
    # The server counted each source address as its own client.
    seen = access_log_clients(log_path)
    assert {lone.address, hoarder.address, *(who.address for who in crowd)} <= seen, seen

    rows = [
        Row(
            "one address, one account",
            1,
            1,
            lone_burst.checked,
            lone_burst.window.checked(REDEEM_WINDOW_S),
        ),
        Row(
            "one address, many accounts",
            1,
            len(hoarder.accounts),
            hoarder_burst.checked,
            hoarder_burst.window.checked(REDEEM_WINDOW_S),
        ),
        Row(
            f"{MANY_ADDRESSES} addresses, many accounts each",
            MANY_ADDRESSES,
            MANY_ADDRESSES * ACCOUNTS_PER_ADDRESS,
            crowd_burst.checked,
            crowd_burst.window.checked(REDEEM_WINDOW_S),
        ),
    ]
    per_address = max(row.guesses_per_hour / row.addresses for row in rows)
    per_address_years = expected_guesses() / per_address / HOURS_PER_YEAR
    addresses_under_required = math.floor(per_address_years / YEARS_REQUIRED) + 1
    print(
        f"\nGuessing a code: {WORKERS} workers, default limits, {burst_s:.1f}s of guessing, "
        f"{ACTIVE_CARDS:,} active cards among {CODE_SPACE:.3g} codes "
        f"(expected {expected_guesses():.3g} guesses per hit)\n"
        f"{table(rows)}\n"
        f"sign-ups from one address: {signups_allowed} per {signup_window_s}s\n"
        f"one address: at most {per_address:.1f} guesses/hour, {per_address_years:.3g} "
        f"years per hit; N addresses: {per_address_years:.3g}/N years, under "
        f"{YEARS_REQUIRED:.0e} from N = {addresses_under_required}"
    )

    assert per_address_years > YEARS_REQUIRED
    for row in rows:
        assert row.years * row.addresses > YEARS_REQUIRED, row
