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
- four addresses, each with many accounts;
- a horde of ten more addresses with several accounts each, none of which reaches its
  own limits: what stops it is the service-wide limit on codes that match no card,
  which every guess so far has been counted against.

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
(32^15 + 1) / (10^7 + 1), and so the expected years. The per-account and per-address
limits alone would give N addresses N times one address's rate; the service-wide limit
caps every guesser together, so the test asserts that guessers with any number of
addresses and accounts, on any number of workers, need more than 10^9 years. Run it
with `-s` to see the table.
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
HORDE_ADDRESSES = 10
HORDE_ACCOUNTS_PER_ADDRESS = 3
# The horde's accounts stop one short of their own limit, so that whichever of them the
# server happens to serve first, only the service's limit can refuse them.
HORDE_GUESSES_PER_ACCOUNT = ACCOUNT_LIMIT - 1
SERVICE_LIMIT = 400
SERVICE_WINDOW_S = 3600

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
    window, rounded up to a whole second. That attempt was counted after `started`, and
    the refusal was decided between its request and its answer. So the window is at
    least Retry-After - 1 and at most Retry-After plus the time since `started`. When
    the attempt the refusals wait for is known to have been counted before a moment
    (`oldest_counted_by`: for a limit shared by every guesser, the first answer that
    said a guess was counted), the window is also at least that plus the time from that
    moment to the refused request."""

    def __init__(self, started: float | None = None, oldest_counted_by: float | None = None):
        self.started = time.monotonic() if started is None else started
        self.oldest_counted_by = oldest_counted_by
        self.shortest_s = 0.0
        self.longest_s = math.inf

    def __repr__(self) -> str:
        return f"Window({self.shortest_s:.1f}s to {self.longest_s:.1f}s)"

    def refused(self, response: httpx.Response, *, sent_at: float | None = None) -> None:
        retry_after_s = int(response.headers["retry-after"])
        shortest_s = float(retry_after_s - 1)
        if sent_at is not None and self.oldest_counted_by is not None:
            shortest_s += max(0.0, sent_at - self.oldest_counted_by)
        self.shortest_s = max(self.shortest_s, shortest_s)
        elapsed_s = math.ceil(time.monotonic() - self.started)
        self.longest_s = min(self.longest_s, retry_after_s + elapsed_s)

    def checked(self, expected_s: int) -> float:
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
    paused: int  # of those, refused because redemptions were paused for everyone
    window: Window
    checked_by_address: Counter[str]
    checked_by_account: Counter[str]
    first_checked_at: float | None  # when the first code_not_found answer arrived


@dataclass(frozen=True)
class Row:
    attacker: str
    addresses: int
    accounts: int
    checked: int
    window_s: float
    # The most every guesser together may have checked in an hour: its own limits'
    # rate cannot be kept up for an hour beyond it.
    cap_per_hour: float = math.inf

    @property
    def guesses_per_hour(self) -> float:
        return min(self.checked * 3600 / self.window_s, self.cap_per_hour)

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


async def guess(
    attackers: Sequence[Attacker],
    server: Server,
    window: Window | None = None,
    per_account: int = GUESSES_PER_ACCOUNT,
) -> Burst:
    """Every account sends `per_account` random codes that pass the check symbol, each
    address IN_FLIGHT_MAX at a time; all addresses at once. The refusals bound `window`,
    a new one unless given."""
    checked_by_address: Counter[str] = Counter()
    checked_by_account: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    paused = 0
    window = Window() if window is None else window
    first_checked_at: list[float] = []

    async def one(
        http: httpx.AsyncClient, address: str, account: int, auth: dict[str, str]
    ) -> None:
        nonlocal paused
        sent_at = time.monotonic()
        response = await http.post(
            "/v1/me/redemptions", json={"code": generate_code()}, headers=auth
        )
        code = response.json().get("code")
        outcomes[code] += 1
        if code == "code_not_found":
            first_checked_at.append(time.monotonic())
            checked_by_address[address] += 1
            checked_by_account[f"{address} #{account}"] += 1
        elif code == "too_many_attempts":
            window.refused(response, sent_at=sent_at)
            if "paused" in response.json()["detail"]:
                paused += 1
        else:
            pytest.fail(f"a guess was answered {response.status_code}: {response.text}")

    async def from_address(who: Attacker) -> None:
        async with client(server, who.address) as http:
            # Interleaved, so that the accounts' guesses race each other.
            work = [
                (account, auth)
                for _ in range(per_account)
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
        paused=paused,
        window=window,
        checked_by_address=checked_by_address,
        checked_by_account=checked_by_account,
        first_checked_at=min(first_checked_at, default=None),
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
            f"{row.window_s:>6.0f}s {row.guesses_per_hour:>12.1f} {row.years:>14.3g}"
        )
    return "\n".join(lines)


async def test_guessing_a_code_takes_more_than_a_billion_years_from_any_number_of_addresses(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given a real server with three workers at the default limits, when guessers from
    one address with one account, one address with many accounts, four addresses with
    many accounts each, and then ten more addresses send more well-formed guesses than
    they are allowed, then exactly the limits' worth are checked (10 per account and 50
    per address, whatever the number of accounts or workers; 400 in all, whatever the
    number of addresses), every further one is refused (for a 15-minute window, or the
    service's hour), a valid code is refused too while its guesser is locked and, from
    anyone, while the service is paused; an address may sign up 20 accounts an hour, and
    no guesser, however many addresses it has, gets a hit in under 10^9 expected years."""
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
        lone, *others = await asyncio.gather(
            attacker(server, "127.0.0.2", accounts=1),
            *(
                attacker(server, f"127.0.0.{4 + number}", accounts=ACCOUNTS_PER_ADDRESS)
                for number in range(MANY_ADDRESSES)
            ),
            *(
                attacker(server, f"127.0.1.{1 + number}", accounts=HORDE_ACCOUNTS_PER_ADDRESS)
                for number in range(HORDE_ADDRESSES)
            ),
        )
        crowd, horde = others[:MANY_ADDRESSES], others[MANY_ADDRESSES:]
        (card,) = issue_cards(server, create_api_key(env), amount=2500)
        owner = await attacker(server, "127.0.0.99", accounts=1)
        latecomer = await attacker(server, "127.0.0.98", accounts=1)

        started = time.monotonic()
        lone_burst = await guess([lone], server)
        hoarder_burst = await guess([hoarder], server)
        crowd_burst = await guess(crowd, server)

        # Locked out, a valid code is refused like any other guess, so the lock tells the
        # guesser nothing; from a fresh address and account the same code is redeemed.
        async with client(server, lone.address) as http:
            locked = await http.post(
                "/v1/me/redemptions", json={"code": card["code"]}, headers=lone.accounts[0]
            )
        async with client(server, owner.address) as http:
            redeemed = await http.post(
                "/v1/me/redemptions", json={"code": card["code"]}, headers=owner.accounts[0]
            )
        assert locked.status_code == 429, locked.text
        assert redeemed.status_code == 201, redeemed.text

        # Every unit of the service-wide limit was taken by a guess, the oldest by the
        # lone guesser's first.
        service_window = Window(started, oldest_counted_by=lone_burst.first_checked_at)
        horde_burst = await guess(horde, server, service_window, HORDE_GUESSES_PER_ACCOUNT)
        burst_s = time.monotonic() - started

        # Paused, the service refuses a code from anyone before looking it up.
        async with client(server, latecomer.address) as http:
            paused = await http.post(
                "/v1/me/redemptions", json={"code": generate_code()}, headers=latecomer.accounts[0]
            )
        assert paused.status_code == 429, paused.text
        assert "paused" in paused.json()["detail"]

    # Refusals start exactly at each limit, across the workers.
    assert lone_burst.checked == ACCOUNT_LIMIT, lone_burst
    assert hoarder_burst.checked == ADDRESS_LIMIT, hoarder_burst
    assert max(hoarder_burst.checked_by_account.values()) <= ACCOUNT_LIMIT
    assert crowd_burst.checked_by_address == dict.fromkeys(
        [who.address for who in crowd], ADDRESS_LIMIT
    ), crowd_burst
    everyone_checked = (
        lone_burst.checked + hoarder_burst.checked + crowd_burst.checked + horde_burst.checked
    )
    assert everyone_checked == SERVICE_LIMIT, horde_burst
    # The horde was stopped by the service's limit, none of its own.
    assert horde_burst.refused == horde_burst.paused, horde_burst
    assert max(horde_burst.checked_by_address.values()) < ADDRESS_LIMIT, horde_burst
    # The guessers stopped before it were refused by their own limits.
    assert lone_burst.paused == hoarder_burst.paused == crowd_burst.paused == 0
    assert lone_burst.refused
    assert hoarder_burst.refused
    assert crowd_burst.refused
    assert horde_burst.refused
    # The server counted each source address as its own client.
    seen = access_log_clients(log_path)
    every_address = {lone.address, hoarder.address, *(who.address for who in crowd + horde)}
    assert every_address <= seen, seen - every_address

    service_window_s = service_window.checked(SERVICE_WINDOW_S)
    cap = everyone_checked * 3600 / service_window_s
    rows = [
        Row(
            "one address, one account",
            1,
            1,
            lone_burst.checked,
            lone_burst.window.checked(REDEEM_WINDOW_S),
            cap,
        ),
        Row(
            "one address, many accounts",
            1,
            len(hoarder.accounts),
            hoarder_burst.checked,
            hoarder_burst.window.checked(REDEEM_WINDOW_S),
            cap,
        ),
        Row(
            f"{MANY_ADDRESSES} addresses, many accounts each",
            MANY_ADDRESSES,
            MANY_ADDRESSES * ACCOUNTS_PER_ADDRESS,
            crowd_burst.checked,
            crowd_burst.window.checked(REDEEM_WINDOW_S),
            cap,
        ),
        Row(
            f"all {len(every_address)} addresses together",
            len(every_address),
            1
            + len(hoarder.accounts)
            + MANY_ADDRESSES * ACCOUNTS_PER_ADDRESS
            + HORDE_ADDRESSES * HORDE_ACCOUNTS_PER_ADDRESS,
            everyone_checked,
            service_window_s,
        ),
    ]
    print(
        f"\nGuessing a code: {WORKERS} workers, default limits, {burst_s:.1f}s of guessing, "
        f"{ACTIVE_CARDS:,} active cards among {CODE_SPACE:.3g} codes "
        f"(expected {expected_guesses():.3g} guesses per hit)\n"
        f"{table(rows)}\n"
        f"sign-ups from one address: {signups_allowed} per {signup_window_s:.0f}s\n"
        f"any number of addresses: at most {rows[-1].guesses_per_hour:.1f} guesses/hour, "
        f"{rows[-1].years:.3g} years per hit"
    )

    for row in rows:
        assert row.years > YEARS_REQUIRED, row
