"""On PostgreSQL, a transaction that counts abuse-limit units itself takes the keys'
locks and counts their units in one call.

A redemption now counts its limits in its own transaction on PostgreSQL, as on SQLite,
instead of reserving units by a call committed before it: it takes the keys' advisory
locks, counts, and keeps units only when refused, all before its commit releases the
locks. Taking the locks and counting must be two statements at READ COMMITTED (a
statement's snapshot is taken before the locks it waits for are granted, and would miss
what the transaction before committed under them): two round trips. Each statement of a
PL/pgSQL function reads what was committed before it started, so
`giftcard_lock_and_count_limits` does both in one call, counting through the keys' index
as `giftcard_reserve_limits_many` does (migration 0013).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# One row per key holding units in its window: the key, its units, its oldest's expiry.
FUNCTION = """
CREATE FUNCTION giftcard_lock_and_count_limits(
    lock_ids bigint[],
    keys text[],
    at timestamptz
) RETURNS TABLE (out_key text, units bigint, first_expiry timestamptz)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'giftcard_lock_and_count_limits runs at READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    PERFORM count(pg_advisory_xact_lock(lock_id)) FROM unnest(lock_ids) AS lock_id;
    RETURN QUERY
        SELECT unit.limit_key::text, count(*), min(unit.expires_at)
        FROM limit_reservations AS unit
        WHERE unit.limit_key = ANY(keys) AND unit.expires_at > at
        GROUP BY unit.limit_key;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION giftcard_lock_and_count_limits(bigint[], text[], timestamptz)")
