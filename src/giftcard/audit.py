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

Reading: :func:`page` lists entries newest first, filtered (:class:`Filters`, built from
what a caller typed by :func:`parse_filters`), and :func:`start_export` with
:func:`export_csv` write them oldest first as CSV, every field and both hashes, so that
the chain can be checked again from the file alone.

Reading pages is not itself recorded, exporting is. A page shows, to staff who may read
the log anyway, only what the log holds already (who did what, to which id; never a
code or a customer's details), and recording each page read would push an entry above
the very entries being read with every look, burying the actions the log is for. An
export is different: it takes a copy of the whole trail out of the service, so who
took which part of it, and how many entries, is itself worth an entry.

What is recorded besides support's own actions: cards issued (`card.issue`, one entry
per request or command however many cards it makes) and physical cards activated
(`card.activate`) by API keys, admin staff or the `giftcard cards issue` command;
e-gifts bought through the API (`gift.create`, the recipient's address masked); and
access managed from the command line (`api_key.create`, `api_key.revoke`,
`staff.create`, `staff.disable`, `staff.password`). An operator at the command line is
:data:`OPERATOR`.

What is not: payments, captures, voids, refunds and redemptions. Each of those is a
journal transaction that names its actor already, and they are the checkout's hot path:
one shared chain head would put every checkout in the store in one line behind it. Nor
are reads by the store's own keys of the cards, payments and gifts they made: the store
reading back what it made reveals nothing it did not have.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from giftcard import codes, ids
from giftcard.db.engine import Database
from giftcard.db.tables import audit_chain, audit_log
from giftcard.errors import GiftcardError, validation_error
from giftcard.unit_of_work import UnitOfWork

T = TypeVar("T")

GENESIS_HASH = "0" * 64
NOTE_LENGTH_MAX = 2000
REASON_LENGTH_MAX = 500
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


# How the log names an operator at the command line: whoever runs the command holds the
# database's address, so they may do and read everything.
OPERATOR = Actor("cli", "operator")


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


# The fields the hash covers, in the order it covers them (see entry_hash).
HASHED_FIELDS = (
    "id",
    "created_at",
    "actor",
    "actor_role",
    "action",
    "target",
    "reason",
    "note",
    "outcome",
    "detail",
    "request_id",
    "prev_hash",
)


def _row_hash(row: Row[Any]) -> str:
    return entry_hash(**{name: getattr(row, name) for name in HASHED_FIELDS})


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
        "reason": None if action.reason is None else action.reason[:REASON_LENGTH_MAX],
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


# -- reading -----------------------------------------------------------------------------

PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
# Rows read per query while exporting: the export streams, never holding the whole log.
EXPORT_CHUNK = 1000
FILTER_LENGTH_MAX = 200
_ACTOR_ID = re.compile(r"staff:([0-9]{1,18})|api_key:([0-9]{1,18})", re.ASCII)
# `card.freeze`, or a prefix ending in a dot: `card.` (every card action).
_ACTION = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*\.?", re.ASCII)
_OUTCOME = re.compile(r"[a-z_]{1,64}", re.ASCII)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    created_at: datetime
    actor: str
    actor_role: str
    action: str
    target: str | None
    reason: str | None
    note: str | None
    outcome: str
    # The canonical JSON the hash covers, as stored; :attr:`detail_object` reads it.
    detail: str | None
    request_id: str | None
    prev_hash: str
    hash: str

    @property
    def public_id(self) -> str:
        return ids.format_id(ids.AUDIT_ENTRY, self.id)

    @property
    def detail_object(self) -> dict[str, Any]:
        if not self.detail:
            return {}
        try:
            value = json.loads(self.detail)
        except ValueError:
            # Only an entry changed behind the log's back; `giftcard verify` names it.
            return {"unreadable": self.detail}
        return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


@dataclass(frozen=True)
class Filters:
    """Which entries to read; None matches everything. `action` ending in a dot is a
    prefix (`card.`); `since` is inclusive, `until` exclusive."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_detail(self) -> dict[str, str]:
        """The filters as the export's audit entry records them."""
        values = {
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "since": None if self.since is None else _timestamp(self.since),
            "until": None if self.until is None else _timestamp(self.until),
        }
        return {name: value for name, value in values.items() if value is not None}


def _blank(text: str | None, param: str) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if len(text) > FILTER_LENGTH_MAX:
        raise validation_error(f"{param} is at most {FILTER_LENGTH_MAX} characters long.", param)
    return text or None


def parse_actor(text: str) -> str:
    """A staff member's id (`stf_…`) or `staff:3` → `staff:3`; `api_key:2` (the key's
    number, as `giftcard keys list` shows it) stays itself."""
    staff_id = ids.read(ids.STAFF, text)
    if staff_id is not None:
        return f"staff:{staff_id}"
    found = _ACTOR_ID.fullmatch(text)
    if found is None:
        raise validation_error(
            "actor must be a staff member's id (stf_…, as the staff list shows it) or "
            "staff:3 as entries name them, or an API key like api_key:2 with the number "
            "`giftcard keys list` shows.",
            "actor",
        )
    staff_number, key_number = found.groups()
    return f"staff:{int(staff_number)}" if staff_number else f"api_key:{int(key_number)}"


def parse_target(text: str) -> str:
    """A target as entries name it. Something that reads as a gift card code is refused:
    codes are never put in the log (an export records its filters) nor in addresses."""
    try:
        codes.normalize_code(text)
    except GiftcardError:
        return text
    raise validation_error(
        "This looks like a gift card code, which the log never holds: look the code up "
        "first, then filter by the card's id (card_…).",
        "target",
    )


def parse_moment(text: str, param: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 moment in any zone (UTC when it names none), or a date: the start of
    that day in UTC, or with `end_of_day` the start of the next (so that `until` a date
    takes that whole day in)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(0, 0), tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise validation_error(
            f"{param} must be a date like 2026-12-01 or a moment like 2026-12-01T14:30:00Z "
            "(ISO 8601, any zone; UTC when none is given).",
            param,
        ) from None


def parse_filters(
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Filters:
    """Filters from what a caller typed: blanks are no filter; a bad one is a 422
    naming its parameter."""
    actor, action, target = (
        _blank(actor, "actor"),
        _blank(action, "action"),
        _blank(target, "target"),
    )
    outcome, since, until = (
        _blank(outcome, "outcome"),
        _blank(since, "since"),
        _blank(until, "until"),
    )
    if action is not None and (len(action) > 64 or not _ACTION.fullmatch(action)):
        raise validation_error(
            "action must be an action like card.freeze, or the start of one ending in a "
            "dot, like card. for every card action.",
            "action",
        )
    if outcome is not None and not _OUTCOME.fullmatch(outcome):
        raise validation_error(
            "outcome must be ok or an error code like code_not_found.", "outcome"
        )
    filters = Filters(
        actor=None if actor is None else parse_actor(actor),
        action=action,
        target=None if target is None else parse_target(target),
        outcome=outcome,
        since=None if since is None else parse_moment(since, "since"),
        until=None if until is None else parse_moment(until, "until", end_of_day=True),
    )
    if filters.since and filters.until and filters.since >= filters.until:
        raise validation_error("until must come after since.", "until")
    return filters


def _conditions(filters: Filters) -> list[ColumnElement[bool]]:
    column = audit_log.c
    conditions: list[ColumnElement[bool]] = []
    if filters.actor is not None:
        conditions.append(column.actor == filters.actor)
    if filters.action is not None:
        if filters.action.endswith("."):
            # The pattern holds only letters, digits, "_" and ".": "_" is escaped, "." is literal.
            pattern = filters.action.replace("_", "\\_") + "%"
            conditions.append(column.action.like(pattern, escape="\\"))
        else:
            conditions.append(column.action == filters.action)
    if filters.target is not None:
        # Entries recorded before ids were enciphered name rows as `card_12`: either
        # spelling finds both.
        conditions.append(column.target.in_(ids.spellings(filters.target)))
    if filters.outcome is not None:
        conditions.append(column.outcome == filters.outcome)
    if filters.since is not None:
        conditions.append(column.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(column.created_at < filters.until)
    return conditions


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=int(row.id),
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
        hash=row.hash,
    )


async def page(
    db: Database,
    *,
    filters: Filters,
    limit: int = PAGE_SIZE_DEFAULT,
    starting_after: int | None = None,
) -> Page[AuditEntry]:
    """One page of entries matching `filters`, newest first, after the entry numbered
    `starting_after` (the last of the page before)."""
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise validation_error(f"limit must be from 1 to {PAGE_SIZE_MAX}.", "limit")
    conditions = _conditions(filters)
    if starting_after is not None:
        conditions.append(audit_log.c.id < starting_after)
    query = select(audit_log).where(*conditions).order_by(audit_log.c.id.desc()).limit(limit + 1)
    async with db.transaction(write=False) as connection:
        rows = (await connection.execute(query)).all()
    return Page([_entry(row) for row in rows[:limit]], has_more=len(rows) > limit)


# -- export ------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "id",
    "created_at",
    "actor",
    "actor_role",
    "action",
    "target",
    "reason",
    "note",
    "outcome",
    "detail",
    "request_id",
    "prev_hash",
    "hash",
)
# A spreadsheet reads a cell starting with one of these as a formula; such a cell is
# written with a leading apostrophe, and so is one starting with an apostrophe, so that
# :func:`unescape_cell` gives every value back exactly (the hashes are over the values).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


@dataclass(frozen=True)
class Export:
    """An export begun: the entries matching `filters` up to entry `last_id` (the log's
    end when it began), `rows` of them, and the audit entry that records it."""

    filters: Filters
    last_id: int
    rows: int
    entry_id: int
    started_at: datetime

    @property
    def filename(self) -> str:
        return f"giftcard-audit-log-{self.started_at:%Y%m%dT%H%M%SZ}.csv"


async def start_export(uow: UnitOfWork, actor: Actor, filters: Filters) -> Export:
    """Fix what an export holds and record it (`audit_log.export`), in one transaction;
    :func:`export_csv` then writes those entries. The export's own entry comes after the
    log's end it names, so it is not in the file; the next export has it."""
    now = uow.clock.now()

    async def work(connection: AsyncConnection) -> Export:
        last_id = int(
            (
                await connection.execute(select(audit_chain.c.last_id).where(audit_chain.c.id == 1))
            ).scalar_one()
        )
        rows = int(
            (
                await connection.execute(
                    select(func.count())
                    .select_from(audit_log)
                    .where(*_conditions(filters), audit_log.c.id <= last_id)
                )
            ).scalar_one()
        )
        entry_id = await record(
            connection,
            actor,
            Action(
                "audit_log.export",
                detail={"filters": filters.as_detail(), "rows": rows, "last_id": last_id},
            ),
            now=now,
        )
        return Export(filters, last_id, rows, entry_id, now)

    return await uow.run(work)


def escape_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def unescape_cell(value: str) -> str:
    """A cell of the export as the entry holds it (the reverse of :func:`escape_cell`)."""
    return value[1:] if value.startswith("'") else value


def export_row(entry: AuditEntry) -> list[str]:
    """The entry as the export's cells: the stored values, `created_at` as the hash reads
    it, the id as `aud_N`."""
    values = [
        entry.public_id,
        _timestamp(entry.created_at),
        entry.actor,
        entry.actor_role,
        entry.action,
        entry.target,
        entry.reason,
        entry.note,
        entry.outcome,
        entry.detail,
        entry.request_id,
        entry.prev_hash,
        entry.hash,
    ]
    return [escape_cell(value or "") for value in values]


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


async def export_csv(db: Database, export: Export) -> AsyncIterator[str]:
    """The export's CSV text, a header line then each entry oldest first, a chunk of
    entries at a time (each read in a short transaction of its own: entries are never
    changed, so the chunks add up to what the export counted)."""
    yield _csv_text([EXPORT_COLUMNS])
    after = 0
    conditions = [*_conditions(export.filters), audit_log.c.id <= export.last_id]
    while True:
        async with db.transaction(write=False) as connection:
            rows = (
                await connection.execute(
                    select(audit_log)
                    .where(*conditions, audit_log.c.id > after)
                    .order_by(audit_log.c.id)
                    .limit(EXPORT_CHUNK)
                )
            ).all()
        if rows:
            yield _csv_text([export_row(_entry(row)) for row in rows])
        if len(rows) < EXPORT_CHUNK:
            return
        after = int(rows[-1].id)
