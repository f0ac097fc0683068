"""The reservation of abuse-limit units for many attempts takes them all with one INSERT
when it can.

`giftcard_reserve_limits_many` (migration 0011) judges the attempts of a batch one by
one, each counting the units those before it reserved: one INSERT, and a statement to
look for full keys, per attempt. Almost always no key is anywhere near full, and then
every attempt is admitted whatever the order: when, for every key, the units it holds
in its window plus one for each attempt of the batch on it stay within its maximum, no
attempt can find it full. The function now checks that first and, when it holds, takes
every unit in one INSERT, drawing the ids first so that each is answered to its attempt.
Otherwise it goes on one attempt at a time, as before. Measured on a batch of 8 attempts
of 3 keys each: PostgreSQL's CPU per attempt, giving back included, 0.14 -> 0.09 ms.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The same arguments and rows as migration 0011's.
FUNCTION = """
CREATE OR REPLACE FUNCTION giftcard_reserve_limits_many(
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
    -- When no key would be full even if every attempt of the batch took a unit on it,
    -- every attempt is admitted: one INSERT for all of them.
    IF NOT EXISTS (
        SELECT 1
        FROM unnest(keys, maxima) AS rule(key, maximum)
        GROUP BY rule.key
        HAVING coalesce((held ->> rule.key)::integer, 0) + count(*) > min(rule.maximum)
    ) THEN
        RETURN QUERY
            WITH line AS (
                SELECT nextval(pg_get_serial_sequence('limit_reservations', 'id')) AS id,
                       rule.attempt, rule.key, rule.expiry
                FROM unnest(attempts, keys, expiries) AS rule(attempt, key, expiry)
            ), added AS (
                INSERT INTO limit_reservations (id, limit_key, expires_at)
                SELECT line.id, line.key, line.expiry FROM line
            )
            SELECT line.attempt, line.key, line.id, NULL::timestamptz FROM line;
        RETURN;
    END IF;
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        one_by_one = import_module(
            "giftcard.db.migrations.versions.0011_reserve_limits_of_many_attempts"
        )
        op.execute(one_by_one.FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
