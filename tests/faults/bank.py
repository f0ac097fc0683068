"""The bank workload (after Jepsen's): money moves over HTTP while servers die, then a
plain model and the database must agree to the cent.

Customers are funded by redeeming issued cards. Concurrent clients redeem, pay (captured
at once, or held), capture and void holds, refund, adjust balances through the support
API and send gifts, each operation under its own Idempotency-Key and retried with that key
until it is answered, as Stripe's clients do: connection errors, timeouts, 5xx, 429 and
409 `idempotency_key_in_use` are retried. Now and then a client acts as if an answer was
lost on the way and sends the request once more after it was answered: the second answer
must be the first one, replayed.

Meanwhile each server's whole process group is killed with SIGKILL at random moments and
started again, and PostgreSQL itself may be crash-restarted (`pg_ctl restart -m
immediate`) on a private cluster.

The model is built only from acknowledged answers: each answer says what moved (the
amount redeemed, what the balance paid, what a capture released, where a refund went),
so the model does not depend on the order in which concurrent operations ran. At the end
:mod:`tests.faults.check` compares it with the database: every acknowledged operation
applied exactly once (journal, payments, refunds, adjustments, gifts), nothing refused
applied at all, every balance the model's and none negative, every operation answered
within a bound of the server being back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from giftcard import ids
from tests.e2e.server import base_env, create_api_key, run_cli
from tests.faults.check import Report, check
from tests.faults.processes import KillableServer, PrivatePostgres

REQUEST_TIMEOUT_S = 15.0
RETRY_DELAY_MIN_S = 0.02
RETRY_DELAY_MAX_S = 0.5
SETUP_TIMEOUT_S = 60.0
CARD_AMOUNTS = (500, 1000, 2500, 5000)
CARDS_PER_REQUEST_MAX = 1000
# Adjustments stay under GIFTCARD_ADJUSTMENT_APPROVAL_MINOR (10000), so they apply at once.
ADJUSTMENT_MAX = 5000
PASSWORD = "correct horse battery"

# How often each kind of operation is chosen.
WEIGHTS = {
    "redeem": 20,
    "pay": 30,
    "capture": 12,
    "void": 6,
    "refund": 12,
    "adjust": 12,
    "gift": 8,
}


@dataclass(frozen=True)
class BankSettings:
    duration_s: float
    clients: int = 8
    customers: int = 6
    cards: int = 600
    # Seconds a server stays up before its next kill, drawn uniformly. (A restart takes
    # several seconds more: each worker process imports the whole application.)
    kill_after_s: tuple[float, float] = (0.5, 4.0)
    kills: bool = True
    # The load goes on past `duration_s` until this many kills, for at most as long again.
    kills_min: int = 0
    # Crash-restarts of PostgreSQL (when the run has a private cluster), spread out.
    postgres_restarts: int = 0
    # Share of answered operations sent once more, as if their answer had been lost.
    lost_answer_rate: float = 0.1
    answered_within_s: float = 10.0
    # An operation not answered by then is given up on, and counted as a failure.
    operation_deadline_s: float = 120.0
    seed: int | None = None


@dataclass
class Operation:
    number: int
    kind: str
    path: str
    body: dict[str, Any] | None
    headers: dict[str, str]
    customer: int
    started_at: float = 0.0
    answered_at: float | None = None
    status: int | None = None
    answer: Any = None
    attempts: int = 0
    resent: httpx.Response | None = None
    # What the operation acted on: the hold or captured payment.
    subject: Payment | None = None

    @property
    def key(self) -> str:
        return self.headers["Idempotency-Key"]

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def error_code(self) -> str | None:
        if isinstance(self.answer, dict) and self.status is not None and self.status >= 400:
            code = self.answer.get("code")
            return str(code) if code is not None else None
        return None


@dataclass
class Payment:
    """A payment as the model knows it from acknowledged answers."""

    id: str
    order_id: str
    customer: int
    amount: int
    gift_card_amount: int
    status: str
    captured_amount: int = 0
    refunded_amount: int = 0
    refunds: list[int] = field(default_factory=list)


@dataclass
class Account:
    id: str
    number: int
    auth: dict[str, str]
    available: int = 0
    held: int = 0
    redemptions: list[str] = field(default_factory=list)


@dataclass
class Stats:
    kills: int = 0
    postgres_restarts: int = 0
    attempts: int = 0
    retried_errors: Counter[str] = field(default_factory=Counter)


class Bank:
    """One run of the workload against one or more servers sharing a database."""

    def __init__(
        self,
        servers: Sequence[KillableServer],
        admin: dict[str, str],
        settings: BankSettings,
        *,
        postgres: PrivatePostgres | None = None,
    ) -> None:
        self.servers = list(servers)
        self.admin = admin
        self.settings = settings
        self.postgres = postgres
        self.random = random.Random(settings.seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.accounts: list[Account] = []
        self.codes: list[str] = []
        self.holds: list[Payment] = []
        self.refundable: list[Payment] = []
        self.payments: dict[str, Payment] = {}
        self.operations: list[Operation] = []
        self.backs: list[float] = []
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self._numbers = iter(range(1, 10**9))
        self.http = httpx.AsyncClient(
            timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=4 * settings.clients),
        )

    # -- setup --------------------------------------------------------------------------

    async def setup(self) -> None:
        """Customers and cards, before anything is killed."""
        base = self.servers[0].base_url
        for number in range(self.settings.customers):
            email = f"bank-{self.run_id}-{number}@example.com"
            account = {"email": email, "password": PASSWORD}
            created = await self.http.post(f"{base}/v1/customers", json={**account, "region": "US"})
            assert created.status_code == 201, created.text
            session = await self.http.post(f"{base}/v1/sessions", json=account)
            assert session.status_code == 201, session.text
            customer_id = created.json()["id"]
            auth = {"Authorization": f"Bearer {session.json()['token']}"}
            if number % 2:
                # Half the customers take refunds of the other payment method's part
                # as balance too: store credit, new money the model must follow.
                changed = await self.http.patch(
                    f"{base}/v1/me",
                    json={"refund_preference": "gift_card_balance"},
                    headers=auth,
                )
                assert changed.status_code == 200, changed.text
            number_in_db = ids.parse_id(ids.CUSTOMER, customer_id)
            self.accounts.append(Account(customer_id, number_in_db, auth))
        per_amount = max(1, self.settings.cards // len(CARD_AMOUNTS))
        for amount in CARD_AMOUNTS:
            left = per_amount
            while left:
                count = min(left, CARDS_PER_REQUEST_MAX)
                issued = await self.http.post(
                    f"{base}/v1/cards",
                    json={"amount": amount, "region": "US", "kind": "digital", "count": count},
                    headers=self.admin,
                    timeout=SETUP_TIMEOUT_S,
                )
                assert issued.status_code == 201, issued.text
                self.codes.extend(card["code"] for card in issued.json()["data"])
                left -= count
        self.random.shuffle(self.codes)

    # -- sending ------------------------------------------------------------------------

    def _server(self) -> KillableServer:
        """A server that is up, as a load balancer's health check would pick; any of
        them while none is (a request then waits in a starting server's backlog)."""
        up = [server for server in self.servers if server.up]
        return self.random.choice(up or self.servers)

    def _back(self, server: KillableServer) -> None:
        """The server answers again: from now on its clients have no crash to blame."""
        if not server.up:
            server.up = True
            self.backs.append(time.monotonic())

    async def _send(self, operation: Operation) -> httpx.Response | None:
        """One attempt; None when it must be retried."""
        self.stats.attempts += 1
        operation.attempts += 1
        server = self._server()
        epoch = server.epoch
        try:
            response = await self.http.post(
                server.base_url + operation.path,
                json=operation.body,
                headers=operation.headers,
            )
        except httpx.TransportError as error:
            self.stats.retried_errors[type(error).__name__] += 1
            return None
        if server.epoch == epoch:
            # A request that waited in the backlog of a starting server may be answered
            # before the server's /readyz is: the server is back from that moment.
            self._back(server)
        if response.status_code >= 500 or response.status_code == 429:
            self.stats.retried_errors[f"HTTP {response.status_code}"] += 1
            return None
        if response.status_code == 409 and _code(response) == "idempotency_key_in_use":
            self.stats.retried_errors["idempotency_key_in_use"] += 1
            return None
        return response

    async def _until_answered(self, operation: Operation) -> httpx.Response | None:
        deadline = operation.started_at + self.settings.operation_deadline_s
        delay_s = RETRY_DELAY_MIN_S
        while time.monotonic() < deadline:
            response = await self._send(operation)
            if response is not None:
                return response
            await asyncio.sleep(self.random.uniform(0, delay_s))
            delay_s = min(delay_s * 2, RETRY_DELAY_MAX_S)
        return None

    async def perform(self, operation: Operation) -> None:
        self.operations.append(operation)
        operation.started_at = time.monotonic()
        response = await self._until_answered(operation)
        if response is None:
            return
        operation.answered_at = time.monotonic()
        operation.status = response.status_code
        operation.answer = _json(response)
        if self.random.random() < self.settings.lost_answer_rate:
            # As if the answer had been lost on the way back: the same request again.
            operation.resent = await self._until_answered(operation)
        self._apply(operation)

    # -- operations ---------------------------------------------------------------------

    def _operation(
        self, kind: str, path: str, body: dict[str, Any] | None, auth: dict[str, str], who: int
    ) -> Operation:
        number = next(self._numbers)
        key = f"bank-{self.run_id}-{number}"
        return Operation(number, kind, path, body, {**auth, "Idempotency-Key": key}, who)

    def _next(self) -> Operation:
        kinds = list(WEIGHTS)
        while True:
            kind = self.random.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
            made = self._make(kind)
            if made is not None:
                return made

    def _make(self, kind: str) -> Operation | None:
        who = self.random.randrange(len(self.accounts))
        account = self.accounts[who]
        if kind == "redeem":
            if not self.codes:
                return None
            return self._operation(
                kind, "/v1/me/redemptions", {"code": self.codes.pop()}, account.auth, who
            )
        if kind == "pay":
            number = next(self._numbers)
            amount = self.random.randint(100, 4000)
            body = {
                "customer_id": account.id,
                "order_id": f"order-{self.run_id}-{number}",
                "amount": amount,
                "currency": "USD",
                "use_balance": self.random.choice(["max", "max", self.random.randint(0, amount)]),
                "capture": self.random.random() < 0.5,
            }
            return self._operation(kind, "/v1/payments", body, self.admin, who)
        if kind in ("capture", "void"):
            if not self.holds:
                return None
            hold = self.holds.pop(self.random.randrange(len(self.holds)))
            capture_body: dict[str, Any] | None = None
            if kind == "capture" and self.random.random() < 0.5:
                # A partial capture: the rest of the hold goes back to the balance.
                capture_body = {"amount": self.random.randint(1, hold.amount)}
            made = self._operation(
                kind, f"/v1/payments/{hold.id}/{kind}", capture_body, self.admin, hold.customer
            )
            made.subject = hold
            return made
        if kind == "refund":
            if not self.refundable:
                return None
            paid = self.refundable.pop(self.random.randrange(len(self.refundable)))
            left = paid.captured_amount - paid.refunded_amount
            body = {"amount": self.random.randint(1, left)}
            made = self._operation(
                kind, f"/v1/payments/{paid.id}/refunds", body, self.admin, paid.customer
            )
            made.subject = paid
            return made
        if kind == "adjust":
            amount = self.random.randint(1, ADJUSTMENT_MAX)
            if self.random.random() < 0.4:
                amount = -amount
            body = {"amount": amount, "reason": "correction", "note": ""}
            made = self._operation(
                kind, f"/v1/support/customers/{account.id}/adjustments", body, self.admin, who
            )
            # The note names the operation, so that the database can be asked about it.
            body["note"] = f"bank {made.key}"
            return made
        if kind == "gift":
            number = next(self._numbers)
            body = {
                "amount": self.random.randint(100, 5000),
                "region": "US",
                "recipient_email": f"gift-{self.run_id}-{number}@example.com",
                "sender_name": "Bank",
                "purchaser_customer_id": account.id,
            }
            return self._operation(kind, "/v1/gifts", body, self.admin, who)
        raise ValueError(kind)

    def _apply(self, operation: Operation) -> None:
        """Move the model by what the acknowledged answer says moved; hand the payment it
        acted on back to the pools for the next operations."""
        account = self.accounts[operation.customer]
        answer = operation.answer if isinstance(operation.answer, dict) else {}
        subject = operation.subject
        if not operation.acknowledged:
            if subject is not None and operation.kind == "refund":
                self.refundable.append(subject)
            return
        if operation.kind == "redeem":
            account.available += answer["amount"]
            account.redemptions.append(answer["id"])
        elif operation.kind == "pay":
            gift = answer["gift_card_amount"]
            paid = Payment(
                answer["id"],
                answer["order_id"],
                operation.customer,
                answer["amount"],
                gift,
                answer["status"],
                captured_amount=answer["captured_amount"],
            )
            self.payments[paid.id] = paid
            account.available -= gift
            if paid.status == "authorized":
                account.held += gift
                self.holds.append(paid)
            elif paid.captured_amount:
                self.refundable.append(paid)
        elif operation.kind in ("capture", "void") and subject is not None:
            account.held -= subject.gift_card_amount
            captured_gift = answer["gift_card_amount"] if operation.kind == "capture" else 0
            account.available += subject.gift_card_amount - captured_gift
            subject.status = answer["status"]
            subject.captured_amount = answer["captured_amount"]
            if subject.captured_amount:
                self.refundable.append(subject)
        elif operation.kind == "refund" and subject is not None:
            account.available += answer["to_gift_card_balance"]
            subject.refunded_amount += answer["amount"]
            subject.refunds.append(answer["amount"])
            if subject.refunded_amount < subject.captured_amount:
                self.refundable.append(subject)
        elif operation.kind == "adjust" and answer["status"] == "applied":
            account.available += answer["amount"]

    # -- the run ------------------------------------------------------------------------

    async def _client(self) -> None:
        while not self.stopping.is_set():
            await self.perform(self._next())

    async def _killer(self, server: KillableServer) -> None:
        low, high = self.settings.kill_after_s
        while True:
            await asyncio.sleep(self.random.uniform(low, high))
            if self.stopping.is_set():
                return
            await server.kill()
            self.stats.kills += 1
            await server.start()
            self._back(server)

    async def _restart_postgres(self, postgres: PrivatePostgres) -> None:
        count = self.settings.postgres_restarts
        began = time.monotonic()
        for number in range(count):
            share = (number + self.random.uniform(0.3, 0.7)) / count
            at = began + share * self.settings.duration_s
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if self.stopping.is_set():
                return
            await asyncio.to_thread(postgres.restart)
            self.stats.postgres_restarts += 1
            self.backs.append(time.monotonic())

    async def run(self) -> None:
        """Run the clients for the set duration under the faults, then let every
        operation in flight finish with all servers up."""
        self.backs.append(time.monotonic())
        background: list[asyncio.Task[None]] = []
        if self.settings.kills:
            background += [asyncio.create_task(self._killer(s)) for s in self.servers]
        if self.settings.postgres_restarts and self.postgres is not None:
            background.append(asyncio.create_task(self._restart_postgres(self.postgres)))
        clients = [asyncio.create_task(self._client()) for _ in range(self.settings.clients)]
        try:
            await asyncio.sleep(self.settings.duration_s)
            # Past the duration, until enough kills were made, within a bound.
            for _ in range(int(self.settings.duration_s)):
                if self.stats.kills >= self.settings.kills_min:
                    break
                await asyncio.sleep(1)
            self.stopping.set()
            # A killer in its sleep returns at once; one restarting a server finishes that.
            await asyncio.gather(*background)
            await asyncio.gather(*clients)
        finally:
            for task in (*background, *clients):
                task.cancel()
            for task in (*background, *clients):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.http.aclose()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _code(response: httpx.Response) -> str | None:
    body = _json(response)
    return body.get("code") if isinstance(body, dict) else None


def soak_numbers(bank: Bank, report: Report) -> dict[str, Any]:
    """The run in numbers, for build/soak.json and the test's own output."""
    return {
        "kills": bank.stats.kills,
        "postgres_restarts": bank.stats.postgres_restarts,
        "operations": report.operations,
        "acknowledged": report.acknowledged,
        "refused": dict(report.refused),
        "attempts": bank.stats.attempts,
        "errors": dict(bank.stats.retried_errors),
        "problems": len(report.problems),
        "slowest_answer_after_back_s": report.slowest_answer_s,
    }


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


# -- a whole run ---------------------------------------------------------------------------


def bank_env(database_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The servers' environment: the crash is the test, so lock-outs are out of the way."""
    return base_env(
        database_url,
        GIFTCARD_LIMIT_REDEEM_FAILURES_ACCOUNT="100000/15minutes",
        GIFTCARD_LIMIT_REDEEM_FAILURES_ADDRESS="100000/15minutes",
        GIFTCARD_LIMIT_REDEEM_MISSES_SERVICE="100000/15minutes",
        GIFTCARD_LIMIT_SIGNUPS_ADDRESS="10000/hour",
        GIFTCARD_DATABASE_POOL_SIZE="20",
        GIFTCARD_MAIL_DIR=str(workdir / "mail"),
        **extra,
    )


@dataclass
class Outcome:
    bank: Bank
    report: Report
    verify: subprocess.CompletedProcess[str]
    seconds: float

    def numbers(self) -> dict[str, Any]:
        return {**soak_numbers(self.bank, self.report), "seconds": round(self.seconds, 1)}


async def run_workload(
    env: Mapping[str, str],
    log_dir: Path,
    settings: BankSettings,
    *,
    servers: int = 1,
    workers: int = 2,
    postgres: PrivatePostgres | None = None,
) -> Outcome:
    """Start the servers, set the bank up, run it under the faults, stop everything, and
    check the database against the model and with `giftcard verify`."""
    started = time.monotonic()
    killable = [
        KillableServer(env, log_dir / f"server-{number}", workers=workers)
        for number in range(servers)
    ]
    try:
        # One after the other: the first migrates the database, the others find it done.
        for server in killable:
            await server.start()
            server.up = True
        admin = create_api_key(env)
        bank = Bank(killable, admin, settings, postgres=postgres)
        await bank.setup()
        await bank.run()
        for server in killable:
            server.check_alive()
    finally:
        for server in killable:
            server.stop()
    report = await check(bank, env["GIFTCARD_DATABASE_URL"])
    verified = await asyncio.to_thread(run_cli, env, "verify")
    return Outcome(bank, report, verified, time.monotonic() - started)
