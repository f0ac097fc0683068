"""Idempotency keys: a retried request acts once and gets the first response again.

The key is claimed inside the use case's own transaction, as its first statement, and
the response is written into the same row before that transaction commits, so the
effect and the record of it commit together or not at all. A request that died with
its server (kill -9, power loss) therefore leaves nothing behind: its retry acts at
once. A duplicate sent while the first is still running meets the first's uncommitted
row on the unique key (scope, key) and waits for it to commit — PostgreSQL's unique
index makes it wait, SQLite has one writer at a time — and then gets its answer back.

A key is scoped to its caller; the request is remembered only as a keyed hash (the body
may hold a gift card code), and the stored answer is what the door chose to keep (never
a code). Which refusals are remembered is decided by the unit of work.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db import riders
from giftcard.db.engine import Database
from giftcard.db.tables import idempotency_keys
from giftcard.errors import ErrorCode, GiftcardError

KEY_LENGTH_MAX = 255
# Keys are kept at least this long, then purged.
KEY_TTL_S = 24 * 3600
PURGE_BATCH_MAX = 10_000


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str


@dataclass(frozen=True)
class KeyedRequest:
    """A request that carries an Idempotency-Key, and how its door words what it stores:
    `answer` for the result of the use case, `refusal` for a remembered refusal."""

    scope: str
    key: str
    fingerprint: bytes
    answer: Callable[[Any], StoredResponse]
    refusal: Callable[[GiftcardError], StoredResponse]


class Replayed(Exception):
    """The key already has an answer: this request must not act, only give it back."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__(response.status)
        self.response = response


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


# Built once (see giftcard.ledger), one for each dialect's name.
_CLAIMS = {
    dialect: insert(idempotency_keys)
    .on_conflict_do_nothing(index_elements=["scope", "key"])
    .returning(idempotency_keys.c.id)
    for dialect, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}
_COMPLETE = update(idempotency_keys).where(idempotency_keys.c.id == bindparam("b_id"))


async def claim(connection: AsyncConnection, keyed: KeyedRequest, *, now: datetime) -> int:
    """Claim the key in this transaction and return its row's id, or raise
    :class:`Replayed` with the answer a finished request left under it."""
    new_id = (
        await connection.execute(
            _CLAIMS[connection.dialect.name],
            {
                "scope": keyed.scope,
                "key": keyed.key,
                "fingerprint": keyed.fingerprint,
                "created_at": now,
            },
        )
    ).scalar_one_or_none()
    if new_id is not None:
        return int(new_id)
    # Only committed rows conflict here, and a row is only ever committed with its answer.
    row = (
        await connection.execute(
            select(idempotency_keys).where(
                idempotency_keys.c.scope == keyed.scope, idempotency_keys.c.key == keyed.key
            )
        )
    ).one()
    if not hmac.compare_digest(row.fingerprint, keyed.fingerprint):
        raise GiftcardError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This Idempotency-Key was already used with a different request.",
        )
    raise Replayed(StoredResponse(row.response_status, row.response_body))


async def complete(connection: AsyncConnection, claim_id: int, response: StoredResponse) -> None:
    """Write the answer into the claimed row, before the transaction commits (the writes
    queued to ride along go with it)."""
    await riders.execute(
        connection,
        _COMPLETE,
        {"b_id": claim_id, "response_status": response.status, "response_body": response.body},
    )


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
