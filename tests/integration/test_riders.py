"""Writes that ride along (giftcard.db.riders): sent with the next statement, in one round
trip on PostgreSQL; never lost when no statement follows; never sent for a transaction
that was rolled back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db import riders
from giftcard.db.engine import Database
from giftcard.db.tables import limit_reservations
from giftcard.services import Services
from tests.conftest import sent_statements


def rider(name: str) -> Any:
    """An insert built once, its parameters named `b_<name>_...`, as riders are."""
    return insert(limit_reservations).values(
        limit_key=bindparam(f"b_{name}_key"), expires_at=bindparam(f"b_{name}_expires_at")
    )


FIRST, SECOND = rider("first"), rider("second")


def reservation(services: Services, key: str, name: str | None = None) -> dict[str, Any]:
    """The values of a row of `limit_reservations`; for a rider, named as its are."""
    values = {"key": key, "expires_at": services.clock.now() + timedelta(hours=1)}
    if name is None:
        return {"limit_key": values["key"], "expires_at": values["expires_at"]}
    return {f"b_{name}_{column}": value for column, value in values.items()}


async def keys(db: Database) -> list[str]:
    async with db.transaction(write=False) as connection:
        rows = await connection.execute(
            select(limit_reservations.c.limit_key).order_by(limit_reservations.c.id)
        )
        return [key for key in rows.scalars() if key.startswith("rider-test")]


async def test_queued_writes_go_with_the_next_statement(services: Services) -> None:
    """Two queued inserts and the statement after them: on PostgreSQL one statement (one
    round trip), on SQLite three; each row with its own values."""
    db = services.db
    async with db.transaction() as connection:
        riders.write_later(connection, FIRST, reservation(services, "rider-test-1", "first"))
        riders.write_later(connection, SECOND, reservation(services, "rider-test-2", "second"))
        with sent_statements(db) as sent:
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
        riders.write_later(connection, FIRST, reservation(services, "rider-test", "first"))
    assert await keys(services.db) == ["rider-test"]


async def test_one_rider_queued_twice_is_sent_twice(services: Services) -> None:
    """The same statement twice cannot be two WITH clauses of one statement (its
    parameters would meet): each is sent by itself, none is lost."""
    async with services.db.transaction() as connection:
        riders.write_later(connection, FIRST, reservation(services, "rider-test-1", "first"))
        riders.write_later(connection, FIRST, reservation(services, "rider-test-2", "first"))
    assert await keys(services.db) == ["rider-test-1", "rider-test-2"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_rider_whose_parameter_names_meet_the_carriers_is_refused(
    services: Services,
) -> None:
    """A rider must name its parameters its own way: one that shares a name with the
    statement it would ride with fails loudly instead of writing the carrier's value."""
    async with services.db.transaction() as connection:
        riders.write_later(connection, FIRST, reservation(services, "rider-test-1", "first"))
        with pytest.raises(ValueError, match="parameter names"):
            await riders.execute(
                connection, FIRST, reservation(services, "rider-test-carrier", "first")
            )


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
                riders.write_later(
                    connection, FIRST, reservation(services, "rider-test-lost", "first")
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
