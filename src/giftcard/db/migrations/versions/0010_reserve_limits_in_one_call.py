"""On PostgreSQL, abuse-limit units are reserved by one function call, committed by itself.

`giftcard_reserve_limits` does what `DatabaseStore.reserve` did in five round trips
(BEGIN, the advisory locks, the count, the insert, COMMIT): it takes one transaction-scoped
advisory lock per key in the order given, then, under them, counts each key's units still
in their window and either inserts one unit per key or, when any key is full, inserts
nothing and returns the full ones. Each statement of a PL/pgSQL function reads what was
committed before it started (READ COMMITTED), so the count sees everything the attempt
before committed under the same locks; the function refuses to run at another isolation
level, where its snapshot would be older. SQLite keeps the statements: it has one writer
at a time already.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Returns one row per full key (reserved_id NULL, with its count and first expiry), or,
# when none is full, one row per reserved unit (reserved_id set).
FUNCTION = """
CREATE FUNCTION giftcard_reserve_limits(
    lock_ids bigint[],
    keys text[],
    maxima integer[],
    expiries timestamptz[],
    at timestamptz
) RETURNS TABLE (
    out_key text, reserved_id bigint, held bigint, first_expiry timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'giftcard_reserve_limits runs at READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    PERFORM count(pg_advisory_xact_lock(lock_id)) FROM unnest(lock_ids) AS lock_id;
    RETURN QUERY
        SELECT rule.key, NULL::bigint, count(unit.id), min(unit.expires_at)
        FROM unnest(keys, maxima) AS rule(key, maximum)
        LEFT JOIN limit_reservations AS unit
            ON unit.limit_key = rule.key AND unit.expires_at > at
        GROUP BY rule.key, rule.maximum
        HAVING count(unit.id) >= rule.maximum;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        INSERT INTO limit_reservations AS unit (limit_key, expires_at)
        SELECT * FROM unnest(keys, expiries)
        RETURNING unit.limit_key::text, unit.id::bigint, NULL::bigint, NULL::timestamptz;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION giftcard_reserve_limits"
            "(bigint[], text[], integer[], timestamptz[], timestamptz)"
        )
