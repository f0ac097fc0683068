"""`Database.reading()`: reads without BEGIN and COMMIT on PostgreSQL, which must leave
nothing of that mode behind on the pooled connection the next transaction gets."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from giftcard.db.engine import Database


class Boom(Exception):
    pass


async def test_a_transaction_after_a_read_on_the_same_connection_is_still_atomic(
    database_url: str,
) -> None:
    """Given a pool of one connection, after a read through `reading()`, a transaction
    that writes and then fails leaves nothing: the connection is back in transactional
    mode, not in the read's autocommit."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.transaction() as connection:
            await connection.execute(text("CREATE TABLE scratch (n INTEGER)"))
        async with db.reading() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM scratch"))).scalar() == 0

        async def insert_then_fail() -> None:
            async with db.transaction() as connection:
                await connection.execute(text("INSERT INTO scratch VALUES (1)"))
                raise Boom

        with pytest.raises(Boom):
            await insert_then_fail()
        async with db.reading() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM scratch"))).scalar() == 0
    finally:
        await db.dispose()


async def test_a_read_sees_what_is_committed_and_writes_nothing_by_itself(
    database_url: str,
) -> None:
    """A read through `reading()` sees a transaction's rows once it committed."""
    db = Database(database_url, pool_size=2)
    try:
        async with db.transaction() as connection:
            await connection.execute(text("CREATE TABLE scratch (n INTEGER)"))
            await connection.execute(text("INSERT INTO scratch VALUES (1), (2)"))
        async with db.reading() as connection:
            assert (await connection.execute(text("SELECT sum(n) FROM scratch"))).scalar() == 3
    finally:
        await db.dispose()
