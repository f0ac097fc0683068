"""Writes that ride along with the next statement of their transaction.

A use case often has writes whose results nothing reads at once: a card's event,
abuse-limit units given back, the claim on an idempotency key (read only when its answer
is written). Sent by itself each would cost a round trip, and on PostgreSQL a round
trip costs the service more CPU than a short statement costs the server. Such a write is
queued on its transaction's connection with :func:`write_later` and sent with the next
statement that goes through :func:`execute` or, at the latest, just before the transaction
commits (:class:`~giftcard.db.engine.Database` calls :func:`flush` when a transaction's
block ends without an error). On PostgreSQL the riders become data-modifying WITH
clauses of that statement, one round trip for all; on SQLite they run one after the
other just before it (there a statement is a function call, not a round trip).

Rules for a rider, since PostgreSQL runs all parts of one statement on one snapshot: it
must not touch a row that the statement it rides with, or another rider, reads or
writes, and nothing in its transaction may read what it writes before it is sent. Every
rider here writes a new row (an event, a key's claim) or rows nothing else in its
transaction touches (a reservation given back). Its parameters have names of their own,
checked not to meet the carrying statement's or another rider's.

A transaction rolled back takes its riders with it: queued writes are dropped when the
next transaction on the connection begins.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Delete, Insert, Update, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

from giftcard.db import direct

# Where a connection keeps the writes queued in its current transaction.
_RIDERS = "giftcard_riders"

Rider = Insert | Update | Delete
# What a transaction with nothing left to send carries its last riders with.
_NOTHING: Executable = select(literal_column("1"))


def write_later(
    connection: AsyncConnection, statement: Rider, parameters: Mapping[str, Any]
) -> None:
    """Queue `statement` with `parameters` to ride with the next statement.

    `statement` is built once, like the hot paths' statements, with parameter names of
    its own (prefixed by what it is for) that no carrier or other rider uses."""
    pending: list[tuple[Rider, Mapping[str, Any]]] = connection.info.setdefault(_RIDERS, [])
    pending.append((statement, parameters))


async def execute(
    connection: AsyncConnection, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> direct.Rows:
    """Execute `statement` with the writes queued before it (on SQLite each handed
    straight to the driver, see giftcard.db.direct)."""
    pending: list[tuple[Rider, Mapping[str, Any]]] = connection.info.pop(_RIDERS, [])
    riders = tuple(rider for rider, _ in pending)
    # The same statement twice would bind its parameters twice under one name.
    if pending and connection.dialect.name == "postgresql" and len(set(riders)) == len(riders):
        merged: dict[str, Any] = {}
        for _, values in pending:
            merged.update(values)
        merged.update(parameters or {})
        if len(merged) != sum(len(values) for _, values in pending) + len(parameters or {}):
            raise ValueError("a rider's parameter names meet another's or the carrier's")
        return await direct.execute(connection, _combined(statement, riders), merged)
    for rider, values in pending:
        await direct.execute(connection, rider, values)
    return await direct.execute(connection, statement, parameters)


def is_queued(connection: AsyncConnection, statement: Rider) -> bool:
    """Whether `statement` waits in this transaction to ride with the next statement."""
    pending: list[tuple[Rider, Mapping[str, Any]]] = connection.info.get(_RIDERS, [])
    return any(rider is statement for rider, _ in pending)


async def flush(connection: AsyncConnection) -> None:
    """Send the writes still queued: on PostgreSQL in one statement."""
    if connection.info.get(_RIDERS):
        await execute(connection, _NOTHING)


def discard(connection: AsyncConnection) -> None:
    """Forget what an earlier transaction of this connection queued and did not send."""
    connection.info.pop(_RIDERS, None)


@functools.lru_cache(maxsize=64)
def _combined(carrier: Executable, riders: tuple[Rider, ...]) -> Executable:
    """`carrier` with `riders` as data-modifying WITH clauses, built once per combination
    (statements compare and hash by identity), so that SQLAlchemy compiles it once."""
    ctes = [rider.cte(f"rider_{number}") for number, rider in enumerate(riders)]
    return carrier.add_cte(*ctes)  # type: ignore[attr-defined,no-any-return]
