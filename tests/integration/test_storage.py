"""The schema and the database's own guards: migrations, SQLite settings, constraints."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import ledger
from giftcard.db.engine import Database
from giftcard.db.migrate import pending, upgrade
from giftcard.db.tables import ledger_accounts, metadata
from giftcard.errors import LedgerInvariantError
from giftcard.services import Services


async def test_migrations_create_exactly_the_described_schema(services: Services) -> None:
    """The Alembic migrations and the table definitions the code queries agree."""
    async with services.db.transaction() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )
    assert differences == []


async def test_migrate_is_idempotent(database_url: str) -> None:
    """Running the migrations again on an up-to-date database changes nothing."""
    assert not await pending(database_url)
    await upgrade(database_url)
    assert not await pending(database_url)


async def test_system_accounts_exist_for_every_currency(services: Services) -> None:
    async with services.db.transaction(write=False) as connection:
        for currency in ("USD", "GBP", "EUR", "JPY", "CAD", "AUD", "INR"):
            for kind in ledger.SYSTEM_KINDS:
                posting = await ledger.system_account(connection, kind, currency)
                assert posting.tracked is False


async def test_balance_cannot_go_below_zero_even_bypassing_the_ledger(services: Services) -> None:
    """The CHECK constraint is a backstop: a direct UPDATE to a negative balance fails."""
    async with services.db.transaction() as connection:
        account = await ledger.open_account(
            connection, ledger.AccountKind.CUSTOMER_AVAILABLE, "USD", now=services.clock.now()
        )
    with pytest.raises(IntegrityError):
        async with services.db.transaction() as connection:
            await connection.execute(
                update(ledger_accounts).where(ledger_accounts.c.id == account).values(balance=-1)
            )


async def test_ledger_refuses_overdraft_and_writes_nothing(services: Services) -> None:
    """A posting that would take a tracked account below zero raises and rolls back."""
    now = services.clock.now()
    async with services.db.transaction() as connection:
        source = await ledger.open_account(
            connection, ledger.AccountKind.CUSTOMER_AVAILABLE, "USD", now=now
        )
        target = await ledger.open_account(
            connection, ledger.AccountKind.CUSTOMER_AVAILABLE, "USD", now=now
        )
    with pytest.raises(ledger.InsufficientBalance):
        async with services.db.transaction() as connection:
            await ledger.post(
                connection,
                ledger.Entry(
                    ledger.TransactionType.ADJUSTMENT,
                    "USD",
                    "overdraft",
                    "test",
                    [ledger.Posting(source, -1), ledger.Posting(target, 1)],
                ),
                now=now,
            )
    async with services.db.transaction(write=False) as connection:
        count = (await connection.execute(text("SELECT COUNT(*) FROM postings"))).scalar_one()
        balances = (
            await connection.execute(
                select(ledger_accounts.c.balance).where(ledger_accounts.c.id.in_([source, target]))
            )
        ).scalars()
        assert count == 0
        assert list(balances) == [0, 0]


def adjustment(description: str, postings: list[ledger.Posting]) -> ledger.Entry:
    return ledger.Entry(ledger.TransactionType.ADJUSTMENT, "USD", description, "test", postings)


async def open_accounts(services: Services, *balances: int) -> list[int]:
    """New customer balances in USD (ids ascending), holding `balances`."""
    now = services.clock.now()
    async with services.db.transaction() as connection:
        accounts = [
            await ledger.open_account(
                connection, ledger.AccountKind.CUSTOMER_AVAILABLE, "USD", now=now
            )
            for _ in balances
        ]
        pairs = zip(accounts, balances, strict=True)
        funded = [ledger.Posting(account, amount) for account, amount in pairs if amount]
        if funded:
            issuance = await ledger.system_posting(
                connection, ledger.AccountKind.ISSUANCE, "USD", -sum(balances)
            )
            await ledger.post(connection, adjustment("funding", [issuance, *funded]), now=now)
    return accounts


async def test_ledger_names_the_account_that_refused_and_writes_nothing(
    services: Services,
) -> None:
    """Of three tracked accounts, the one in the middle (in id order) cannot pay: the
    entry is refused naming that account, even though the others could move, and no
    balance, journal transaction or posting is left behind."""
    now = services.clock.now()
    first, middle, last = await open_accounts(services, 10, 0, 10)
    async with services.db.transaction(write=False) as connection:
        issuance = await ledger.system_posting(connection, ledger.AccountKind.ISSUANCE, "USD", 15)
    postings = [ledger.Posting(account, -5) for account in (last, middle, first)]
    entry = adjustment("one cannot pay", [*postings, issuance])
    with pytest.raises(ledger.InsufficientBalance) as refused:
        async with services.db.transaction() as connection:
            await ledger.post(connection, entry, now=now)
    assert refused.value.account_id == middle
    async with services.db.transaction(write=False) as connection:
        rows = await connection.execute(
            select(ledger_accounts.c.id, ledger_accounts.c.balance).where(
                ledger_accounts.c.id.in_([first, middle, last])
            )
        )
        balances = {row.id: row.balance for row in rows}
        entries = (
            await connection.execute(text("SELECT COUNT(*) FROM journal_transactions"))
        ).scalar_one()
        lines = (await connection.execute(text("SELECT COUNT(*) FROM postings"))).scalar_one()
    assert balances == {first: 10, middle: 0, last: 10}
    assert (entries, lines) == (1, 3)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_ledger_locks_accounts_in_ascending_id_order(services: Services) -> None:
    """While another transaction holds the lower of two accounts, an entry naming the
    higher one first waits for the lower without holding the higher: accounts are locked
    in ascending id order whatever order an entry lists them in, so two entries over the
    same accounts cannot deadlock."""
    now = services.clock.now()
    lower, higher = await open_accounts(services, 0, 10)
    assert lower < higher
    lock = "SELECT id FROM ledger_accounts WHERE id = :id FOR UPDATE"
    async with services.db.transaction() as holder:
        await holder.execute(text(lock), {"id": lower})

        async def post_higher_first() -> None:
            async with services.db.transaction() as connection:
                postings = [ledger.Posting(higher, -3), ledger.Posting(lower, 3)]
                await ledger.post(connection, adjustment("higher first", postings), now=now)

        posting = asyncio.create_task(post_higher_first())
        waiting = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        for _ in range(200):
            async with services.db.transaction(write=False) as watcher:
                if (await watcher.execute(text(waiting))).scalar_one():
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the entry never waited for the lower account")
        async with services.db.transaction() as other:
            await other.execute(text(lock + " NOWAIT"), {"id": higher})
    await asyncio.wait_for(posting, timeout=10)
    async with services.db.transaction(write=False) as connection:
        assert await ledger.balance_of(connection, lower) == 3
        assert await ledger.balance_of(connection, higher) == 7


async def test_ledger_refuses_a_currency_its_account_does_not_hold(services: Services) -> None:
    now = services.clock.now()
    async with services.db.transaction() as connection:
        usd = await ledger.open_account(
            connection, ledger.AccountKind.CUSTOMER_AVAILABLE, "USD", now=now
        )
        issuance = await ledger.system_posting(connection, ledger.AccountKind.ISSUANCE, "GBP", -100)
    with pytest.raises(LedgerInvariantError):
        async with services.db.transaction() as connection:
            await ledger.post(
                connection,
                ledger.Entry(
                    ledger.TransactionType.ADJUSTMENT,
                    "GBP",
                    "wrong currency",
                    "test",
                    [issuance, ledger.Posting(usd, 100)],
                ),
                now=now,
            )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_runs_in_wal_with_foreign_keys(services: Services) -> None:
    async with services.db.transaction(write=False) as connection:
        assert (await connection.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
        # FULL (2): a commit is on disk before it is acknowledged, power cut included.
        assert (await connection.execute(text("PRAGMA synchronous"))).scalar_one() == 2


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_write_transactions_take_the_write_lock_at_begin(database_url: str) -> None:
    """A second writer waits at BEGIN while the first holds the lock, instead of failing
    half-way through when it tries to write."""
    db = Database(database_url, pool_size=2)
    order: list[str] = []
    first_has_lock = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with db.transaction() as connection:
            await connection.execute(text("SELECT 1"))
            order.append("first began")
            first_has_lock.set()
            await release_first.wait()
            order.append("first commits")

    async def second() -> None:
        await first_has_lock.wait()
        async with db.transaction() as connection:
            order.append("second began")
            await connection.execute(text("SELECT 1"))

    try:
        second_task = asyncio.create_task(second())
        first_task = asyncio.create_task(first())
        await first_has_lock.wait()
        await asyncio.sleep(0.2)
        assert order == ["first began"], "the second writer must not get past BEGIN"
        release_first.set()
        await asyncio.wait_for(asyncio.gather(first_task, second_task), timeout=10)
        assert order == ["first began", "first commits", "second began"]
    finally:
        await db.dispose()


# Two Database objects on one SQLite file stand in for two server processes: each has its
# own connections and its own in-process writer queue, so they meet only in SQLite's
# locks, as worker processes do.
WRITERS_PER_PROCESS = 10


async def _scratch(db: Database) -> None:
    async with db.transaction() as connection:
        await connection.execute(text("CREATE TABLE scratch (n INTEGER NOT NULL)"))
        await connection.execute(text("INSERT INTO scratch VALUES (0)"))


async def _scratch_value(db: Database) -> int:
    async with db.transaction(write=False) as connection:
        return int((await connection.execute(text("SELECT n FROM scratch"))).scalar_one())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_writers_of_two_processes_never_fail_half_way(database_url: str) -> None:
    """Given read-then-write transactions from two "processes" at once, every one runs
    exactly once and none is lost: BEGIN IMMEDIATE makes each take the write lock before
    it reads, so none reads a snapshot that another commits under (in WAL mode a
    transaction that read first fails at its first write, and would have to run again)."""
    databases = [Database(database_url, pool_size=WRITERS_PER_PROCESS) for _ in range(2)]
    runs = 0

    async def increment(connection: AsyncConnection) -> None:
        nonlocal runs
        runs += 1
        value = (await connection.execute(text("SELECT n FROM scratch"))).scalar_one()
        await asyncio.sleep(0.01)  # let the other process's writers reach their BEGIN
        await connection.execute(text("UPDATE scratch SET n = :n"), {"n": value + 1})

    try:
        await _scratch(databases[0])
        await asyncio.wait_for(
            asyncio.gather(
                *(db.run(increment) for db in databases for _ in range(WRITERS_PER_PROCESS))
            ),
            timeout=60,
        )
        final = await _scratch_value(databases[0])
    finally:
        for db in databases:
            await db.dispose()
    assert final == 2 * WRITERS_PER_PROCESS, "an increment was lost"
    assert runs == 2 * WRITERS_PER_PROCESS, f"{runs - 2 * WRITERS_PER_PROCESS} ran again"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_a_writer_waiting_for_the_lock_leaves_the_event_loop_running(
    database_url: str,
) -> None:
    """Given another process holding the write lock for a while, a transaction that waits
    for it lets the event loop serve everything else meanwhile (SQLite's own busy handler
    would sleep inside the call and stop the loop), and begins once the lock is free."""
    db = Database(database_url, pool_size=2)
    await _scratch(db)
    other = sqlite3.connect(
        database_url.split("///", 1)[1], isolation_level=None, check_same_thread=False
    )
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def write(connection: AsyncConnection) -> None:
        await connection.execute(text("UPDATE scratch SET n = 8"))

    hold_s = 0.5
    try:
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(hold_s, lambda: other.execute("COMMIT"))
        ticker = asyncio.create_task(tick())
        loop = asyncio.get_running_loop()
        started = loop.time()
        release.start()
        await asyncio.wait_for(db.run(write), timeout=30)
        waited_s = loop.time() - started
        ticker.cancel()
        assert waited_s >= hold_s * 0.8, "the write must wait for the lock"
        # Ideally hold_s / 0.01 = 50; a blocked loop would count none while it waited.
        assert ticks >= 10, ticks
        assert await _scratch_value(db) == 8
    finally:
        release.cancel()
        other.close()
        await db.dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_database_is_locked_is_retried(database_url: str) -> None:
    """Given another process holding the write lock longer than the busy timeout, a
    transaction that could not begin ("database is locked") is retried, and succeeds
    once the lock is free, instead of failing with a 500."""
    db = Database(database_url, pool_size=2, sqlite_busy_timeout_s=0.05)
    await _scratch(db)
    other = sqlite3.connect(
        database_url.split("///", 1)[1], isolation_level=None, check_same_thread=False
    )
    attempts = 0

    async def write(connection: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        await connection.execute(text("UPDATE scratch SET n = 7"))

    try:
        other.execute("BEGIN IMMEDIATE")
        writing = asyncio.create_task(db.run(write))
        await asyncio.sleep(0.5)
        assert not writing.done(), "the write must wait while another process holds the lock"
        other.execute("COMMIT")
        await asyncio.wait_for(writing, timeout=30)
        assert attempts == 1, "only the attempt that began ran its work"
        assert await _scratch_value(db) == 7
    finally:
        other.close()
        await db.dispose()
