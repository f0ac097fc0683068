"""The audit log: every staff and API-key action that changes or reveals something.

Each entry is written in the same transaction as the action it records, so an action
and its entry exist together or not at all; a refusal worth recording (a look-up that
found no card) is recorded in a transaction of its own.

The log is append-only and tamper-evident: entries are numbered 1, 2, 3, … and each
holds `prev_hash`, the hash of the entry before it, and `hash`, SHA-256 over a canonical
encoding of its own fields and `prev_hash` (:func:`entry_hash`). Appending goes through
the one row of `audit_chain` (its last number and hash), whose row lock puts concurrent
appends one after another. Editing an entry changes its hash; removing one leaves a
gap; rewriting the rest of the chain after an edit still disagrees with the head.
:func:`verify_chain` walks the log and names the first broken link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db.tables import audit_chain, audit_log

GENESIS_HASH = "0" * 64
NOTE_LENGTH_MAX = 2000
TARGET_LENGTH_MAX = 200
# Rows read at a time while checking the chain.
VERIFY_CHUNK = 5000


@dataclass(frozen=True)
class Actor:
    """Who acts, as the log names them: `staff:3` or `api_key:2`, with their role and
    the request that carried the action."""

    actor: str
    role: str
    request_id: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.actor.startswith("staff:")


@dataclass(frozen=True)
class Action:
    """What was done: `action` like `card.freeze`, `target` the public id acted on (or a
    search's words), `outcome` `ok` or the error code it was refused with. `detail`
    holds more (amounts, states); never a code, a password or a token."""

    action: str
    target: str | None = None
    reason: str | None = None
    note: str | None = None
    outcome: str = "ok"
    detail: Mapping[str, Any] | None = None


def canonical_detail(detail: Mapping[str, Any] | None) -> str | None:
    if not detail:
        return None
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    *,
    id: int,
    created_at: datetime,
    actor: str,
    actor_role: str,
    action: str,
    target: str | None,
    reason: str | None,
    note: str | None,
    outcome: str,
    detail: str | None,
    request_id: str | None,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) over the entry's fields in a fixed order, as a compact JSON array."""
    fields = [
        id,
        _timestamp(created_at),
        actor,
        actor_role,
        action,
        target,
        reason,
        note,
        outcome,
        detail,
        request_id,
        prev_hash,
    ]
    encoded = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


def _row_hash(row: Row[Any]) -> str:
    return entry_hash(
        id=row.id,
        created_at=row.created_at,
        actor=row.actor,
        actor_role=row.actor_role,
        action=row.action,
        target=row.target,
        reason=row.reason,
        note=row.note,
        outcome=row.outcome,
        detail=row.detail,
        request_id=row.request_id,
        prev_hash=row.prev_hash,
    )


async def record(
    connection: AsyncConnection, actor: Actor, action: Action, *, now: datetime
) -> int:
    """Append one entry in the caller's transaction; its number."""
    # Taking the head's row lock first puts concurrent appends in one line (SQLite's
    # writers are one at a time anyway); the number comes from the head, so the log
    # has no gaps of its own.
    head = (
        await connection.execute(
            update(audit_chain)
            .where(audit_chain.c.id == 1)
            .values(last_id=audit_chain.c.last_id + 1)
            .returning(audit_chain.c.last_id, audit_chain.c.last_hash)
        )
    ).one()
    entry_id = int(head.last_id)
    values: dict[str, Any] = {
        "id": entry_id,
        # Microseconds, what both databases keep: the hash is over what is stored.
        "created_at": now.astimezone(UTC),
        "actor": actor.actor,
        "actor_role": actor.role,
        "action": action.action,
        "target": None if action.target is None else action.target[:TARGET_LENGTH_MAX],
        "reason": action.reason,
        "note": None if action.note is None else action.note[:NOTE_LENGTH_MAX],
        "outcome": action.outcome,
        "detail": canonical_detail(action.detail),
        "request_id": actor.request_id,
        "prev_hash": head.last_hash,
    }
    values["hash"] = entry_hash(**values)
    await connection.execute(insert(audit_log).values(**values))
    await connection.execute(
        update(audit_chain).where(audit_chain.c.id == 1).values(last_hash=values["hash"])
    )
    return entry_id


@dataclass(frozen=True)
class ChainCheck:
    entries: int
    # The first broken link, in a sentence; None when the chain holds.
    problem: str | None


async def verify_chain(connection: AsyncConnection) -> ChainCheck:
    """Walk the log in order and name the first entry that does not hold."""
    expected_id = 1
    prev_hash = GENESIS_HASH
    after = 0
    while True:
        rows = (
            await connection.execute(
                select(audit_log)
                .where(audit_log.c.id > after)
                .order_by(audit_log.c.id)
                .limit(VERIFY_CHUNK)
            )
        ).all()
        for row in rows:
            if row.id != expected_id:
                return ChainCheck(
                    expected_id - 1,
                    f"audit entry {expected_id} is missing: the log goes from entry "
                    f"{expected_id - 1} to entry {row.id}",
                )
            if row.prev_hash != prev_hash:
                return ChainCheck(
                    expected_id - 1,
                    f"audit entry {row.id} does not chain to entry {row.id - 1}: its "
                    "prev_hash is not that entry's hash",
                )
            if _row_hash(row) != row.hash:
                return ChainCheck(
                    expected_id - 1,
                    f"audit entry {row.id} was changed after it was written: its fields no "
                    "longer hash to its hash",
                )
            prev_hash = row.hash
            expected_id += 1
        if len(rows) < VERIFY_CHUNK:
            break
        after = rows[-1].id
    count = expected_id - 1
    head = (await connection.execute(select(audit_chain).where(audit_chain.c.id == 1))).one()
    if head.last_id != count or head.last_hash != prev_hash:
        return ChainCheck(
            count,
            f"the audit log ends at entry {count} but its head names entry {head.last_id}: "
            "entries were removed from the end, or the head was changed",
        )
    return ChainCheck(count, None)
