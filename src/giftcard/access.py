"""Who may call the service besides shoppers, as an operator manages them from the
command line: API keys (listed, revoked) and staff members (listed, disabled).

Each change made with an `audit_actor` (the command line's :data:`giftcard.audit.OPERATOR`)
is recorded in the audit log in the same transaction.

Revoking a key or disabling a staff member takes effect at the next request: every
request authenticates against the database (giftcard.customers.authenticate), which
refuses a revoked key and a disabled staff member's sessions. Disabling also ends those
sessions outright, so that a later re-enabling does not bring them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, ids
from giftcard.clock import Clock
from giftcard.customers import Role, normalize_email
from giftcard.db.engine import Database
from giftcard.db.tables import api_keys, sessions, staff
from giftcard.errors import ErrorCode, GiftcardError


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as an operator sees it: never the secret, only its first characters."""

    id: int
    name: str | None
    role: Role
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class StaffInfo:
    id: int
    email: str
    name: str | None
    role: Role
    created_at: datetime
    disabled_at: datetime | None


def _key_from_row(row: Row[Any]) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _staff_from_row(row: Row[Any]) -> StaffInfo:
    return StaffInfo(
        id=row.id,
        email=row.email,
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        disabled_at=row.disabled_at,
    )


async def list_api_keys(db: Database) -> list[ApiKeyInfo]:
    async with db.transaction(write=False) as connection:
        rows = (await connection.execute(select(api_keys).order_by(api_keys.c.id))).all()
    return [_key_from_row(row) for row in rows]


async def revoke_api_key(
    db: Database, key_id: int, *, clock: Clock, audit_actor: audit.Actor | None = None
) -> ApiKeyInfo:
    """Revoke the key: its next request is refused. A key revoked already, or unknown,
    is refused with what is true of it. With `audit_actor`, the revocation is recorded
    in the audit log."""
    now = clock.now()

    async def work(connection: AsyncConnection) -> ApiKeyInfo:
        revoked = (
            await connection.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(*api_keys.c)
            )
        ).one_or_none()
        if revoked is not None:
            if audit_actor is not None:
                await audit.record(
                    connection,
                    audit_actor,
                    audit.Action(
                        "api_key.revoke",
                        target=f"api_key:{key_id}",
                        detail={"role": revoked.role, "name": revoked.name},
                    ),
                    now=now,
                )
            return _key_from_row(revoked)
        found = (
            await connection.execute(select(api_keys).where(api_keys.c.id == key_id))
        ).one_or_none()
        if found is None:
            raise GiftcardError(ErrorCode.NOT_FOUND, f"No API key {key_id}.", param="key_id")
        raise GiftcardError(
            ErrorCode.INVALID_STATE,
            f"API key {key_id} was revoked already, at {found.revoked_at:%Y-%m-%d %H:%M} UTC.",
            param="key_id",
        )

    return await db.run(work)


async def list_staff(db: Database) -> list[StaffInfo]:
    async with db.transaction(write=False) as connection:
        rows = (await connection.execute(select(staff).order_by(staff.c.id))).all()
    return [_staff_from_row(row) for row in rows]


async def disable_staff(
    db: Database, email: str, *, clock: Clock, audit_actor: audit.Actor | None = None
) -> tuple[StaffInfo, int]:
    """Disable the staff member with `email` and end every session they have: the
    member and how many sessions ended. With `audit_actor`, it is recorded in the audit
    log."""
    address = normalize_email(email)
    now = clock.now()

    async def work(connection: AsyncConnection) -> tuple[StaffInfo, int]:
        disabled = (
            await connection.execute(
                update(staff)
                .where(staff.c.email == address, staff.c.disabled_at.is_(None))
                .values(disabled_at=now)
                .returning(*staff.c)
            )
        ).one_or_none()
        if disabled is None:
            found = (
                await connection.execute(select(staff).where(staff.c.email == address))
            ).one_or_none()
            if found is None:
                raise GiftcardError(
                    ErrorCode.NOT_FOUND, f"No staff member has the email {address}.", param="email"
                )
            raise GiftcardError(
                ErrorCode.INVALID_STATE,
                f"{address} was disabled already, at {found.disabled_at:%Y-%m-%d %H:%M} UTC.",
                param="email",
            )
        ended = await connection.execute(
            update(sessions)
            .where(sessions.c.staff_id == disabled.id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if audit_actor is not None:
            await audit.record(
                connection,
                audit_actor,
                audit.Action(
                    "staff.disable",
                    target=ids.format_id(ids.STAFF, disabled.id),
                    detail={"role": disabled.role, "sessions_ended": int(ended.rowcount)},
                ),
                now=now,
            )
        return _staff_from_row(disabled), int(ended.rowcount)

    return await db.run(work)
