"""The reservation function counts a key's units through the key's index, whatever the
table's statistics say.

`limit_reservations` churns: every attempt inserts a unit per key, and every success
deletes them again, so a busy key (one address, the service-wide key) gathers dead
entries faster than autovacuum, waking once a minute, removes them. The function's
plans are made while the table looks small (a new database, or one just vacuumed), and
PostgreSQL then chose a sequential or bitmap scan for the count, which visits every dead
row of the key at every call: measured on a new database under redemptions over HTTP,
a call took 0.6 ms after 5 s, 10 ms after 30 s, all under the keys' advisory locks,
and the rate fell by a third in half a minute. A plain index scan marks the dead
entries it meets so that later scans skip them (and the index reuses their space), and
the cost stays flat: the function now runs with sequential and bitmap scans disabled.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SIGNATURE = (
    "giftcard_reserve_limits_many(bigint[], integer[], text[], integer[], timestamptz[], "
    "timestamptz)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"ALTER FUNCTION {SIGNATURE} SET enable_seqscan = off SET enable_bitmapscan = off"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER FUNCTION {SIGNATURE} RESET enable_seqscan")
        op.execute(f"ALTER FUNCTION {SIGNATURE} RESET enable_bitmapscan")
