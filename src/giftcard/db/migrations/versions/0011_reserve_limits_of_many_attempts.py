"""On PostgreSQL, the abuse-limit units of many attempts are reserved by one function call.

`giftcard_reserve_limits_many` does for a batch of attempts what
`giftcard_reserve_limits` (migration 0010) did for one, in the batch's order, as if each
had called it in turn: under one transaction-scoped advisory lock per key of the whole
batch (taken in the order given), it counts each key's units still in their window once,
then, attempt by attempt, either inserts one unit per key of the attempt or, when any
of its keys is full (counting the units the attempts before it in the batch reserved),
inserts nothing for it and returns its full keys. A process sends the attempts that
wait while its previous call runs together: one round trip, one commit and one turn
on the busy keys' locks for all of them. It replaces the one-attempt function.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Rows (attempt, key, maximum, expiry), grouped by attempt, attempts numbered from 0 in
# the order they are to be judged. Returns one row per full key of each refused attempt
# (reserved_id NULL, with the key's first expiry: when its oldest unit in the window
# leaves it) and one row per unit of each admitted attempt (reserved_id set).
FUNCTION = """
CREATE FUNCTION giftcard_reserve_limits_many(
    lock_ids bigint[],
    attempts integer[],
    keys text[],
    maxima integer[],
    expiries timestamptz[],
    at timestamptz
) RETURNS TABLE (
    out_attempt integer, out_key text, reserved_id bigint, first_expiry timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held jsonb;
    first jsonb;
    attempt_no integer;
    refused boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'giftcard_reserve_limits_many runs at READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    PERFORM count(pg_advisory_xact_lock(lock_id)) FROM unnest(lock_ids) AS lock_id;
    -- Each key's units in the window, and its oldest one's expiry, as committed now.
    SELECT coalesce(jsonb_object_agg(counted.key, counted.units), '{}'),
           coalesce(jsonb_object_agg(counted.key, counted.oldest)
               FILTER (WHERE counted.oldest IS NOT NULL), '{}')
    INTO held, first
    FROM (
        SELECT rule.key, count(unit.id) AS units, min(unit.expires_at) AS oldest
        FROM (SELECT DISTINCT key FROM unnest(keys) AS key) AS rule
        LEFT JOIN limit_reservations AS unit
            ON unit.limit_key = rule.key AND unit.expires_at > at
        GROUP BY rule.key
    ) AS counted;
    FOR attempt_no IN SELECT DISTINCT attempt FROM unnest(attempts) AS attempt ORDER BY 1 LOOP
        refused := false;
        FOR out_attempt, out_key, reserved_id, first_expiry IN
            SELECT rule.attempt, rule.key, NULL::bigint, (first ->> rule.key)::timestamptz
            FROM unnest(attempts, keys, maxima) AS rule(attempt, key, maximum)
            WHERE rule.attempt = attempt_no AND (held ->> rule.key)::integer >= rule.maximum
        LOOP
            refused := true;
            RETURN NEXT;
        END LOOP;
        CONTINUE WHEN refused;
        FOR out_attempt, out_key, reserved_id, first_expiry IN
            INSERT INTO limit_reservations AS unit (limit_key, expires_at)
            SELECT rule.key, rule.expiry
            FROM unnest(attempts, keys, expiries) AS rule(attempt, key, expiry)
            WHERE rule.attempt = attempt_no
            RETURNING attempt_no, unit.limit_key::text, unit.id::bigint, NULL::timestamptz
        LOOP
            held := jsonb_set(held, ARRAY[out_key], to_jsonb((held ->> out_key)::integer + 1));
            IF NOT first ? out_key THEN
                first := jsonb_set(
                    first,
                    ARRAY[out_key],
                    (SELECT to_jsonb(rule.expiry)
                     FROM unnest(attempts, keys, expiries) AS rule(attempt, key, expiry)
                     WHERE rule.attempt = attempt_no AND rule.key = out_key)
                );
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$
"""

ONE_ATTEMPT = (
    "DROP FUNCTION giftcard_reserve_limits(bigint[], text[], integer[], timestamptz[], timestamptz)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)
        op.execute(ONE_ATTEMPT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        from importlib import import_module

        one_attempt = import_module(
            "giftcard.db.migrations.versions.0010_reserve_limits_in_one_call"
        )
        op.execute(one_attempt.FUNCTION)
        op.execute(
            "DROP FUNCTION giftcard_reserve_limits_many"
            "(bigint[], integer[], text[], integer[], timestamptz[], timestamptz)"
        )
