"""Idempotency keys: a retried request acts once and gets the first response again.

A request carrying a key first *claims* it in a short transaction of its own (a row in
state `in_progress`). The use case then writes the response into that row in the **same
transaction** as its money movement, so the effect and the record of it commit together
or not at all: if the server dies in between, nothing happened and the key can be claimed
again once its lock has gone stale (`LOCK_STALE_S`). A key is scoped to its caller; the
request is remembered only as a keyed hash (the body may hold a gift card code).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db.engine import Database
from giftcard.db.tables import idempotency_keys
from giftcard.errors import ErrorCode, GiftcardError

KEY_LENGTH_MAX = 255
# A claim older than this is taken to belong to a request that died.
LOCK_STALE_S = 60
# Keys are kept at least this long, then purged.
KEY_TTL_S = 24 * 3600
PURGE_BATCH_MAX = 10_000


@dataclass(frozen=True)
class Claim:
    id: int
    locked_at: datetime


@dataclass(frozen=True)
class Replay:
    status: int
    body: str


def fingerprint(secret_key: bytes, method: str, path: str, body: Any) -> bytes:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hmac.new(secret_key, canonical.encode(), hashlib.sha256).digest()


def check_key(key: str) -> None:
    if not 1 <= len(key) <= KEY_LENGTH_MAX or not key.isprintable() or not key.isascii():
        raise GiftcardError(
            ErrorCode.VALIDATION_ERROR,
            f"Idempotency-Key must be 1 to {KEY_LENGTH_MAX} printable ASCII characters.",
            param="Idempotency-Key",
        )


async def claim(
    db: Database, *, scope: str, key: str, request_fingerprint: bytes, now: datetime
) -> Claim | Replay:
    """Claim `key` for this request, or return the response it already produced."""
    check_key(key)

    async def work(connection: AsyncConnection) -> Claim | Replay:
        insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        new_id = (
            await connection.execute(
                insert(idempotency_keys)
                .values(
                    scope=scope,
                    key=key,
                    fingerprint=request_fingerprint,
                    state="in_progress",
                    locked_at=now,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["scope", "key"])
                .returning(idempotency_keys.c.id)
            )
        ).scalar_one_or_none()
        if new_id is not None:
            return Claim(int(new_id), now)
        row = (
            await connection.execute(
                select(idempotency_keys).where(
                    idempotency_keys.c.scope == scope, idempotency_keys.c.key == key
                )
            )
        ).one()
        if not hmac.compare_digest(row.fingerprint, request_fingerprint):
            raise GiftcardError(
                ErrorCode.IDEMPOTENCY_KEY_REUSED,
                "This Idempotency-Key was already used with a different request.",
            )
        if row.state == "complete":
            return Replay(row.response_status, row.response_body)
        if row.locked_at > now - timedelta(seconds=LOCK_STALE_S):
            raise GiftcardError(
                ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                "A request with this Idempotency-Key is still being processed; retry shortly.",
            )
        taken = await connection.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.id == row.id, idempotency_keys.c.locked_at == row.locked_at)
            .values(locked_at=now)
        )
        if taken.rowcount != 1:
            raise GiftcardError(
                ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                "A request with this Idempotency-Key is still being processed; retry shortly.",
            )
        return Claim(int(row.id), now)

    return await db.run(work)


async def complete(connection: AsyncConnection, held: Claim, *, status: int, body: str) -> None:
    """Record the response, inside the use case's own transaction."""
    result = await connection.execute(
        update(idempotency_keys)
        .where(
            idempotency_keys.c.id == held.id,
            idempotency_keys.c.state == "in_progress",
            idempotency_keys.c.locked_at == held.locked_at,
        )
        .values(state="complete", response_status=status, response_body=body)
    )
    if result.rowcount != 1:
        # Another request took the key over while this one ran too long: roll back rather
        # than act twice.
        raise GiftcardError(
            ErrorCode.IDEMPOTENCY_KEY_IN_USE,
            "Another request took over this Idempotency-Key; nothing was done by this one.",
        )


async def complete_alone(db: Database, held: Claim, *, status: int, body: str) -> None:
    """Record a refusal (a 4xx that moved nothing) so a retry gets the same answer."""

    async def work(connection: AsyncConnection) -> None:
        await complete(connection, held, status=status, body=body)

    await db.run(work)


async def release(db: Database, held: Claim) -> None:
    """Give the key back after a failure that should not be remembered."""

    async def work(connection: AsyncConnection) -> None:
        await connection.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.id == held.id,
                idempotency_keys.c.state == "in_progress",
                idempotency_keys.c.locked_at == held.locked_at,
            )
        )

    await db.run(work)


async def purge(db: Database, *, now: datetime) -> int:
    """Forget keys older than KEY_TTL_S, a bounded batch at a time; returns how many."""
    cutoff = now - timedelta(seconds=KEY_TTL_S)

    async def work(connection: AsyncConnection) -> int:
        ids = (
            select(idempotency_keys.c.id)
            .where(idempotency_keys.c.created_at < cutoff)
            .limit(PURGE_BATCH_MAX)
        )
        result = await connection.execute(
            delete(idempotency_keys).where(idempotency_keys.c.id.in_(ids))
        )
        return int(result.rowcount)

    return await db.run(work)
