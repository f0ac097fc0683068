"""Statements handed straight to SQLite's driver (giftcard.db.direct) answer, fail and are
seen exactly as through SQLAlchemy; on PostgreSQL they go through SQLAlchemy."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from giftcard.db import direct
from giftcard.db.engine import is_unique_violation
from giftcard.db.tables import idempotency_keys, limit_reservations
from giftcard.services import Services
from tests.conftest import sent_statements

BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

# The units of some keys that are still in their window, with the first to expire.
HELD = (
    select(
        limit_reservations.c.limit_key,
        limit_reservations.c.id,
        limit_reservations.c.expires_at,
    )
    .where(
        limit_reservations.c.limit_key.in_(bindparam("b_keys", expanding=True)),
        limit_reservations.c.expires_at > bindparam("b_now"),
    )
    .order_by(limit_reservations.c.id)
)


@BOTH
async def test_rows_come_back_as_through_sqlalchemy(services: Services) -> None:
    """Rows written by a list of values and read with an IN list: the same values, types
    and names both ways, timestamps in UTC."""
    now = services.clock.now()
    async with services.db.transaction() as connection:
        await direct.execute(
            connection,
            insert(limit_reservations),
            [
                {"limit_key": f"direct-{n}", "expires_at": now + timedelta(minutes=n)}
                for n in range(4)
            ],
        )
        values = {"b_keys": ["direct-1", "direct-2", "direct-3", "elsewhere"], "b_now": now}
        straight = (await direct.execute(connection, HELD, values)).all()
        through = (await connection.execute(HELD, values)).all()
    assert [tuple(row) for row in straight] == [tuple(row) for row in through]
    assert [row.limit_key for row in straight] == ["direct-1", "direct-2", "direct-3"]
    assert [row.expires_at for row in straight] == [now + timedelta(minutes=n) for n in (1, 2, 3)]
    assert all(row.expires_at.tzinfo is UTC for row in straight)
    assert straight[0]._mapping == dict(through[0]._mapping)


@BOTH
async def test_values_are_stored_as_through_sqlalchemy(services: Services) -> None:
    """A timestamp written directly is stored as SQLAlchemy stores it (on SQLite, text
    that must compare with the rest as text)."""
    moment = {"expires_at": services.clock.now() + timedelta(microseconds=123)}
    stored = text("SELECT CAST(expires_at AS text) FROM limit_reservations WHERE limit_key = :key")
    async with services.db.transaction() as connection:
        row = insert(limit_reservations)
        await direct.execute(connection, row, {"limit_key": "direct-stored"} | moment)
        await connection.execute(row, {"limit_key": "through-stored"} | moment)
        straight = (await connection.execute(stored, {"key": "direct-stored"})).scalar_one()
        through = (await connection.execute(stored, {"key": "through-stored"})).scalar_one()
    assert straight == through


@BOTH
async def test_one_row_or_none_or_a_value(services: Services) -> None:
    async with services.db.transaction(write=False) as connection:
        answer = await direct.execute(connection, text("SELECT 7 AS seven, 'x' AS letter"))
        row = answer.one()
        assert (row.seven, row.letter) == (7, "x")
        assert (await direct.execute(connection, text("SELECT 7"))).scalar_one() == 7
        nothing = text("SELECT 1 WHERE 1 = 0")
        assert (await direct.execute(connection, nothing)).one_or_none() is None
        assert (await direct.execute(connection, nothing)).scalar_one_or_none() is None


@BOTH
async def test_a_refused_write_fails_as_through_sqlalchemy(services: Services) -> None:
    """A unique key met twice is SQLAlchemy's IntegrityError, told apart as before, with
    the values kept out of its message."""
    row = {
        "scope": "direct-test",
        "key": "k-1",
        "fingerprint": b"secret fingerprint",
        "created_at": services.clock.now(),
    }
    async with services.db.transaction() as connection:
        await direct.execute(connection, insert(idempotency_keys), row)
        with pytest.raises(IntegrityError) as raised:
            await direct.execute(connection, insert(idempotency_keys), row)
    assert is_unique_violation(raised.value)
    assert "secret fingerprint" not in str(raised.value)
    assert "k-1" not in str(raised.value)


@BOTH
async def test_listeners_see_each_statement(services: Services) -> None:
    """What listens to the engine's statements (the tests that count them, among
    others) sees those sent directly, with their values."""
    async with services.db.transaction(write=False) as connection:
        with sent_statements(services.db) as sent:
            await direct.execute(connection, text("SELECT CAST(:n AS integer) AS n"), {"n": 41})
    [(statement, parameters)] = sent
    assert "SELECT" in statement
    assert 41 in (parameters.values() if isinstance(parameters, dict) else parameters)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_statements_built_at_each_call_are_not_kept_without_end(services: Services) -> None:
    async with services.db.transaction(write=False) as connection:
        for n in range(direct.PREPARED_MAX + 10):
            statement = text(f"SELECT {n} AS n")
            assert (await direct.execute(connection, statement)).scalar_one() == n
    assert 0 < len(direct._PREPARED[services.db.engine.sync_engine]) <= direct.PREPARED_MAX


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_default_computed_in_python_is_refused(services: Services) -> None:
    """A column default that SQLAlchemy computes at execution would be left out: such a
    statement is refused before anything is sent."""
    table = Table(
        "direct_test_defaults",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String, default=lambda: "computed"),
    )
    async with services.db.transaction() as connection:
        with pytest.raises(ValueError, match="default computed in Python"):
            await direct.execute(connection, insert(table), {"id": 1})


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_write_waits_while_another_process_writes(services: Services) -> None:
    """The database locked by another connection's write transaction: the statement is
    tried again until the lock is gone, then succeeds, instead of failing at once."""
    path = make_url(services.db.url).database
    assert path is not None
    other = sqlite3.connect(Path(path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.05, other.execute, "COMMIT")
    try:
        async with services.db.reading() as connection:
            await direct.execute(
                connection,
                insert(limit_reservations),
                {"limit_key": "direct-waited", "expires_at": services.clock.now()},
            )
    finally:
        other.close()
    async with services.db.reading() as connection:
        keys = select(limit_reservations.c.limit_key).where(
            limit_reservations.c.limit_key == "direct-waited"
        )
        assert (await connection.execute(keys)).scalar_one() == "direct-waited"
