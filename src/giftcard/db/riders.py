"""Writes that ride along with the next statement of their transaction.

A use case often ends with writes whose results nothing reads: a card's event, abuse-limit
units given back. Sent by itself each would cost a round trip, and on PostgreSQL a round
trip costs the service more CPU than a short statement costs the server. Such a write is
queued on its transaction's connection with :func:`write_later` and sent with the next
statement that goes through :func:`execute` or, at the latest, just before the transaction
commits (:class:`~giftcard.db.engine.Database` calls :func:`flush` when a transaction's
block ends without an error). On PostgreSQL the riders become data-modifying WITH
clauses of that statement, one round trip for all; on SQLite they run one after the
other just before it (there a statement is a function call, not a round trip).

Rules for a rider, since PostgreSQL runs all parts of one statement on one snapshot:
it must not touch a row that the statement it rides with, or another rider, reads or
writes, and nothing in its transaction may read what it writes before it is sent. Every
rider here writes a new row (an event) or rows nothing else in its transaction touches
(a reservation given back). Its values are bound anonymously, so they never meet the
names of the carrying statement's parameters (which must not be named ``param_N``).

A transaction rolled back takes its riders with it: queued writes are dropped when the
next transaction on the connection begins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import CursorResult, Delete, Insert, Table, Update, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

# Where a connection keeps the writes queued in its current transaction.
_RIDERS = "giftcard_riders"

Rider = Insert | Update | Delete


def write_later(connection: AsyncConnection, statement: Rider) -> None:
    """Queue `statement` (its values bound in it) to ride with the next statement."""
    connection.info.setdefault(_RIDERS, []).append(statement)


def insert_later(connection: AsyncConnection, table: Table, values: Mapping[str, Any]) -> None:
    """Queue the insert of one row of `table`."""
    columns = table.c
    write_later(
        connection,
        insert(table).values(
            {columns[key]: literal(value, columns[key].type) for key, value in values.items()}
        ),
    )


async def execute(
    connection: AsyncConnection, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> CursorResult[Any]:
    """Execute `statement` with the writes queued before it."""
    riders: list[Rider] = connection.info.pop(_RIDERS, [])
    if riders:
        if connection.dialect.name == "postgresql":
            ctes = [rider.cte(f"rider_{number}") for number, rider in enumerate(riders)]
            statement = statement.add_cte(*ctes)  # type: ignore[attr-defined]
        else:
            for rider in riders:
                await connection.execute(rider)
    return await connection.execute(statement, parameters)


async def flush(connection: AsyncConnection) -> None:
    """Send the writes still queued: on PostgreSQL in one statement."""
    riders: list[Rider] = connection.info.get(_RIDERS, [])
    if not riders:
        return
    if connection.dialect.name == "postgresql":
        await execute(connection, select(literal(1)))
        return
    connection.info.pop(_RIDERS)
    for rider in riders:
        await connection.execute(rider)


def discard(connection: AsyncConnection) -> None:
    """Forget what an earlier transaction of this connection queued and did not send."""
    connection.info.pop(_RIDERS, None)
