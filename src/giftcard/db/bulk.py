"""Bulk writes for large batches (issuing 100,000 cards): ids allocated up front, then
rows streamed with COPY on PostgreSQL or one driver-level executemany on SQLite.

At this volume the per-row cost of building a dictionary per row and letting SQLAlchemy
bind each of them dominates the insert itself. So rows are given column by column:
each column is converted at once with its type's own bind processor (exactly as an
INSERT statement would convert it), a value every row shares is converted only once,
and the driver receives plain tuples.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Column, Table, Text, any_, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

BULK_ROWS_MAX = 1_000_000
# SQLite's page cache while a bulk load runs (the default is 2 MiB). Unique keys drawn at
# random (a card's serial and code hash) touch index pages all over the file; with a
# small cache nearly every insert evicts a page and reads one back.
SQLITE_BULK_CACHE_KIB = 131_072


def array_rows(**columns: tuple[str, TypeEngine[Any]]) -> TableValuedAlias:
    """Rows given column by column as array parameters (PostgreSQL's unnest), as a table
    a statement built once can select from: `column=(parameter name, element type)`."""
    return (
        func.unnest(*(bindparam(name, type_=ARRAY(type_)) for name, type_ in columns.values()))
        .table_valued(*columns)
        .render_derived()
    )


@asynccontextmanager
async def bulk_load(connection: AsyncConnection) -> AsyncIterator[None]:
    """Tune the connection for a bulk load, and restore it afterwards: it goes back to
    the pool."""
    if connection.dialect.name != "sqlite":
        yield
        return
    before = int((await connection.exec_driver_sql("PRAGMA cache_size")).scalar_one())
    await connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_BULK_CACHE_KIB}")
    try:
        yield
    finally:
        await connection.exec_driver_sql(f"PRAGMA cache_size = {before}")


async def allocate_ids(connection: AsyncConnection, table: Table, count: int) -> list[int]:
    """`count` fresh primary keys for `table`, to be used in this transaction.

    PostgreSQL hands them out from the table's sequence (safe under concurrency); on
    SQLite the transaction already holds the database's write lock, so the ids after the
    current maximum are ours alone."""
    if not 0 < count <= BULK_ROWS_MAX:
        raise ValueError(f"cannot allocate {count} ids")
    if connection.dialect.name == "postgresql":
        rows = await connection.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                "FROM generate_series(1, :count)"
            ),
            {"table": table.name, "count": count},
        )
        return [int(row[0]) for row in rows]
    start = (await connection.execute(select(func.coalesce(func.max(table.c.id), 0)))).scalar_one()
    return list(range(int(start) + 1, int(start) + 1 + count))


async def find_existing(
    connection: AsyncConnection, column: Column[Any], values: Sequence[str]
) -> set[str]:
    """The `values` already present in a text `column`, in one query however many there
    are: the list travels as one parameter (an array on PostgreSQL, JSON on SQLite)."""
    if len(values) > BULK_ROWS_MAX:
        raise ValueError("too many values for one look-up")
    if not values:
        return set()
    if connection.dialect.name == "postgresql":
        wanted = column == any_(bindparam("values", list(values), type_=ARRAY(Text)))
    else:
        listed = func.json_each(json.dumps(list(values))).table_valued("value")
        wanted = column.in_(select(listed.c.value))
    return set((await connection.execute(select(column).where(wanted))).scalars())


async def copy_rows(
    connection: AsyncConnection,
    table: Table,
    columns: Mapping[str, Sequence[Any]],
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Insert rows given column by column: row i takes the i-th value of every sequence
    in `columns`, and every row takes the same value for each column of `constants`."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError("every column needs one value per row, and there must be one")
    (count,) = lengths
    if count > BULK_ROWS_MAX:
        raise ValueError("too many rows for one bulk insert")
    if count == 0:
        return
    shared = constants or {}
    names = [*columns, *shared]
    converted: list[Iterable[Any]] = [
        _bind_column(connection, table.c[name], values) for name, values in columns.items()
    ]
    converted.extend(
        itertools.repeat(_bind_value(connection, table.c[name], value), count)
        for name, value in shared.items()
    )
    records = list(zip(*converted, strict=True))
    await _write(connection, table, names, records)


async def _write(
    connection: AsyncConnection, table: Table, names: list[str], records: list[tuple[Any, ...]]
) -> None:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(table.name, records=records, columns=names)
    elif dialect == "sqlite":
        # exec_driver_sql with a list of tuples is the driver's own executemany: no
        # statement compiling and no per-row parameter processing, while errors are still
        # wrapped in SQLAlchemy's exceptions like any other statement's. The names come
        # from the table's metadata, and every value is bound.
        quote = connection.dialect.identifier_preparer.quote
        statement = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in names)}) "  # noqa: S608
            f"VALUES ({', '.join('?' for _ in names)})"
        )
        await connection.exec_driver_sql(statement, records)
    else:
        raise ValueError(f"no bulk insert for {dialect}")


def _bind_column(connection: AsyncConnection, column: Column[Any], values: Sequence[Any]) -> Any:
    """A column's values as the driver should receive them (timestamps in UTC, as text
    on SQLite; booleans as integers on SQLite), like an INSERT would bind them."""
    dialect = connection.dialect
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return values if processor is None else map(processor, values)


def _bind_value(connection: AsyncConnection, column: Column[Any], value: Any) -> Any:
    dialect = connection.dialect
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return value if processor is None else processor(value)
