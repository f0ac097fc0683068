"""Bringing a database's schema up to date with the Alembic migrations in this package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from giftcard.db.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(database_url: str) -> None:
    """Apply every migration not yet applied."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.transaction() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
    finally:
        await db.dispose()


async def pending(database_url: str) -> bool:
    """True if the database is behind the newest migration."""
    db = Database(database_url, pool_size=1)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        async with db.transaction(write=False) as connection:
            current = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await db.dispose()
    return bool(current != head)
