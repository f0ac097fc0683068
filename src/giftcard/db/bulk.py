"""Bulk writes for large batches (issuing 100,000 cards): ids allocated up front, then
rows streamed with COPY on PostgreSQL or one executemany on SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeDecorator

BULK_ROWS_MAX = 1_000_000


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


async def copy_rows(
    connection: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert many rows at once; every row must name the same columns."""
    if not rows:
        return
    if len(rows) > BULK_ROWS_MAX:
        raise ValueError("too many rows for one bulk insert")
    if connection.dialect.name != "postgresql":
        await connection.execute(insert(table), list(rows))
        return
    columns = list(rows[0].keys())
    records = [
        tuple(_bind(table, column, row[column], connection) for column in columns) for row in rows
    ]
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.copy_records_to_table(table.name, records=records, columns=columns)


def _bind(table: Table, column: str, value: Any, connection: AsyncConnection) -> Any:
    """Apply a column type's own conversion (timestamps to UTC) as an INSERT would."""
    column_type = table.c[column].type
    if isinstance(column_type, TypeDecorator) and value is not None:
        return column_type.process_bind_param(value, connection.dialect)
    return value
