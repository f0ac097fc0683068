"""Group commit on SQLite: the units of work of one process that wait for the write lock
go in one transaction together, each in a savepoint, and are answered after its commit.

Each test runs its writers at once through `Database.run`, as the requests of one worker
process do, on a scratch table of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db.engine import Database

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

WRITERS = 24
FAILING = {5, 17}


async def _scratch(db: Database) -> None:
    async with db.transaction() as connection:
        await connection.execute(text("CREATE TABLE scratch (n INTEGER PRIMARY KEY)"))


async def _rows(db: Database) -> set[int]:
    async with db.transaction(write=False) as connection:
        return set((await connection.execute(text("SELECT n FROM scratch"))).scalars())


def _write_transactions(db: Database) -> list[int]:
    """A counter of the write transactions `db` begins."""
    begun = [0]

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement == "BEGIN IMMEDIATE":
            begun[0] += 1

    return begun


def _insert(n: int):  # type: ignore[no-untyped-def]
    async def work(connection: AsyncConnection) -> int:
        await connection.execute(text("INSERT INTO scratch VALUES (:n)"), {"n": n})
        # Let the others queue up behind this one, as concurrent requests do.
        await asyncio.sleep(0)
        if n in FAILING:
            raise ValueError(f"writer {n} refused")
        return n

    return work


async def test_writers_waiting_together_commit_in_one_transaction_and_one_failing_fails_alone(
    database_url: str,
) -> None:
    """Given 24 writers at once, two of which fail after writing: the 22 others are
    answered with their own results and their rows are there; each failing one gets its
    own error and left nothing; and they took far fewer write transactions than 24."""
    db = Database(database_url, pool_size=4)
    try:
        await _scratch(db)
        begun = _write_transactions(db)
        outcomes = await asyncio.gather(
            *(db.run(_insert(n)) for n in range(WRITERS)), return_exceptions=True
        )
        rows = await _rows(db)
    finally:
        await db.dispose()
    for n, outcome in enumerate(outcomes):
        if n in FAILING:
            assert isinstance(outcome, ValueError)
            assert str(n) in str(outcome)
        else:
            assert outcome == n
    assert rows == set(range(WRITERS)) - FAILING
    assert 1 <= begun[0] <= 3, begun[0]


async def test_a_database_error_in_one_writer_leaves_the_others_whole(database_url: str) -> None:
    """A writer whose statement the database refuses (a duplicate key) fails alone:
    the writers before and after it in the same transaction commit."""
    db = Database(database_url, pool_size=4)
    try:
        await _scratch(db)
        await db.run(_insert(100))
        outcomes = await asyncio.gather(
            *(db.run(_insert(n)) for n in (1, 2, 100, 3, 4)), return_exceptions=True
        )
        rows = await _rows(db)
    finally:
        await db.dispose()
    assert outcomes[:2] == [1, 2]
    assert outcomes[3:] == [3, 4]
    assert isinstance(outcomes[2], IntegrityError)
    assert rows == {1, 2, 3, 4, 100}


async def test_no_writer_is_answered_before_its_transaction_committed(
    database_url: str,
) -> None:
    """The moment each writer is answered, another connection (another process) already
    sees its row: nothing is acknowledged before the commit that makes it durable."""
    db = Database(database_url, pool_size=4)
    other = Database(database_url, pool_size=1)
    seen: dict[int, bool] = {}
    try:
        await _scratch(db)

        async def write_then_look(n: int) -> None:
            await db.run(_insert(n + 1000))
            seen[n] = n + 1000 in await _rows(other)

        await asyncio.gather(*(write_then_look(n) for n in range(WRITERS)))
    finally:
        await other.dispose()
        await db.dispose()
    assert seen == dict.fromkeys(range(WRITERS), True)


async def test_a_failed_commit_fails_every_writer_of_its_transaction(
    database_url: str,
) -> None:
    """When the commit itself fails, every writer of that transaction gets the error and
    none of their rows exists: a batch commits whole or not at all."""
    db = Database(database_url, pool_size=4)
    try:
        await _scratch(db)
        failing_commits = [1]

        @event.listens_for(db.engine.sync_engine, "commit")
        def _fail(_conn: Any) -> None:
            if failing_commits[0]:
                failing_commits[0] -= 1
                raise OSError("disk I/O error")

        outcomes = await asyncio.gather(
            *(db.run(_insert(n)) for n in range(200, 208)), return_exceptions=True
        )
        rows = await _rows(db)
    finally:
        await db.dispose()
    failed = [outcome for outcome in outcomes if isinstance(outcome, OSError)]
    assert failed, outcomes
    # The writers of the transaction whose commit failed left nothing; any that came
    # after it committed in a later one.
    assert rows == {200 + n for n, outcome in enumerate(outcomes) if outcome == 200 + n}
    assert len(rows) + len(failed) == 8
