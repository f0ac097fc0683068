"""Idempotency keys: a retried request acts once and gets the first response again.

The key is claimed inside the use case's own transaction, riding with its first
statement that carries riders (:mod:`giftcard.db.riders`: on PostgreSQL no round trip
of its own), and the response is written into the same row before that transaction
commits, so the effect and the record of it commit together or not at all. A request
that died with its server (kill -9, power loss) therefore leaves nothing behind: its
retry acts at once. A duplicate sent while the first is still running meets the first's
uncommitted row on the unique key (scope, key) and waits for it to commit — PostgreSQL's
unique index makes it wait, SQLite has one writer at a time. Writing the answer then
finds the row answered by another transaction, not claimed by this one: the duplicate's
transaction is rolled back, whatever it did, and the first's answer is given back.

A key is scoped to its caller; the request is remembered only as a keyed hash (the body
may hold a gift card code), and the stored answer is what the door chose to keep (never
a code). Which refusals are remembered is decided by the unit of work.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Text, bindparam, delete, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db import direct, riders
from giftcard.db.bulk import array_rows
from giftcard.db.engine import Database
from giftcard.db.tables import idempotency_keys
from giftcard.errors import ErrorCode, GiftcardError

# An Idempotency-Key's length, in characters, inclusive.
KEY_LENGTH_MIN = 1
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
    if (
        not KEY_LENGTH_MIN <= len(key) <= KEY_LENGTH_MAX
        or not key.isprintable()
        or not key.isascii()
    ):
        raise GiftcardError(
            ErrorCode.VALIDATION_ERROR,
            f"Idempotency-Key must be {KEY_LENGTH_MIN} to {KEY_LENGTH_MAX} printable ASCII "
            "characters.",
            param="Idempotency-Key",
        )


@dataclass(frozen=True)
class Claim:
    """A key claimed in a transaction, to be completed with its answer."""

    scope: str
    key: str
    fingerprint: bytes


# Built once (see giftcard.ledger), one for each dialect's name. The claim rides with
# another statement, so its parameters have names of their own (see giftcard.db.riders).
_CLAIMS = {
    dialect: insert(idempotency_keys)
    .values(
        scope=bindparam("b_claim_scope"),
        key=bindparam("b_claim_key"),
        fingerprint=bindparam("b_claim_fingerprint"),
        created_at=bindparam("b_claim_created_at", type_=idempotency_keys.c.created_at.type),
    )
    .on_conflict_do_nothing(index_elements=["scope", "key"])
    for dialect, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}
# Only a row this transaction claimed has no answer yet: a row is only ever committed
# with its answer.
_COMPLETE = (
    update(idempotency_keys)
    .where(
        idempotency_keys.c.scope == bindparam("b_done_scope"),
        idempotency_keys.c.key == bindparam("b_done_key"),
        idempotency_keys.c.response_status.is_(None),
    )
    .values(response_status=bindparam("b_done_status"), response_body=bindparam("b_done_body"))
    .returning(idempotency_keys.c.id)
)
_ANSWERED = select(
    idempotency_keys.c.fingerprint,
    idempotency_keys.c.response_status,
    idempotency_keys.c.response_body,
).where(
    idempotency_keys.c.scope == bindparam("b_scope"),
    idempotency_keys.c.key == bindparam("b_key"),
    idempotency_keys.c.response_status.is_not(None),
)


def claim(connection: AsyncConnection, keyed: KeyedRequest, *, now: datetime) -> Claim:
    """Claim the key in this transaction, with its next statement that carries riders
    (at the latest with :func:`complete`). A key another request holds makes that
    statement wait until the other's transaction ends."""
    statement = _CLAIMS[connection.dialect.name]
    riders.write_later(
        connection,
        statement,
        {
            "b_claim_scope": keyed.scope,
            "b_claim_key": keyed.key,
            "b_claim_fingerprint": keyed.fingerprint,
            "b_claim_created_at": now,
        },
    )
    return Claim(keyed.scope, keyed.key, keyed.fingerprint)


async def complete(connection: AsyncConnection, claimed: Claim, response: StoredResponse) -> None:
    """Write the answer into the claimed row, before the transaction commits (the writes
    queued to ride along go with it), or raise :class:`Replayed` with the answer another
    request left under the key (or a refusal if that request was another): the caller's
    transaction must then be rolled back."""
    if riders.is_queued(connection, _CLAIMS[connection.dialect.name]):
        # The row to complete must be written before the statement that completes it.
        await riders.flush(connection)
    done = (
        await riders.execute(
            connection,
            _COMPLETE,
            {
                "b_done_scope": claimed.scope,
                "b_done_key": claimed.key,
                "b_done_status": response.status,
                "b_done_body": response.body,
            },
        )
    ).scalar_one_or_none()
    if done is None:
        await _answer_of(connection, claimed)
        # The answered row met was purged since (keys are kept a day): nothing was done.
        raise GiftcardError(
            ErrorCode.SERVICE_UNAVAILABLE,
            "This Idempotency-Key was being forgotten as this request came; nothing was "
            "done. Please retry.",
        )


# Many keys at once (PostgreSQL), in a fixed order so that two batches claiming some of
# the same keys wait for each other instead of deadlocking.
_CLAIM_MANY = text(
    "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) "
    "SELECT claim.scope, claim.key, claim.fingerprint, :created_at "
    "FROM unnest(CAST(:scopes AS text[]), CAST(:keys AS text[]), "
    "CAST(:fingerprints AS bytea[])) AS claim(scope, key, fingerprint) "
    "ORDER BY claim.scope, claim.key "
    "ON CONFLICT (scope, key) DO NOTHING RETURNING scope, key"
).bindparams(bindparam("created_at", type_=idempotency_keys.c.created_at.type))
# The answers of many claimed keys, and the claims of requests left unanswered taken
# back (they run again by themselves, and claim their keys again).
_ANSWERS = array_rows(
    scope=("b_done_scopes", Text()),
    key=("b_done_keys", Text()),
    status=("b_done_statuses", Integer()),
    body=("b_done_bodies", Text()),
)
_COMPLETE_MANY = (
    update(idempotency_keys)
    .where(
        idempotency_keys.c.scope == _ANSWERS.c.scope,
        idempotency_keys.c.key == _ANSWERS.c.key,
        idempotency_keys.c.response_status.is_(None),
    )
    .values(response_status=_ANSWERS.c.status, response_body=_ANSWERS.c.body)
    .returning(idempotency_keys.c.id)
)
_DROPPED = array_rows(scope=("b_drop_scopes", Text()), key=("b_drop_keys", Text()))
_DROP_MANY = delete(idempotency_keys).where(
    tuple_(idempotency_keys.c.scope, idempotency_keys.c.key).in_(
        select(_DROPPED.c.scope, _DROPPED.c.key)
    ),
    idempotency_keys.c.response_status.is_(None),
)


async def claim_many(
    connection: AsyncConnection, keyed: Sequence[KeyedRequest | None], *, now: datetime
) -> list[Claim | None]:
    """:func:`claim` for many keys (each once) in one statement, sent now (PostgreSQL):
    for each, its claim, or None where the key is another request's (or there is none)."""
    requests = [request for request in keyed if request is not None]
    claimed: set[tuple[str, str]] = set()
    if requests:
        rows = await direct.execute(
            connection,
            _CLAIM_MANY,
            {
                "scopes": [request.scope for request in requests],
                "keys": [request.key for request in requests],
                "fingerprints": [request.fingerprint for request in requests],
                "created_at": now,
            },
        )
        claimed = {(row.scope, row.key) for row in rows}
    return [
        Claim(request.scope, request.key, request.fingerprint)
        if request is not None and (request.scope, request.key) in claimed
        else None
        for request in keyed
    ]


async def complete_many(
    connection: AsyncConnection,
    answers: Sequence[tuple[Claim, StoredResponse]],
    dropped: Sequence[Claim] = (),
) -> None:
    """:func:`complete` for many keys claimed by :func:`claim_many` (with the writes
    queued to ride along), and the claims of `dropped` taken back."""
    if dropped:
        riders.write_later(
            connection,
            _DROP_MANY,
            {
                "b_drop_scopes": [claimed.scope for claimed in dropped],
                "b_drop_keys": [claimed.key for claimed in dropped],
            },
        )
    done = await riders.execute(
        connection,
        _COMPLETE_MANY,
        {
            "b_done_scopes": [claimed.scope for claimed, _ in answers],
            "b_done_keys": [claimed.key for claimed, _ in answers],
            "b_done_statuses": [response.status for _, response in answers],
            "b_done_bodies": [response.body for _, response in answers],
        },
    )
    if len(done.all()) != len(answers):
        raise RuntimeError("a key claimed in this transaction was not there to answer")


async def replay_if_answered(db: Database, keyed: KeyedRequest) -> None:
    """Raise :class:`Replayed` (or the refusal of a key reused) if the key has an answer
    committed: for a request that failed after another with its key was answered."""
    async with db.reading() as connection:
        await _answer_of(connection, Claim(keyed.scope, keyed.key, keyed.fingerprint))


async def _answer_of(connection: AsyncConnection, claimed: Claim) -> None:
    """Raise what a request under `claimed`'s key is answered if the key has an answer;
    return if it has none."""
    row = (
        await connection.execute(_ANSWERED, {"b_scope": claimed.scope, "b_key": claimed.key})
    ).one_or_none()
    if row is None:
        return
    if not hmac.compare_digest(row.fingerprint, claimed.fingerprint):
        raise GiftcardError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This Idempotency-Key was already used with a different request.",
        )
    raise Replayed(StoredResponse(row.response_status, row.response_body))


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
