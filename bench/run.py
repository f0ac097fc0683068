"""Benchmarks: `make bench`, on SQLite and on PostgreSQL.

For each backend, in a scratch database that is removed afterwards:

1. issue 100,000 cards with the real command (`giftcard cards issue ... --out cards.csv`),
   timed from start to exit, so interpreter start-up and the CSV are included; on
   PostgreSQL, also time COPY of the same rows into the same schema, the bar for it;
2. redeem codes from that CSV through the use case (`giftcard.redemption.redeem`), with
   one asyncio task per customer running side by side;
3. for 15 s, redeem other codes from it over HTTP, against a real `giftcard serve
   --workers 2` on loopback, driven by wrk (Debian's package; `bench/requests.lua`) with
   32 connections, the abuse limits counted without Redis, after a warm-up of 4 s with
   other codes (the server's first seconds, connecting and preparing statements, are
   not its pace) and, on PostgreSQL, an ANALYZE of the database (see
   :func:`_fresh_statistics`);
4. for as long, after a warm-up of their own, pay for orders from those balances over
   HTTP (`POST /v1/payments`, captured at once, with an API key), against the same
   server: first from all 32 customers, then all from one (a hot balance); then, as
   the floor under those figures, `GET /healthz` (a request that does nothing) and
   `GET /v1/me` (one that only finds who holds its bearer secret), for as long each;
5. the redemptions again with the abuse limits counted in Redis (GIFTCARD_REDIS_URL), so
   that the cost of the limits shows beside the cost of the redemption itself;
6. check every ledger invariant (`giftcard.verify`) over what the runs wrote.

Beside them, in the same run and on the same PostgreSQL server, pgbench's TPC-B-like
workload (scale 10, 8 clients, in a scratch database of its own) gives the bar: each
HTTP rate is also shown as a ratio of pgbench's transactions per second. The results go
to `build/bench.json` and, as a Markdown table, to `build/bench.md`.

PostgreSQL is reached at 127.0.0.1:5432 (override with GIFTCARD_BENCH_POSTGRES_URL, a URL
of a database to connect to while creating the scratch one) and Redis at 127.0.0.1:6379
(GIFTCARD_BENCH_REDIS_URL); when one does not answer, its row or column says so and the
run goes on. Every phase has a time limit, so a hung server or
database ends the run instead of stalling it.

Run: .venv/bin/python bench/run.py [--cards N] [--redemptions N] [--http-seconds N]
[--pgbench-seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime
import io
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import redis.asyncio as redis
from sqlalchemy import bindparam, select, text, update

from giftcard import customers, history, ids, ledger, passwords, redemption, verify
from giftcard.clock import SystemClock
from giftcard.db.engine import Database
from giftcard.db.migrate import upgrade
from giftcard.db.tables import journal_transactions, ledger_accounts, postings
from giftcard.unit_of_work import UnitOfWork

T = TypeVar("T")

POSTGRES_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL_DEFAULT = "redis://127.0.0.1:6379/0"
CARDS_DEFAULT = 100_000
REDEMPTIONS_DEFAULT = 2_000
HTTP_SECONDS_DEFAULT = 15
# Before each measured HTTP run, the same requests (other codes, other orders) for this
# long, unmeasured: what is measured is a running server's pace, not its first seconds,
# when each worker connects to the database and prepares every statement on each
# connection (they doubled the p99 of a 15 s run).
WARM_UP_SECONDS = 4
# The share of an HTTP run's codes that its warm-up may use.
WARM_UP_SHARE = 4
# Payments offered to wrk per run: more than any run gets through in its seconds.
PAYMENT_LINES = 60_000
WRK_THREADS = 2
# A customer with this many history entries, read at its first page and HISTORY_DEPTH
# entries deep, HISTORY_READS times each (0 entries: skipped).
HISTORY_ENTRIES_DEFAULT = 1_000_000
HISTORY_DEPTH = 100_000
HISTORY_READS = 200
HISTORY_TIMEOUT_S = 600
WRK_SCRIPT = Path(__file__).with_name("requests.lua")
# Customers redeeming side by side through the use case, and requests in flight over HTTP.
USE_CASE_CONCURRENCY = 32
# Reads before those timed, so that what is timed is a running server's: the benchmark's
# pool hands out its USE_CASE_CONCURRENCY connections in turn, and on each PostgreSQL
# prepares the statement and plans it anew for its first five runs.
HISTORY_WARM_UP_READS = 6 * USE_CASE_CONCURRENCY
HTTP_CONCURRENCY = 32
SERVER_WORKERS = 2
REGION = "US"
# Time limits, per phase: generous for this 2-core machine, short enough that nothing
# stalls a run for long.
ANALYZE_TIMEOUT_S = 120
ISSUE_TIMEOUT_S = 300
MIGRATE_TIMEOUT_S = 120
REDEEM_TIMEOUT_S = 300
SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 15
POSTGRES_CONNECT_TIMEOUT_S = 5
REDIS_CONNECT_TIMEOUT_S = 3
REQUEST_TIMEOUT_S = 30
VERIFY_TIMEOUT_S = 300
PGBENCH_SCALE = 10
PGBENCH_CLIENTS = 8
PGBENCH_THREADS = 2
PGBENCH_SECONDS_DEFAULT = 20
PGBENCH_TIMEOUT_S = 300
# Each payment takes this much of a balance of one card (2,500).
PAYMENT_AMOUNT = 10
OUT_FOLDER = Path("build")

GIFTCARD = Path(sys.executable).with_name("giftcard")


@dataclass
class Latencies:
    """How long each operation of a run took, and how many went wrong."""

    elapsed_s: float = 0.0
    samples_s: list[float] = field(default_factory=list)
    failures: int = 0

    def per_second(self) -> float:
        return len(self.samples_s) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, percent: int) -> float:
        if len(self.samples_s) < 2:
            return self.samples_s[0] * 1000 if self.samples_s else 0.0
        return statistics.quantiles(self.samples_s, n=100)[percent - 1] * 1000


@dataclass
class Measured:
    """What wrk counted in one run: answers 201 per second, latency percentiles."""

    count: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    # wrk's CPU time over the run's wall time: how much of one core the load generator
    # itself took from the server it shares the machine with.
    client_cpu_share: float
    # CPU time per request answered 201, in ms: the server's processes, and PostgreSQL's
    # (all of its processes on this machine) when it is the database.
    server_cpu_ms: float | None = None
    postgres_cpu_ms: float | None = None

    def per_second(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, percent: int) -> float:
        return {50: self.p50_ms, 99: self.p99_ms}[percent]


@dataclass
class Result:
    backend: str
    issue_s: float | None = None
    # PostgreSQL's own COPY of the rows that issue wrote, into the same schema.
    copy_s: float | None = None
    use_case: Latencies | None = None
    http: Measured | None = None
    http_redis: Measured | None = None
    http_payments: Measured | None = None
    http_payments_hot: Measured | None = None
    # What a request costs that does nothing (GET /healthz), and one that only finds who
    # holds its bearer secret (GET /v1/me): the floor under every figure above them.
    http_healthz: Measured | None = None
    http_me: Measured | None = None
    # The largest resident memory of the server's processes, measured after the load.
    rss_mib_max: float | None = None
    verified: str = "-"
    # Milliseconds to read a page of a long history: the first, and one HISTORY_DEPTH deep.
    history_first: Timings | None = None
    history_deep: Timings | None = None
    note: str = ""


@dataclass
class Timings:
    median_ms: float
    p99_ms: float


@dataclass
class HttpRun:
    redeemed: Measured
    paid: Measured | None = None
    # The same, all from one customer's balance.
    paid_hot: Measured | None = None
    healthz: Measured | None = None
    me: Measured | None = None
    rss_mib_max: float | None = None


@dataclass
class Pgbench:
    tps: float | None = None
    note: str = ""


async def main() -> int:
    options = _options()
    passwords.use_fast_hashing_for_tests()  # Customers are set up, not benchmarked.
    started_at = datetime.datetime.now(datetime.UTC)
    results = []
    pgbench = await _pgbench(options.pgbench_seconds)
    with tempfile.TemporaryDirectory(prefix="giftcard-bench-") as folder:
        work = Path(folder)
        sqlite_url = f"sqlite:///{work / 'bench.db'}"
        results.append(await _run_backend("sqlite", sqlite_url, work, options))
        results.append(await _run_postgres(work, options))
    _write_results(results, pgbench, options, started_at)
    failed = [result for result in results if result.note.startswith("failed")]
    return 1 if failed or any(result.verified not in ("OK", "-") for result in results) else 0


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=CARDS_DEFAULT)
    parser.add_argument("--redemptions", type=int, default=REDEMPTIONS_DEFAULT)
    parser.add_argument("--http-seconds", type=int, default=HTTP_SECONDS_DEFAULT)
    parser.add_argument("--history-entries", type=int, default=HISTORY_ENTRIES_DEFAULT)
    parser.add_argument("--pgbench-seconds", type=int, default=PGBENCH_SECONDS_DEFAULT)
    options = parser.parse_args()
    if options.redemptions >= options.cards:
        parser.error("--cards must be more than --redemptions: the rest go over HTTP")
    return options


async def _pgbench(seconds: int) -> Pgbench:
    """pgbench's default TPC-B-like workload on the benchmark's PostgreSQL server."""
    program = shutil.which("pgbench")
    if program is None:
        return Pgbench(note="skipped: pgbench is not installed (Debian: postgresql-contrib)")
    admin_url = os.environ.get("GIFTCARD_BENCH_POSTGRES_URL", POSTGRES_URL_DEFAULT)
    name = f"giftcard_pgbench_{os.getpid()}"
    try:
        admin = await asyncpg.connect(admin_url, timeout=POSTGRES_CONNECT_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return Pgbench(note=f"skipped: {admin_url} unreachable ({error})")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        print(
            f"[pgbench] scale {PGBENCH_SCALE}, {PGBENCH_CLIENTS} clients, {seconds} s", flush=True
        )
        await _run_program([program, "-i", "-q", "-s", str(PGBENCH_SCALE), url])
        output = await _run_program(
            [
                program,
                "-n",
                "-c",
                str(PGBENCH_CLIENTS),
                "-j",
                str(PGBENCH_THREADS),
                "-T",
                str(seconds),
                url,
            ]
        )
        found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", output)
        if found is None:
            return Pgbench(note=f"failed: no tps in pgbench's output: {output[-300:]}")
        return Pgbench(tps=float(found.group(1)))
    except BenchError as error:
        return Pgbench(note=f"failed: {error}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _run_program(command: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), PGBENCH_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"{Path(command[0]).name} took over {PGBENCH_TIMEOUT_S} s") from None
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"{Path(command[0]).name} failed: {text[-300:]}")
    return text


async def _run_postgres(work: Path, options: argparse.Namespace) -> Result:
    admin_url = os.environ.get("GIFTCARD_BENCH_POSTGRES_URL", POSTGRES_URL_DEFAULT)
    name = f"giftcard_bench_{os.getpid()}"
    try:
        admin = await asyncpg.connect(admin_url, timeout=POSTGRES_CONNECT_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return Result("postgresql", note=f"skipped: {admin_url} unreachable ({error})")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}_copy"')
        scratch_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        return await _run_backend(
            "postgresql", scratch_url, work, options, copy_url=f"{scratch_url}_copy"
        )
    finally:
        for database in (name, f"{name}_copy"):
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _run_backend(
    backend: str,
    database_url: str,
    work: Path,
    options: argparse.Namespace,
    *,
    copy_url: str | None = None,
) -> Result:
    print(f"[{backend}] migrating", flush=True)
    result = Result(backend)
    env = {
        **os.environ,
        "GIFTCARD_DATABASE_URL": database_url,
        "GIFTCARD_SECRET_KEY": secrets.token_urlsafe(36),
    }
    # The server logs at its default level, a line for each request, as it would serve.
    env.pop("GIFTCARD_LOG_LEVEL", None)
    try:
        await _bounded(upgrade(database_url), MIGRATE_TIMEOUT_S, "migrating")
        print(f"[{backend}] issuing {options.cards:,} cards", flush=True)
        out = work / f"{backend}-cards.csv"
        result.issue_s = await _issue(env, out, options.cards)
        if copy_url is not None:
            print(f"[{backend}] COPY of the same rows, for comparison", flush=True)
            result.copy_s = await _bounded(
                _copy_baseline(database_url, copy_url), ISSUE_TIMEOUT_S, "copying"
            )
        codes = _read_codes(out)
        db = Database(database_url, pool_size=USE_CASE_CONCURRENCY)
        try:
            secret_key = env["GIFTCARD_SECRET_KEY"].encode()
            ids.use_secret(secret_key)  # the public ids the server gives out
            print(f"[{backend}] redeeming {options.redemptions:,} codes (use case)", flush=True)
            result.use_case = await _bounded(
                _redeem_use_case(db, secret_key, codes[: options.redemptions]),
                REDEEM_TIMEOUT_S,
                "redeeming through the use case",
            )
            seconds = options.http_seconds
            print(f"[{backend}] redeeming codes over HTTP for {seconds} s", flush=True)
            # The codes left after the use case, half for each HTTP run.
            half = (len(codes) - options.redemptions) // 2
            http_codes = codes[options.redemptions : options.redemptions + half]
            run = await _redeem_http(
                db, env, work, http_codes, "http", seconds=seconds, payments=True
            )
            result.http, result.http_payments = run.redeemed, run.paid
            result.http_payments_hot, result.rss_mib_max = run.paid_hot, run.rss_mib_max
            result.http_healthz, result.http_me = run.healthz, run.me
            redis_url = os.environ.get("GIFTCARD_BENCH_REDIS_URL", REDIS_URL_DEFAULT)
            if await _redis_answers(redis_url):
                print(f"[{backend}] redeeming codes over HTTP for {seconds} s (Redis)")
                start = options.redemptions + half
                redis_run = await _redeem_http(
                    db,
                    {**env, "GIFTCARD_REDIS_URL": redis_url},
                    work,
                    codes[start:],
                    "redis",
                    seconds=seconds,
                    payments=False,
                )
                result.http_redis = redis_run.redeemed
            else:
                result.note = f"HTTP+Redis skipped: {redis_url} unreachable"
            report = await _bounded(verify.verify(db), VERIFY_TIMEOUT_S, "verifying")
            result.verified = "OK" if not report.problems else f"{len(report.problems)} problems"
            if options.history_entries:
                print(f"[{backend}] history of {options.history_entries:,} entries", flush=True)
                result.history_first, result.history_deep = await _bounded(
                    _history(db, options.history_entries), HISTORY_TIMEOUT_S, "reading history"
                )
        finally:
            await db.dispose()
    except BenchError as error:
        result.note = f"failed: {error}"
        print(f"[{backend}] {result.note}", flush=True)
    return result


class BenchError(Exception):
    """A phase failed or ran out of time; the backend's row says which."""


async def _bounded(work: Awaitable[T], timeout_s: float, what: str) -> T:
    try:
        return await asyncio.wait_for(work, timeout_s)
    except TimeoutError:
        raise BenchError(f"{what} took over {timeout_s} s") from None


async def _issue(env: dict[str, str], out: Path, count: int) -> float:
    command = [str(GIFTCARD), "cards", "issue", "--count", str(count), "--amount", "25.00"]
    command += ["--region", REGION, "--out", str(out)]
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), ISSUE_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"issuing took over {ISSUE_TIMEOUT_S} s") from None
    elapsed_s = time.perf_counter() - started
    if process.returncode != 0:
        raise BenchError(f"giftcard cards issue failed: {stderr.decode()[-500:]}")
    return elapsed_s


# The tables `giftcard cards issue` writes, in an order their foreign keys allow.
ISSUED_TABLES = ("ledger_accounts", "journal_transactions", "cards", "postings", "card_events")


async def _copy_baseline(database_url: str, copy_url: str) -> float:
    """How long PostgreSQL's own COPY takes to write the rows `cards issue` wrote, into
    the same schema (same indexes and constraints) in a second scratch database, in one
    transaction: the bar for issuing. The rows are read out in COPY's binary format
    first; only writing them in is timed."""
    await upgrade(copy_url)
    source = await asyncpg.connect(_plain_url(database_url), timeout=POSTGRES_CONNECT_TIMEOUT_S)
    target = await asyncpg.connect(_plain_url(copy_url), timeout=POSTGRES_CONNECT_TIMEOUT_S)
    try:
        rows: dict[str, bytes] = {}
        for table in ISSUED_TABLES:
            # What the migrations made is in both databases already. (Table names are
            # this module's constants.)
            made = await target.fetch(f"SELECT id FROM {table}")  # noqa: S608
            existing = [record["id"] for record in made]
            buffer = io.BytesIO()
            await source.copy_from_query(
                f"SELECT * FROM {table} WHERE NOT (id = ANY($1::bigint[]))",  # noqa: S608
                existing,
                output=buffer,
                format="binary",
            )
            rows[table] = buffer.getvalue()
        started = time.perf_counter()
        async with target.transaction():
            for table in ISSUED_TABLES:
                await target.copy_to_table(table, source=io.BytesIO(rows[table]), format="binary")
        return time.perf_counter() - started
    finally:
        await source.close()
        await target.close()


async def _history(db: Database, entries: int) -> tuple[Timings, Timings]:
    """Give a new customer `entries` history entries (adjustments of one cent, written
    straight into the journal: what matters here is reading them), then time reading the
    first page and the page HISTORY_DEPTH entries deep through the use case, as the
    server does for GET /v1/me/history, once every pooled connection is warm. The other
    side of each entry (the adjustments account's posting) is written after all of the
    customer's: the newest postings in the database are somebody else's, which a plan
    must not read through."""
    shopper = (await _customers(db, 1, "history", secrets.token_urlsafe(16)))[0]
    marker = f"bench-history-{secrets.token_hex(4)}"
    now = datetime.datetime.now(datetime.UTC)
    if db.is_sqlite:
        series = (
            "WITH RECURSIVE series(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM series "
            "WHERE n < :entries) SELECT n FROM series"
        )
    else:
        series = "SELECT generate_series(1, :entries)"
    async with db.transaction() as connection:
        adjustments = await ledger.system_account(connection, ledger.AccountKind.ADJUSTMENTS, "USD")
        await connection.execute(
            text(
                "INSERT INTO journal_transactions (type, currency, description, actor, "  # noqa: S608
                "customer_id, created_at) SELECT 'adjustment', 'USD', 'Goodwill credit', "
                f":marker, :customer_id, :now FROM ({series}) AS numbers"
            ).bindparams(bindparam("now", type_=journal_transactions.c.created_at.type)),
            {"marker": marker, "customer_id": shopper.id, "now": now, "entries": entries},
        )
        for account_id, amount, balance_after in (
            (shopper.available_account_id, 1, "row_number() OVER (ORDER BY id)"),
            (adjustments.account_id, -1, "NULL"),
        ):
            await connection.execute(
                text(
                    "INSERT INTO postings (transaction_id, account_id, amount, currency, "  # noqa: S608
                    f"balance_after) SELECT id, :account_id, :amount, 'USD', {balance_after} "
                    "FROM journal_transactions WHERE actor = :marker ORDER BY id"
                ),
                {"account_id": account_id, "amount": amount, "marker": marker},
            )
        await connection.execute(
            update(ledger_accounts)
            .where(ledger_accounts.c.id == shopper.available_account_id)
            .values(balance=entries)
        )
        deep = (
            await connection.execute(
                select(postings.c.transaction_id)
                .where(postings.c.account_id == shopper.available_account_id)
                .order_by(postings.c.id.desc())
                .offset(min(HISTORY_DEPTH, entries - 1))
                .limit(1)
            )
        ).scalar_one()
    if not db.is_sqlite:
        # What autovacuum does to a table that rows were inserted into, here at once:
        # statistics for the planner, and the visibility map that index-only scans use.
        async with db.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE journal_transactions, postings"))

    async def timed(starting_after: int | None) -> Timings:
        for _ in range(HISTORY_WARM_UP_READS):
            await history.customer_history(db, shopper, starting_after=starting_after)
        samples = []
        for _ in range(HISTORY_READS):
            started = time.perf_counter()
            page = await history.customer_history(db, shopper, starting_after=starting_after)
            samples.append(time.perf_counter() - started)
            if len(page.items) != history.PAGE_SIZE_DEFAULT:
                raise BenchError(f"a history page had {len(page.items)} items")
        cuts = statistics.quantiles(samples, n=100)
        return Timings(statistics.median(samples) * 1000, cuts[98] * 1000)

    return await timed(None), await timed(deep)


def _plain_url(database_url: str) -> str:
    """A URL asyncpg takes, for one the service takes."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _read_codes(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return [row["code"] for row in csv.DictReader(handle)]


async def _customers(
    db: Database, count: int, label: str, password: str
) -> list[customers.Customer]:
    created = []
    for index in range(count):
        created.append(
            await customers.sign_up(
                db,
                email=f"bench-{label}-{index}@example.com",
                password=password,
                region=REGION,
                name=None,
                clock=SystemClock(),
            )
        )
    return created


async def _redeem_use_case(db: Database, secret_key: bytes, codes: Sequence[str]) -> Latencies:
    shoppers = await _customers(db, USE_CASE_CONCURRENCY, "use-case", secrets.token_urlsafe(16))
    clock = SystemClock()

    async def one(index: int, code: str) -> None:
        await redemption.redeem(
            UnitOfWork(db, clock), shoppers[index], code, secret_key=secret_key, actor="bench"
        )

    return await _drive(codes, USE_CASE_CONCURRENCY, one)


async def _drive(
    codes: Sequence[str], concurrency: int, one: Callable[[int, str], Awaitable[None]]
) -> Latencies:
    """Run `one(worker, code)` for every code, `concurrency` at a time: worker i takes
    codes i, i + concurrency, ... in turn, so each customer redeems one code at a time."""
    latencies = Latencies()

    async def worker(index: int) -> None:
        for code in codes[index::concurrency]:
            started = time.perf_counter()
            try:
                await one(index, code)
            except Exception as error:  # Counted and shown, never hidden.
                latencies.failures += 1
                if latencies.failures <= 3:
                    print(f"  failure: {error!r}", flush=True)
                continue
            latencies.samples_s.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(concurrency)))
    latencies.elapsed_s = time.perf_counter() - started
    return latencies


async def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S)
    try:
        return bool(await asyncio.wait_for(client.ping(), REDIS_CONNECT_TIMEOUT_S))
    except (OSError, redis.RedisError, TimeoutError):
        return False
    finally:
        await client.aclose()


async def _redeem_http(
    db: Database,
    env: dict[str, str],
    work: Path,
    codes: Sequence[str],
    label: str,
    *,
    seconds: int,
    payments: bool,
) -> HttpRun:
    """For `seconds`, redeem `codes` over HTTP with wrk, 32 customers' sessions taking
    turns; then (when `payments`) for as long, pay orders from the balances they made,
    captured at once, with a merchant's API key: first spread over every customer, then
    all from one (a hot balance). Also the largest resident memory of the server's
    processes after that load, in MiB."""
    password = secrets.token_urlsafe(16)
    shoppers = await _customers(db, HTTP_CONCURRENCY, label, password)
    tokens = []
    for shopper in shoppers:
        session = await customers.log_in(
            db, email=shopper.email, password=password, ttl_s=3600, clock=SystemClock()
        )
        tokens.append(session.token)
    _, merchant_key = await customers.create_api_key(
        db, role=customers.Role.MERCHANT, name=f"bench-{label}", clock=SystemClock()
    )
    port = _free_port()
    metrics_folder = work / f"metrics-{label}"
    metrics_folder.mkdir(exist_ok=True)
    command = [str(GIFTCARD), "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = await asyncio.create_subprocess_exec(
        *command,
        "--workers",
        str(SERVER_WORKERS),
        env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_folder)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
            await _wait_until_ready(client, server)
        warm_up_codes = len(codes) // WARM_UP_SHARE
        redemptions = {}
        for part, part_codes in (
            ("warm-up", codes[:warm_up_codes]),
            ("measured", codes[warm_up_codes:]),
        ):
            redemptions[part] = work / f"{label}-redemptions-{part}.txt"
            _write_lines(
                redemptions[part],
                (
                    (tokens[number % len(tokens)], {"code": code})
                    for number, code in enumerate(part_codes)
                ),
            )
        meter = CpuMeter(server.pid, postgres=env["GIFTCARD_DATABASE_URL"].startswith("postgres"))
        await _wrk(base_url, "/v1/me/redemptions", redemptions["warm-up"], WARM_UP_SECONDS)
        await _fresh_statistics(env["GIFTCARD_DATABASE_URL"])
        run = HttpRun(
            await _wrk(base_url, "/v1/me/redemptions", redemptions["measured"], seconds, meter)
        )
        if payments:
            warm_up = work / f"{label}-payments-warm-up.txt"
            spread, hot = work / f"{label}-payments.txt", work / f"{label}-payments-hot.txt"
            for path, customer_of in (
                (warm_up, lambda n: shoppers[n % len(shoppers)]),
                (spread, lambda n: shoppers[n % len(shoppers)]),
                (hot, lambda n: shoppers[0]),
            ):
                _write_lines(
                    path,
                    (
                        (merchant_key, _payment(customer_of(number), f"{path.stem}-{number}"))
                        for number in range(PAYMENT_LINES)
                    ),
                )
            await _wrk(base_url, "/v1/payments", warm_up, WARM_UP_SECONDS)
            await _fresh_statistics(env["GIFTCARD_DATABASE_URL"])
            run.paid = await _wrk(base_url, "/v1/payments", spread, seconds, meter)
            run.paid_hot = await _wrk(base_url, "/v1/payments", hot, seconds, meter)
            for route, token in (("/healthz", None), ("/v1/me", tokens[0])):
                await _wrk_get(base_url, route, token, WARM_UP_SECONDS)
            run.healthz = await _wrk_get(base_url, "/healthz", None, seconds, meter)
            run.me = await _wrk_get(base_url, "/v1/me", tokens[0], seconds, meter)
        run.rss_mib_max = _rss_mib_max(server.pid)
        return run
    finally:
        await _stop(server)


async def _fresh_statistics(database_url: str) -> None:
    """On PostgreSQL, ANALYZE the database, as autovacuum would have by then on a server
    that runs it (PostgreSQL's default; this project's test machine runs without it).

    The tables a running server fills (idempotency keys, journal, postings, events)
    start empty. A statement prepared then may be given a generic plan that scans such
    a table whole, which is right while it holds a page, and PostgreSQL keeps that plan
    until the table's statistics change: without autovacuum, never. Measured over HTTP
    with the limits in Redis, 4 rounds of 6 s: PostgreSQL's CPU a redemption climbed
    0.61 -> 0.77 -> 0.84 ms from round to round, 1,886 scans of the keys' table having
    read 18 million rows, and stayed at 0.57-0.59 ms with an ANALYZE before each round."""
    if not database_url.startswith("postgresql"):
        return
    connection = await asyncpg.connect(_plain_url(database_url), timeout=POSTGRES_CONNECT_TIMEOUT_S)
    try:
        await _bounded(connection.execute("ANALYZE"), ANALYZE_TIMEOUT_S, "analyzing")
    finally:
        await connection.close()


def _payment(shopper: customers.Customer, order: str) -> dict[str, object]:
    return {
        "customer_id": ids.format_id(ids.CUSTOMER, shopper.id),
        "order_id": order,
        "amount": PAYMENT_AMOUNT,
        "currency": "USD",
        "use_balance": "max",
        "capture": True,
    }


def _write_lines(path: Path, requests: Iterable[tuple[str, dict[str, object]]]) -> None:
    """The file bench/requests.lua reads: a bearer token, a tab and a JSON body a line."""
    with path.open("w") as handle:
        for token, body in requests:
            handle.write(f"{token}\t{json.dumps(body, separators=(',', ':'))}\n")


async def _wrk(
    base_url: str, path: str, lines: Path, seconds: int, meter: CpuMeter | None = None
) -> Measured:
    """Send the requests of `lines` with wrk (2 threads, 32 connections) for `seconds`,
    each at most once; 201 is success, anything else a failure. With a `meter`, also
    what CPU each success cost the server and the database."""
    arguments = ["-s", str(WRK_SCRIPT), base_url]
    arguments += ["--", path, str(lines), str(WRK_THREADS), secrets.token_hex(8)]
    run = await _run_wrk(arguments, seconds, meter)
    found = re.search(r"^WRK_RESULT (.*)$", run.stdout, re.MULTILINE)
    if run.returncode != 0 or found is None:
        raise BenchError(f"wrk failed: {run.stderr[-500:]}{run.stdout[-500:]}")
    if run.stderr.strip():
        print(f"  wrk: {run.stderr.strip()[:600]}", flush=True)
    figures = json.loads(found.group(1))
    if figures["spare"]:
        raise BenchError(f"{lines.name} ran out of requests: give wrk more lines")
    return run.measured(
        meter,
        count=figures["created"],
        elapsed_s=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        failures=figures["refused"] + figures["socket_errors"],
    )


@dataclass(frozen=True)
class WrkRun:
    """What one run of wrk printed, and what it cost: wrk's own CPU time, and the
    meter's reading from before it (None without a meter)."""

    returncode: int
    stdout: str
    stderr: str
    client_cpu_s: float
    used_before: tuple[float, float | None] | None

    def measured(
        self,
        meter: CpuMeter | None,
        *,
        count: int,
        elapsed_s: float,
        p50_ms: float,
        p99_ms: float,
        failures: int,
    ) -> Measured:
        """The run's figures, with wrk's share of a core and, when metered, what CPU each
        success cost the server and the database."""
        measured = Measured(
            count=count,
            elapsed_s=elapsed_s,
            p50_ms=p50_ms,
            p99_ms=p99_ms,
            failures=failures,
            client_cpu_share=self.client_cpu_s / elapsed_s,
        )
        if meter is None or self.used_before is None or not count:
            return measured
        server_s, postgres_s = meter.read()
        measured.server_cpu_ms = (server_s - self.used_before[0]) * 1000 / count
        if postgres_s is not None and self.used_before[1] is not None:
            measured.postgres_cpu_ms = (postgres_s - self.used_before[1]) * 1000 / count
        return measured


async def _run_wrk(arguments: list[str], seconds: int, meter: CpuMeter | None) -> WrkRun:
    """Run wrk (2 threads, 32 connections) for `seconds` with `arguments` after those,
    bounded in time."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    command = [wrk, "-t", str(WRK_THREADS), "-c", str(HTTP_CONCURRENCY), "-d", f"{seconds}s"]
    command += ["--timeout", f"{REQUEST_TIMEOUT_S}s", *arguments]
    cpu_before = _children_cpu_s()
    used_before = meter.read() if meter else None
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), seconds + 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"wrk ran over {seconds + 60} s") from None
    return WrkRun(
        process.returncode if process.returncode is not None else -1,
        stdout.decode(),
        stderr.decode(),
        _children_cpu_s() - cpu_before,
        used_before,
    )


@dataclass(frozen=True)
class CpuMeter:
    """The CPU time used so far by the server's processes (its process group) and, when
    `postgres`, by every PostgreSQL process on this machine (the benchmark's server is
    local), in seconds (Linux)."""

    server_group: int
    postgres: bool

    def read(self) -> tuple[float, float | None]:
        server = postgres = 0.0
        for status in Path("/proc").glob("[0-9]*/stat"):
            try:
                name, rest = status.read_text().rsplit(")", 1)
                fields = rest.split()
                # After the state: ppid, process group, ...; user and system time 11-12.
                used = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            except (OSError, IndexError, ValueError):
                continue
            if int(fields[2]) == self.server_group:
                server += used
            elif name.endswith("(postgres"):
                postgres += used
        return server, (postgres if self.postgres else None)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


async def _wrk_get(
    base_url: str, path: str, token: str | None, seconds: int, meter: CpuMeter | None = None
) -> Measured:
    """GET `path` for `seconds` with wrk (2 threads, 32 connections), with `token` as the
    bearer if given; 200 is success, anything else a failure."""
    arguments = ["--latency", base_url + path]
    if token is not None:
        arguments += ["-H", f"Authorization: Bearer {token}"]
    run = await _run_wrk(arguments, seconds, meter)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+),", run.stdout, re.MULTILINE)
    p50 = re.search(r"^\s*50%\s+([\d.]+)(\w+)$", run.stdout, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(\w+)$", run.stdout, re.MULTILINE)
    if run.returncode != 0 or not (total and p50 and p99):
        raise BenchError(f"wrk failed: {run.stderr[-500:]}{run.stdout[-500:]}")
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", run.stdout)
    refused = int(found.group(1)) if found else 0
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", run.stdout
    )
    return run.measured(
        meter,
        count=int(total.group(1)) - refused,
        elapsed_s=_duration_s(total.group(2), total.group(3)),
        p50_ms=_duration_s(p50.group(1), p50.group(2)) * 1000,
        p99_ms=_duration_s(p99.group(1), p99.group(2)) * 1000,
        failures=refused + (sum(int(n) for n in errors.groups()) if errors else 0),
    )


def _duration_s(number: str, unit: str) -> float:
    """A duration as wrk prints it (`812.00us`, `3.88ms`, `1.02s`, `2.00m`), in seconds."""
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}.get(unit)
    if scale is None:
        raise BenchError(f"wrk printed a duration in {unit!r}")
    return float(number) * scale


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rss_mib_max(process_group: int) -> float | None:
    """The largest resident set size among the processes of `process_group` (Linux)."""
    largest = None
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != process_group:  # the process group, after state and ppid
                continue
            for line in status.with_name("status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    mib = int(line.split()[1]) / 1024
                    largest = mib if largest is None else max(largest, mib)
        except (OSError, IndexError, ValueError):
            continue
    return round(largest, 1) if largest is not None else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_until_ready(client: httpx.AsyncClient, server: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.returncode is not None:
            raise BenchError(f"giftcard serve exited with {server.returncode}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise BenchError(f"giftcard serve was not ready within {SERVER_START_TIMEOUT_S} s")


async def _stop(server: asyncio.subprocess.Process) -> None:
    """Stop the server and its workers: they run in a process group of their own."""
    if server.returncode is None:
        os.killpg(server.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(server.wait(), SERVER_STOP_TIMEOUT_S)
    except TimeoutError:
        os.killpg(server.pid, signal.SIGKILL)
        await server.wait()


def _machine() -> dict[str, object]:
    memory_gib = None
    with contextlib.suppress(ValueError, OSError):
        memory_gib = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "system": platform.platform(),
        "python": platform.python_version(),
    }


def _timings(timings: Timings | None) -> dict[str, float] | None:
    if timings is None:
        return None
    return {"median": round(timings.median_ms, 2), "p99": round(timings.p99_ms, 2)}


def _figures(latencies: Latencies | Measured | None, pgbench: Pgbench) -> dict[str, object] | None:
    if latencies is None:
        return None
    rate = latencies.per_second()
    return {
        "count": (latencies.count if isinstance(latencies, Measured) else len(latencies.samples_s)),
        "failures": latencies.failures,
        "per_second": round(rate, 1),
        "p50_ms": round(latencies.percentile_ms(50), 1),
        "p99_ms": round(latencies.percentile_ms(99), 1),
        "x_pgbench": round(rate / pgbench.tps, 3) if pgbench.tps else None,
        "server_cpu_ms": _rounded(getattr(latencies, "server_cpu_ms", None)),
        "postgres_cpu_ms": _rounded(getattr(latencies, "postgres_cpu_ms", None)),
    }


def _rounded(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _write_results(
    results: Sequence[Result],
    pgbench: Pgbench,
    options: argparse.Namespace,
    started_at: datetime.datetime,
) -> None:
    """build/bench.json, and the table README.md shows as build/bench.md."""
    document = {
        "date": started_at.isoformat(timespec="seconds"),
        "machine": _machine(),
        "options": {
            "cards": options.cards,
            "redemptions": options.redemptions,
            "http_seconds": options.http_seconds,
            "http_client": f"wrk, {WRK_THREADS} threads",
            "http_in_flight": HTTP_CONCURRENCY,
            "server_workers": SERVER_WORKERS,
        },
        "pgbench": {
            "scale": PGBENCH_SCALE,
            "clients": PGBENCH_CLIENTS,
            "seconds": options.pgbench_seconds,
            "tps": pgbench.tps,
            "note": pgbench.note,
        },
        "backends": [
            {
                "backend": result.backend,
                "issue_s": round(result.issue_s, 2) if result.issue_s is not None else None,
                "copy_s": round(result.copy_s, 2) if result.copy_s is not None else None,
                "use_case_redemptions": _figures(result.use_case, pgbench),
                "http_redemptions": _figures(result.http, pgbench),
                "http_redemptions_redis": _figures(result.http_redis, pgbench),
                "http_payments": _figures(result.http_payments, pgbench),
                "http_payments_hot": _figures(result.http_payments_hot, pgbench),
                "http_healthz": _figures(result.http_healthz, pgbench),
                "http_me": _figures(result.http_me, pgbench),
                "client_cpu_share": (
                    round(result.http.client_cpu_share, 2) if result.http else None
                ),
                "server_rss_mib_max": result.rss_mib_max,
                "verified": result.verified,
                "history": {
                    "entries": options.history_entries,
                    "depth": HISTORY_DEPTH,
                    "reads": HISTORY_READS,
                    "warm_up_reads": HISTORY_WARM_UP_READS,
                    "first_page_ms": _timings(result.history_first),
                    "deep_page_ms": _timings(result.history_deep),
                },
                "note": result.note,
            }
            for result in results
        ],
    }
    OUT_FOLDER.mkdir(exist_ok=True)
    (OUT_FOLDER / "bench.json").write_text(json.dumps(document, indent=2) + "\n")
    (OUT_FOLDER / "bench.md").write_text(_markdown(document))
    print(f"\nwritten: {OUT_FOLDER / 'bench.json'}, {OUT_FOLDER / 'bench.md'}")
    print(_markdown(document))


def _markdown(document: dict[str, Any]) -> str:
    pgbench: Any = document["pgbench"]
    tps = f"{pgbench['tps']:,.0f}" if pgbench["tps"] else pgbench["note"]
    lines = [
        f"pgbench TPC-B (scale {pgbench['scale']}, {pgbench['clients']} clients), same server, "
        f"same run: **{tps} tps**",
        "",
        "| backend | what | per second | p50 ms | p99 ms | × pgbench | failed "
        "| CPU ms a request: server + PostgreSQL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    backends: Any = document["backends"]
    for backend in backends:
        for key, what in (
            ("http_redemptions", "redemptions over HTTP"),
            ("http_payments", "payments over HTTP (captured)"),
            ("http_payments_hot", "payments over HTTP, all from one balance"),
            ("http_healthz", "`GET /healthz` over HTTP: a request that does nothing"),
            ("http_me", "`GET /v1/me` over HTTP: who holds the bearer secret, and nothing else"),
            ("http_redemptions_redis", "redemptions over HTTP, limits in Redis"),
            ("use_case_redemptions", "redemptions through the use case"),
        ):
            figures = backend[key]
            if figures is None:
                continue
            if key == "http_payments_hot" and backend["http_payments"]:
                share = figures["per_second"] / backend["http_payments"]["per_second"]
                what = f"{what} ({share:.2f} of the spread rate)"
            ratio = f"{figures['x_pgbench']:.2f}" if figures["x_pgbench"] is not None else "-"
            lines.append(
                f"| {backend['backend']} | {what} | {figures['per_second']:,.0f} | "
                f"{figures['p50_ms']:.1f} | {figures['p99_ms']:.1f} | {ratio} | "
                f"{figures['failures']} | {_cpu_cell(figures)} |"
            )
        if backend["client_cpu_share"] is not None:
            lines.append(
                f"| {backend['backend']} | the client's own CPU during the redemptions, "
                f"share of one core | {backend['client_cpu_share']:.2f} | | | | | |"
            )
        if backend["server_rss_mib_max"] is not None:
            lines.append(
                f"| {backend['backend']} | largest server process after the load, MiB | "
                f"{backend['server_rss_mib_max']:,.0f} | | | | | |"
            )
        if backend["issue_s"] is not None:
            lines.append(
                f"| {backend['backend']} | `cards issue` of the cards, seconds | "
                f"{backend['issue_s']:.2f} | | | | | |"
            )
        read = backend["history"]
        for key, which in (("first_page_ms", "first page"), ("deep_page_ms", "page")):
            if read[key] is None:
                continue
            where = "" if key == "first_page_ms" else f" {read['depth']:,} entries deep"
            lines.append(
                f"| {backend['backend']} | history of {read['entries']:,} entries, {which}"
                f"{where}, ms through the use case (median; p99 in its column) | "
                f"{read[key]['median']:.2f} | | {read[key]['p99']:.2f} | | | |"
            )
        if backend["copy_s"] is not None:
            times = backend["issue_s"] / backend["copy_s"] if backend["issue_s"] else None
            lines.append(
                f"| {backend['backend']} | COPY of the same rows into the same schema, "
                f"seconds (`cards issue` took {times:.1f}× as long) | "
                f"{backend['copy_s']:.2f} | | | | | |"
            )
    return "\n".join(lines) + "\n"


def _cpu_cell(figures: dict[str, Any]) -> str:
    if figures.get("server_cpu_ms") is None:
        return ""
    if figures.get("postgres_cpu_ms") is None:
        return f"{figures['server_cpu_ms']:.2f}"
    return f"{figures['server_cpu_ms']:.2f} + {figures['postgres_cpu_ms']:.2f}"


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
