"""What a PostgreSQL server must do for this service that the service does not do itself:
keep its tables' statistics up to date, which autovacuum does by default.

The tables a running server fills (idempotency keys, journal, postings, events) start
empty. A statement prepared on a connection while such a table holds a page or two may
be given a plan that reads it whole, which is right for a page; PostgreSQL remakes such
plans when the table is analyzed again, and without autovacuum (or ANALYZE run on a
schedule) that never happens: the plan reads the whole table at every call as it grows.
Measured on such a server: 1,886 such scans of `idempotency_keys` in a few minutes of
redemptions had read 18 million rows, and each redemption cost PostgreSQL a third more
CPU than with the statistics fresh. `giftcard serve` says so at start (:func:`warnings`).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import text

from giftcard.db.engine import Database, async_url

# The server settings that decide whether anything analyzes the tables by itself:
# autovacuum, and the statistics it works from (without them it does nothing).
SETTINGS = ("autovacuum", "track_counts")

_ADVICE = (
    "the tables this service fills are never analyzed, and statements planned while they "
    "were small go on reading them whole as they grow. Turn it on (PostgreSQL's default), "
    "or run ANALYZE (and VACUUM) on a schedule."
)


def warnings(settings: Mapping[str, str]) -> list[str]:
    """What to tell an operator about `settings` (those of :data:`SETTINGS`, as
    PostgreSQL shows them): nothing when the statistics are kept up to date."""
    said = []
    for name in SETTINGS:
        if settings.get(name) == "off":
            said.append(f"PostgreSQL runs with {name} off: {_ADVICE}")
    return said


async def read_settings(db: Database) -> dict[str, str]:
    """The server's :data:`SETTINGS`, as PostgreSQL shows them ("on" or "off")."""
    async with db.transaction(write=False) as connection:
        rows = await connection.execute(
            text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"),
            {"names": list(SETTINGS)},
        )
        return {str(name): str(setting) for name, setting in rows.tuples()}


async def check(database_url: str) -> list[str]:
    """:func:`warnings` for the server of `database_url`; none for SQLite, whose planner
    keeps no statistics of how full a table is unless told to (ANALYZE), so none go
    stale."""
    if async_url(database_url).startswith("sqlite"):
        return []
    db = Database(database_url, pool_size=1)
    try:
        return warnings(await read_settings(db))
    finally:
        await db.dispose()
