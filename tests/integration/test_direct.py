"""Statements handed straight to the driver (giftcard.db.direct) answer, fail and are seen
exactly as through SQLAlchemy, in the transaction SQLAlchemy holds."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
    tuple_,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db import direct
from giftcard.db.engine import is_database_unreachable, is_unique_violation
from giftcard.db.tables import idempotency_keys, limit_reservations
from giftcard.services import Services
from tests.conftest import sent_statements

BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
POSTGRESQL = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

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
async def test_in_lists_of_every_length_come_back_as_through_sqlalchemy(
    services: Services,
) -> None:
    """One statement run again and again with IN lists of other lengths, an empty one and
    more lengths than the forms it keeps among them, and with a value written into the
    statement itself: each run answers as SQLAlchemy does, never with the values of a
    run before it."""
    now = services.clock.now()
    keys = [f"lengths-{n}" for n in range(direct.FORMS_MAX + 8)]
    held = HELD.where(limit_reservations.c.limit_key != "lengths-2")
    async with services.db.transaction() as connection:
        await direct.execute(
            connection,
            insert(limit_reservations),
            [{"limit_key": key, "expires_at": now + timedelta(minutes=1)} for key in keys],
        )
        lengths = [3, 1, 3, 0, 5, *range(len(keys), 0, -1), 2, 3]
        for run, length in enumerate(lengths):
            # Other keys at each run, so that values kept from a run before would show.
            chosen = keys[run % 5 : run % 5 + length]
            values = {"b_keys": chosen, "b_now": now - timedelta(seconds=run)}
            straight = (await direct.execute(connection, held, values)).all()
            through = (await connection.execute(held, values)).all()
            assert [tuple(row) for row in straight] == [tuple(row) for row in through]
            assert [row.limit_key for row in straight] == [
                key for key in chosen if key != "lengths-2"
            ]
    # One form kept for each length, up to a bound.
    prepared = direct._PREPARED[services.db.engine.sync_engine]
    forms = [one.forms for (statement, _), one in prepared.items() if statement is held]
    assert forms
    assert 0 < len(forms[0]) <= direct.FORMS_MAX


@BOTH
async def test_an_in_list_of_pairs_comes_back_as_through_sqlalchemy(services: Services) -> None:
    """An IN list of tuples is written out anew at each run."""
    now = services.clock.now()
    later = now + timedelta(minutes=1)
    pairs = HELD.where(
        tuple_(limit_reservations.c.limit_key, limit_reservations.c.expires_at).in_(
            bindparam("b_pairs", expanding=True)
        )
    )
    async with services.db.transaction() as connection:
        await direct.execute(
            connection,
            insert(limit_reservations),
            [{"limit_key": f"pairs-{n}", "expires_at": later} for n in range(3)],
        )
        keys = ["pairs-0", "pairs-1", "pairs-2"]
        for chosen in (["pairs-0", "pairs-2"], ["pairs-1"]):
            values = {"b_keys": keys, "b_now": now, "b_pairs": [(key, later) for key in chosen]}
            straight = (await direct.execute(connection, pairs, values)).all()
            through = (await connection.execute(pairs, values)).all()
            assert [tuple(row) for row in straight] == [tuple(row) for row in through]
            assert [row.limit_key for row in straight] == chosen


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


class _Refused(Exception):
    pass


@BOTH
async def test_a_statement_sent_first_is_part_of_its_transaction(services: Services) -> None:
    """The first statement of a transaction, sent directly, is in that transaction:
    rolled back with it, or committed with it (on PostgreSQL it begins the transaction
    that SQLAlchemy then ends)."""
    now = services.clock.now()

    async def rolled_back() -> None:
        async with services.db.transaction() as connection:
            row = {"limit_key": "direct-rolled-back", "expires_at": now}
            await direct.execute(connection, insert(limit_reservations), row)
            raise _Refused

    with pytest.raises(_Refused):
        await rolled_back()
    async with services.db.transaction() as connection:
        row = {"limit_key": "direct-committed", "expires_at": now}
        await direct.execute(connection, insert(limit_reservations), row)
    async with services.db.reading() as connection:
        found = select(limit_reservations.c.limit_key).where(
            limit_reservations.c.limit_key.like("direct-%")
        )
        assert set((await connection.execute(found)).scalars()) == {"direct-committed"}


@POSTGRESQL
async def test_statements_at_once_on_one_connection_take_turns(services: Services) -> None:
    """Statements sent at once on one connection, directly or through SQLAlchemy, wait
    for each other instead of meeting in the driver (which refuses a second operation
    while one is in progress)."""
    slow = text("SELECT CAST(:n AS integer) AS n FROM pg_sleep(0.02)")
    async with services.db.transaction(write=False) as connection:
        answers = await asyncio.gather(
            *(direct.execute(connection, slow, {"n": n}) for n in range(3)),
            connection.execute(slow, {"n": 3}),
        )
    assert [answer.scalar_one() for answer in answers] == [0, 1, 2, 3]


@POSTGRESQL
@pytest.mark.parametrize("way", ["direct", "through SQLAlchemy"])
async def test_a_lost_connection_is_told_and_not_used_again(services: Services, way: str) -> None:
    """The server ends a connection in the middle of a transaction: the next statement
    on it fails as through SQLAlchemy, as a connection lost (the request is answered
    503, see giftcard.db.engine), and the pool hands out working connections after."""

    async def send(connection: AsyncConnection, statement: Any) -> direct.Rows:
        if way == "direct":
            return await direct.execute(connection, statement)
        return await connection.execute(statement)

    caught: list[DBAPIError] = []

    async def lost() -> None:
        async with services.db.transaction() as connection:
            pid = (await send(connection, text("SELECT pg_backend_pid()"))).scalar_one()
            async with services.db.reading() as other:
                ended = text("SELECT pg_terminate_backend(CAST(:pid AS integer))")
                assert (await other.execute(ended, {"pid": pid})).scalar_one()
            await asyncio.sleep(0.05)
            try:
                await send(connection, text("SELECT 1"))
            except DBAPIError as error:
                caught.append(error)
                # Given up at once, not left to be found out at its rollback.
                assert connection.invalidated
                raise

    with pytest.raises(Exception) as raised:  # what it is, is checked below
        await lost()
    [error] = caught
    assert error.connection_invalidated
    assert is_database_unreachable(error)
    assert is_database_unreachable(raised.value)
    for _ in range(services.db.engine.pool.size()):  # type: ignore[attr-defined]
        async with services.db.transaction(write=False) as connection:
            assert (await direct.execute(connection, text("SELECT 1"))).scalar_one() == 1


@BOTH
@pytest.mark.parametrize("way", ["direct", "through SQLAlchemy"])
async def test_a_table_changed_under_a_prepared_statement_is_prepared_anew(
    services: Services, way: str
) -> None:
    """A table's columns change (a migration while the service runs) under a statement
    the connection has prepared: on PostgreSQL that run of it fails as through
    SQLAlchemy (SQLite prepares it anew by itself), and the next is prepared anew and
    answers with the columns the table has now."""
    read = text("SELECT * FROM direct_test_changed")
    async with services.db.reading() as connection:
        await connection.execute(text("CREATE TABLE direct_test_changed (a integer)"))
        await connection.execute(text("INSERT INTO direct_test_changed VALUES (1)"))

    async def send(connection: AsyncConnection) -> Any:
        if way == "direct":
            return (await direct.execute(connection, read)).one()
        return (await connection.execute(read)).one()

    try:
        async with services.db.reading() as connection:
            assert tuple(await send(connection)) == (1,)
            async with services.db.reading() as other:
                await other.execute(text("ALTER TABLE direct_test_changed ADD COLUMN b text"))
            if not services.db.is_sqlite:
                with pytest.raises(DBAPIError, match="InvalidCachedStatementError"):
                    await send(connection)
            assert tuple(await send(connection)) == (1, None)
    finally:
        async with services.db.reading() as connection:
            await connection.execute(text("DROP TABLE direct_test_changed"))
