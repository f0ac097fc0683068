"""Alembic environment: migrations run on a connection handed over by giftcard.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from giftcard.db.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Several servers may start at once; only one migrates at a time.
        connection.execute(text("SELECT pg_advisory_xact_lock(7316001)"))
    context.run_migrations()
