"""The schema and the database's own guards: migrations, SQLite settings, constraints."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

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
