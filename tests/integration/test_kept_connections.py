"""A process keeps the connections its calls are done with for its next calls
(giftcard.db.engine.Database._pooled) rather than giving each back to the pool and
taking one again: without a pool checkout a call costs the process about half the CPU.
What that must not cost: a connection for another kind of call when the pool is out of
them, a connection older than the pool allows, or (PostgreSQL) a dead connection after a
restart (tests/integration/test_retry.py covers the last)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db import engine as engine_module
from giftcard.db.engine import Database

POSTGRESQL_ONLY = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
async def small_db(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, pool_size=2)
    try:
        yield db
    finally:
        await db.dispose()


def count_checkouts(db: Database) -> list[int]:
    checkouts = [0]

    @event.listens_for(db.engine.sync_engine, "checkout")
    def _counted(*_args: Any) -> None:
        checkouts[0] += 1

    return checkouts


async def select_one(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT 1"))).scalar_one())


async def test_calls_one_after_another_take_one_connection_from_the_pool(
    small_db: Database,
) -> None:
    checkouts = count_checkouts(small_db)

    for _ in range(10):
        assert await small_db.run_alone(select_one) == 1
        assert await small_db.run(select_one) == 1
        async with small_db.reading() as connection:
            assert await select_one(connection) == 1

    # One connection for the calls with BEGIN, one for those without.
    assert checkouts[0] == 2
    assert small_db.engine.pool.checkedout() == 2  # type: ignore[attr-defined]


@POSTGRESQL_ONLY  # On SQLite one writer at a time: three cannot hold the pool.
async def test_a_call_gets_the_connection_kept_for_the_other_kind_when_the_pool_is_out(
    database_url: str,
) -> None:
    """A pool of 4: one connection kept for calls without BEGIN, three in use by
    transactions that wait; a fourth transaction gets the kept one at once instead of
    waiting for the pool (its timeout is 30 s)."""
    db = Database(database_url, pool_size=4)
    try:
        assert await db.run_alone(select_one) == 1
        assert db.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        release, all_holding = asyncio.Event(), asyncio.Event()
        holding = 0

        async def hold(connection: AsyncConnection) -> None:
            nonlocal holding
            await select_one(connection)
            holding += 1
            if holding == 3:
                all_holding.set()
            await release.wait()

        holders = [asyncio.create_task(db.run(hold)) for _ in range(3)]
        await asyncio.wait_for(all_holding.wait(), timeout=10)
        assert db.engine.pool.checkedout() == 4  # type: ignore[attr-defined]

        assert await asyncio.wait_for(db.run(select_one), timeout=5) == 1

        release.set()
        await asyncio.gather(*holders)
    finally:
        await db.dispose()


async def test_a_connection_kept_too_long_goes_back_to_the_pool(
    small_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "KEPT_S_MAX", 0.0)
    checkouts = count_checkouts(small_db)

    for _ in range(5):
        assert await small_db.run_alone(select_one) == 1

    assert checkouts[0] == 5
    assert small_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@POSTGRESQL_ONLY
async def test_a_failed_call_gives_its_connection_back(small_db: Database) -> None:
    """Whatever a failed call left open, the pool rolls back; the next call gets a
    connection in no transaction."""

    async def fails_half_way(connection: AsyncConnection) -> None:
        await connection.execute(text("SELECT 1"))
        raise RuntimeError("the use case failed")

    with pytest.raises(RuntimeError):
        await small_db.run(fails_half_way)
    assert small_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    async with small_db.reading() as connection:
        left_open = await connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"
            )
        )
        assert left_open.scalar_one() == 0


async def test_dispose_gives_every_kept_connection_back(database_url: str) -> None:
    db = Database(database_url, pool_size=2)
    pool = db.engine.pool
    try:
        async with db.reading() as connection:
            assert await select_one(connection) == 1
        assert await db.run(select_one) == 1
        assert pool.checkedout() == 2  # type: ignore[attr-defined]
    finally:
        await db.dispose()

    assert pool.checkedout() == 0  # type: ignore[attr-defined]
