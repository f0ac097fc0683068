"""Writes that ride along (giftcard.db.riders): sent with the next statement, in one round
trip on PostgreSQL; never lost when no statement follows; never sent for a transaction
that was rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db import riders
from giftcard.db.engine import Database
from giftcard.db.tables import limit_reservations
from giftcard.services import Services


def reservation(services: Services, key: str) -> dict[str, Any]:
    return {"limit_key": key, "expires_at": services.clock.now() + timedelta(hours=1)}


async def keys(db: Database) -> list[str]:
    async with db.transaction(write=False) as connection:
        rows = await connection.execute(
            select(limit_reservations.c.limit_key).order_by(limit_reservations.c.id)
        )
        return [key for key in rows.scalars() if key.startswith("rider-test")]


@contextmanager
def counting_statements(db: Database) -> Iterator[list[str]]:
    sent: list[str] = []

    def _sent(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", _sent)
    try:
        yield sent
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", _sent)


async def test_queued_writes_go_with_the_next_statement(services: Services) -> None:
    """Two queued inserts and the statement after them: on PostgreSQL one statement (one
    round trip), on SQLite three; each row with its own values, also where the carrying
    statement's parameters have the same names as the riders' columns."""
    db = services.db
    async with db.transaction() as connection:
        riders.insert_later(connection, limit_reservations, reservation(services, "rider-test-1"))
        riders.insert_later(connection, limit_reservations, reservation(services, "rider-test-2"))
        with counting_statements(db) as sent:
            await riders.execute(
                connection,
                insert(limit_reservations),
                reservation(services, "rider-test-carrier"),
            )
    expected = 1 if db.engine.dialect.name == "postgresql" else 3
    assert len(sent) == expected, sent
    assert sorted(await keys(db)) == ["rider-test-1", "rider-test-2", "rider-test-carrier"]


async def test_queued_writes_are_sent_before_the_commit_when_no_statement_follows(
    services: Services,
) -> None:
    async with services.db.transaction() as connection:
        riders.insert_later(connection, limit_reservations, reservation(services, "rider-test"))
    assert await keys(services.db) == ["rider-test"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_queued_writes_of_a_rolled_back_transaction_are_never_sent(
    services: Services, database_url: str
) -> None:
    """A transaction that queued a write and then failed: its write is not sent by the
    next transaction on the same pooled connection, neither with its statements nor
    before its commit."""
    db = Database(database_url, pool_size=1)
    try:

        async def failing_use_case() -> None:
            async with db.transaction() as connection:
                riders.insert_later(
                    connection, limit_reservations, reservation(services, "rider-test-lost")
                )
                raise RuntimeError("the use case failed")

        with pytest.raises(RuntimeError):
            await failing_use_case()

        async def next_use_case(connection: AsyncConnection) -> None:
            await riders.execute(connection, select(func.count()).select_from(limit_reservations))

        await db.run(next_use_case)
        assert await keys(db) == []
    finally:
        await db.dispose()
