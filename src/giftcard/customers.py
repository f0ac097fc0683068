"""Accounts and who is calling: customers, staff, sessions, API keys, roles.

Secrets handed out here (session tokens, API keys) are random, shown once, and stored
only as SHA-256 hashes; they carry 256 random bits, so no key stretching is needed.
The prefix of a secret tells which table to look in: `gcs_` a session, `gck_` an API key.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, LargeBinary, Row, any_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, ids, ledger
from giftcard.clock import Clock
from giftcard.db import batches, direct
from giftcard.db.engine import Database, is_unique_violation
from giftcard.db.tables import api_keys, customers, identities, password_resets, sessions, staff
from giftcard.errors import ErrorCode, GiftcardError, validation_error
from giftcard.limits import AbuseLimits
from giftcard.mail.outbox import MessageKind, enqueue
from giftcard.money import region as find_region
from giftcard.passwords import (
    PASSWORD_LENGTH_MAX,
    PASSWORD_LENGTH_MIN,
    hash_password,
    verify_password,
)
from giftcard.unit_of_work import UnitOfWork

SESSION_PREFIX = "gcs_"
API_KEY_PREFIX = "gck_"
SECRET_LENGTH_MAX = 128
NAME_LENGTH_MAX = 200
EMAIL_LENGTH_MAX = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Role(enum.StrEnum):
    ADMIN = "admin"
    MERCHANT = "merchant"
    SUPPORT = "support"


class RefundPreference(enum.StrEnum):
    GIFT_CARD_BALANCE = "gift_card_balance"
    ORIGINAL_PAYMENT_METHOD = "original_payment_method"


@dataclass(frozen=True)
class Customer:
    id: int
    email: str
    name: str | None
    region: str
    currency: str
    refund_preference: RefundPreference
    available_account_id: int
    held_account_id: int
    created_at: datetime


@dataclass(frozen=True)
class CustomerPrincipal:
    customer: Customer
    session_id: int

    @property
    def actor(self) -> str:
        return f"customer:{self.customer.id}"


@dataclass(frozen=True)
class StaffPrincipal:
    staff_id: int
    email: str
    role: Role
    session_id: int

    @property
    def actor(self) -> str:
        return f"staff:{self.staff_id}"


@dataclass(frozen=True)
class ApiKeyPrincipal:
    key_id: int
    role: Role
    name: str | None

    @property
    def actor(self) -> str:
        return f"api_key:{self.key_id}"


Principal = CustomerPrincipal | StaffPrincipal | ApiKeyPrincipal


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: datetime
    customer: Customer | None
    staff: StaffPrincipal | None
    # The session's row, to end it (`log_out`) without looking its token up again.
    session_id: int


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    # Control and invisible formatting characters (NUL, bidi overrides, BOM) are never
    # part of a real address, and PostgreSQL cannot even store NUL: refuse them here,
    # before any query, rather than fail in the database.
    if len(email) > EMAIL_LENGTH_MAX or not email.isprintable() or not _EMAIL.match(email):
        raise validation_error("Enter a valid email address.", "email")
    return email


def check_password(password: str, *, param: str = "password") -> None:
    if not PASSWORD_LENGTH_MIN <= len(password) <= PASSWORD_LENGTH_MAX:
        raise validation_error(
            f"The password must be {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} characters.",
            param,
        )


def check_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if len(name) > NAME_LENGTH_MAX or any(ord(ch) < 32 for ch in name):
        raise validation_error(
            f"The name must be at most {NAME_LENGTH_MAX} printable characters.", "name"
        )
    return name or None


@dataclass(frozen=True)
class Identity:
    """Who an email belongs to (SPEC §1): one customer or one staff member, never both."""

    email: str
    customer_id: int | None
    staff_id: int | None


async def identity_of(connection: AsyncConnection, email: str) -> Identity | None:
    """Who a normalized email is, or None if nobody has it: the one place that decides,
    asked by log-in, sign-up and staff creation alike."""
    row = (
        await connection.execute(select(identities).where(identities.c.email == email))
    ).one_or_none()
    return None if row is None else Identity(row.email, row.customer_id, row.staff_id)


async def _claim_identity(
    connection: AsyncConnection,
    email: str,
    *,
    customer_id: int | None = None,
    staff_id: int | None = None,
) -> None:
    """Make a normalized email this person's. Checking `identity_of` first is only the
    fast, friendly path: the table's primary key refuses a second owner, also one being
    created at this very moment in another transaction (a unique violation, which the
    caller turns into `email_taken`)."""
    await connection.execute(
        insert(identities).values(email=email, customer_id=customer_id, staff_id=staff_id)
    )


def customer_from_row(row: Row[Any]) -> Customer:
    return Customer(
        id=row.id,
        email=row.email,
        name=row.name,
        region=row.region,
        currency=row.currency,
        refund_preference=RefundPreference(row.refund_preference),
        available_account_id=row.available_account_id,
        held_account_id=row.held_account_id,
        created_at=row.created_at,
    )


async def sign_up(
    db: Database, *, email: str, password: str, region: str, name: str | None, clock: Clock
) -> Customer:
    email = normalize_email(email)
    check_password(password)
    name = check_name(name)
    store = find_region(region)
    # Hash before looking at the database, so a taken email costs the same time.
    password_hash = await hash_password(password)
    now = clock.now()

    async def work(connection: AsyncConnection) -> Customer:
        # A staff member's address is taken too, and refused with the same words as a
        # customer's: sign-up is public and need not tell who has it.
        if await identity_of(connection, email) is not None:
            raise _email_taken()
        available = await ledger.open_account(
            connection, ledger.AccountKind.CUSTOMER_AVAILABLE, store.currency, now=now
        )
        held = await ledger.open_account(
            connection, ledger.AccountKind.CUSTOMER_HELD, store.currency, now=now
        )
        row = (
            await connection.execute(
                insert(customers)
                .values(
                    email=email,
                    name=name,
                    password_hash=password_hash,
                    region=store.code,
                    currency=store.currency,
                    refund_preference=RefundPreference.ORIGINAL_PAYMENT_METHOD.value,
                    available_account_id=available,
                    held_account_id=held,
                    created_at=now,
                )
                .returning(*customers.c)
            )
        ).one()
        await _claim_identity(connection, email, customer_id=row.id)
        return customer_from_row(row)

    try:
        return await db.run(work)
    except IntegrityError as error:
        if is_unique_violation(error):
            raise _email_taken() from None
        raise


def _email_taken() -> GiftcardError:
    return GiftcardError(
        ErrorCode.EMAIL_TAKEN,
        "An account with this email already exists. Log in instead.",
        param="email",
    )


async def log_in(db: Database, *, email: str, password: str, ttl_s: int, clock: Clock) -> Session:
    """A new session for whoever owns this email (`identity_of`: one customer or one
    staff member, never both) if the password is theirs."""
    try:
        email = normalize_email(email)
    except GiftcardError:
        raise _invalid_credentials() from None
    if len(password) > PASSWORD_LENGTH_MAX:
        raise _invalid_credentials()
    customer_row = staff_row = None
    async with db.transaction(write=False) as connection:
        found = await identity_of(connection, email)
        if found is not None and found.customer_id is not None:
            customer_row = (
                await connection.execute(
                    select(customers).where(customers.c.id == found.customer_id)
                )
            ).one()
        elif found is not None and found.staff_id is not None:
            staff_row = (
                await connection.execute(
                    select(staff).where(staff.c.id == found.staff_id, staff.c.disabled_at.is_(None))
                )
            ).one_or_none()
    row = customer_row or staff_row
    if not await verify_password(row.password_hash if row is not None else None, password):
        raise _invalid_credentials()
    assert row is not None
    customer_id = customer_row.id if customer_row is not None else None
    staff_id = staff_row.id if staff_row is not None else None
    token, expires_at, session_id = await _open_session(
        db, customer_id=customer_id, staff_id=staff_id, ttl_s=ttl_s, clock=clock
    )
    if customer_row is not None:
        return Session(token, expires_at, customer_from_row(customer_row), None, session_id)
    assert staff_row is not None
    return Session(
        token,
        expires_at,
        None,
        StaffPrincipal(staff_row.id, staff_row.email, Role(staff_row.role), session_id),
        session_id,
    )


async def open_customer_session(
    db: Database, customer: Customer, *, ttl_s: int, clock: Clock
) -> Session:
    """A new session for a customer who has just proved who they are (by signing up),
    without checking the password a second time."""
    token, expires_at, session_id = await _open_session(
        db, customer_id=customer.id, staff_id=None, ttl_s=ttl_s, clock=clock
    )
    return Session(token, expires_at, customer, None, session_id)


async def _open_session(
    db: Database, *, customer_id: int | None, staff_id: int | None, ttl_s: int, clock: Clock
) -> tuple[str, datetime, int]:
    """Store a new session's hash; its token (shown once), expiry and id."""
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    now = clock.now()
    expires_at = now + timedelta(seconds=ttl_s)

    async def work(connection: AsyncConnection) -> int:
        return int(
            (
                await connection.execute(
                    insert(sessions)
                    .values(
                        token_hash=secret_hash(token),
                        customer_id=customer_id,
                        staff_id=staff_id,
                        expires_at=expires_at,
                        created_at=now,
                    )
                    .returning(sessions.c.id)
                )
            ).scalar_one()
        )

    return token, expires_at, await db.run(work)


async def log_in_limited(
    db: Database,
    limits: AbuseLimits,
    *,
    email: str,
    password: str,
    address: str,
    ttl_s: int,
    clock: Clock,
) -> Session:
    """:func:`log_in` under the failed log-in limits of SPEC §8: per email from one
    address, and per address. Only wrong credentials count."""
    async with limits.login_attempt(email.strip().lower(), address):
        return await log_in(db, email=email, password=password, ttl_s=ttl_s, clock=clock)


def _invalid_credentials() -> GiftcardError:
    return GiftcardError(ErrorCode.INVALID_CREDENTIALS, "The email or password is wrong.")


async def log_out(db: Database, session_id: int, *, clock: Clock) -> None:
    now = clock.now()

    async def work(connection: AsyncConnection) -> None:
        await connection.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    await db.run(work)


# What every request asks first, built once (see giftcard.ledger): who holds each of the
# secrets a batch of requests brought (see _SESSIONS_HELD), one statement for them all.
def _held_by_any(column: Any, name: str, *, sqlite: bool) -> Any:
    if sqlite:
        return column.in_(bindparam(name, expanding=True))
    return column == any_(bindparam(name, type_=ARRAY(LargeBinary)))


_SESSIONS = {
    sqlite: select(
        sessions.c.token_hash, sessions.c.id.label("session_id"), sessions.c.staff_id, customers
    )
    .select_from(sessions.outerjoin(customers, customers.c.id == sessions.c.customer_id))
    .where(
        _held_by_any(sessions.c.token_hash, "b_token_hashes", sqlite=sqlite),
        sessions.c.revoked_at.is_(None),
        sessions.c.expires_at > bindparam("b_now"),
    )
    for sqlite in (False, True)
}
_API_KEYS = {
    sqlite: select(api_keys).where(
        _held_by_any(api_keys.c.key_hash, "b_key_hashes", sqlite=sqlite),
        api_keys.c.revoked_at.is_(None),
    )
    for sqlite in (False, True)
}


async def _sessions_of(
    db: Database, held: Sequence[tuple[bytes, datetime]]
) -> list[Row[Any] | None]:
    """The live session (with its customer) of each token hash, or None; sessions that
    ended before the latest moment of the batch are ended for all of it."""
    digests = [digest for digest, _ in held]
    parameters = {"b_token_hashes": digests, "b_now": max(now for _, now in held)}
    return await _rows_by_hash(db, _SESSIONS[db.is_sqlite], "token_hash", digests, parameters)


async def _api_keys_of(db: Database, digests: Sequence[bytes]) -> list[Row[Any] | None]:
    """The unrevoked API key of each hash, or None."""
    parameters = {"b_key_hashes": list(digests)}
    return await _rows_by_hash(db, _API_KEYS[db.is_sqlite], "key_hash", digests, parameters)


async def _rows_by_hash(
    db: Database,
    statement: Any,
    hash_column: str,
    digests: Sequence[bytes],
    parameters: dict[str, Any],
) -> list[Row[Any] | None]:
    """For each of `digests` in turn, the row of `statement` whose `hash_column` is it,
    or None: every request of a batch gets its own holder, never another's."""
    async with db.reading() as connection:
        rows = await direct.execute(connection, statement, parameters)
        by_hash = {bytes(row._mapping[hash_column]): row for row in rows}
    return [by_hash.get(digest) for digest in digests]


# The requests of a process that come to authenticate while a lookup runs are looked up
# together by the next one (see giftcard.db.batches).
_SESSIONS_HELD: batches.PerDatabase[tuple[bytes, datetime], Row[Any] | None] = batches.PerDatabase(
    _sessions_of
)
_API_KEYS_HELD: batches.PerDatabase[bytes, Row[Any] | None] = batches.PerDatabase(_api_keys_of)


async def authenticate(db: Database, secret: str, *, clock: Clock) -> Principal | None:
    """Who holds this bearer secret, or None if it is unknown, expired or revoked."""
    if not secret or len(secret) > SECRET_LENGTH_MAX:
        return None
    digest = secret_hash(secret)
    if secret.startswith(API_KEY_PREFIX):
        key_row = await _API_KEYS_HELD.submit(db, digest)
        return (
            None
            if key_row is None
            else ApiKeyPrincipal(key_row.id, Role(key_row.role), key_row.name)
        )
    if not secret.startswith(SESSION_PREFIX):
        return None
    row = await _SESSIONS_HELD.submit(db, (digest, clock.now()))
    if row is None:
        return None
    if row.staff_id is None:
        return CustomerPrincipal(customer_from_row(row), row.session_id)
    # The staff row is read after its session, each as committed when read: a session or
    # a staff member ended between the two reads is already ended here.
    async with db.reading() as connection:
        staff_row = (
            await connection.execute(
                select(staff).where(staff.c.id == row.staff_id, staff.c.disabled_at.is_(None))
            )
        ).one_or_none()
    if staff_row is None:
        return None
    return StaffPrincipal(staff_row.id, staff_row.email, Role(staff_row.role), row.session_id)


async def get_customer(db: Database, customer_id: int) -> Customer:
    async with db.transaction(write=False) as connection:
        row = (
            await connection.execute(select(customers).where(customers.c.id == customer_id))
        ).one_or_none()
    if row is None:
        raise GiftcardError(
            ErrorCode.NOT_FOUND, f"No customer {ids.format_id(ids.CUSTOMER, customer_id)}."
        )
    return customer_from_row(row)


async def update_customer(
    db: Database,
    customer_id: int,
    *,
    refund_preference: RefundPreference | None = None,
    name: str | None = None,
    clear_name: bool = False,
) -> Customer:
    values: dict[str, Any] = {}
    if refund_preference is not None:
        values["refund_preference"] = refund_preference.value
    if name is not None or clear_name:
        values["name"] = check_name(name)

    async def work(connection: AsyncConnection) -> Customer:
        if values:
            await connection.execute(
                update(customers).where(customers.c.id == customer_id).values(**values)
            )
        row = (
            await connection.execute(select(customers).where(customers.c.id == customer_id))
        ).one()
        return customer_from_row(row)

    return await db.run(work)


# --- changing the email or password ---------------------------------------------------
#
# Both need the current password, checked under the failed log-in limits (a stolen
# session cannot guess it), and both end the links of "Forgot your password?" not yet
# used. The change itself is a guarded update: it applies only if the password checked
# is still the account's, so two changes racing cannot both rely on the old one.


async def change_password(
    uow: UnitOfWork,
    limits: AbuseLimits,
    who: CustomerPrincipal,
    *,
    current_password: str,
    new_password: str,
    address: str,
) -> Customer:
    """The customer's new password. Every other session ends (this one, which just
    proved the password, goes on) and the "password changed" notice goes to the
    account's address."""
    check_password(new_password, param="new_password")
    verified_hash = await _verified_password_hash(
        uow.db, limits, who.customer, current_password, address=address
    )
    password_hash = await hash_password(new_password)

    async def work(connection: AsyncConnection) -> Customer:
        return await replace_password(
            connection,
            who.customer.id,
            password_hash,
            now=uow.clock.now(),
            keep_session_id=who.session_id,
            how="account",
            verified_hash=verified_hash,
        )

    return await uow.run(work)


async def change_email(
    uow: UnitOfWork,
    limits: AbuseLimits,
    who: CustomerPrincipal,
    *,
    new_email: str,
    current_password: str,
    address: str,
) -> Customer:
    """The customer's new email, with the identity that makes it theirs (SPEC §1) moved
    in the same transaction. The old address is told, with the new one masked."""
    email = normalize_email(new_email)
    if email == who.customer.email:
        raise validation_error("That is your account's email already.", "email")
    verified_hash = await _verified_password_hash(
        uow.db, limits, who.customer, current_password, address=address
    )
    old_email = who.customer.email

    async def work(connection: AsyncConnection) -> Customer:
        now = uow.clock.now()
        if await identity_of(connection, email) is not None:
            raise _email_taken()
        row = (
            await connection.execute(
                update(customers)
                .where(
                    customers.c.id == who.customer.id,
                    customers.c.email == old_email,
                    customers.c.password_hash == verified_hash,
                )
                .values(email=email)
                .returning(*customers.c)
            )
        ).one_or_none()
        if row is None:
            raise _changed_meanwhile()
        # The primary key on `identities.email` refuses an address claimed by someone
        # else at this very moment (a unique violation: `email_taken`).
        moved = await connection.execute(
            update(identities)
            .where(identities.c.customer_id == who.customer.id)
            .values(email=email)
        )
        if moved.rowcount == 0:
            # A customer whose old address went to a staff member when identities were
            # introduced (migration 0004) had none: the new address is theirs all the same.
            await _claim_identity(connection, email, customer_id=who.customer.id)
        await end_reset_links(connection, who.customer.id, now=now)
        await enqueue(
            connection,
            kind=MessageKind.EMAIL_CHANGED,
            recipient=old_email,
            ref_id=who.customer.id,
            now=now,
            payload={"new_email_hint": mask_email(email)},
        )
        return customer_from_row(row)

    try:
        return await uow.run(work)
    except IntegrityError as error:
        if is_unique_violation(error):
            raise _email_taken() from None
        raise


async def _verified_password_hash(
    db: Database, limits: AbuseLimits, customer: Customer, password: str, *, address: str
) -> str:
    """The account's password hash, once `password` is known to match it; refused with
    `invalid_credentials` (param `current_password`), which counts as a failed log-in."""
    async with limits.login_attempt(customer.email, address):
        async with db.transaction(write=False) as connection:
            stored = (
                await connection.execute(
                    select(customers.c.password_hash).where(customers.c.id == customer.id)
                )
            ).scalar_one_or_none()
        if len(password) > PASSWORD_LENGTH_MAX or not await verify_password(stored, password):
            raise GiftcardError(
                ErrorCode.INVALID_CREDENTIALS,
                "That is not your current password.",
                param="current_password",
            )
    assert stored is not None
    return str(stored)


async def replace_password(
    connection: AsyncConnection,
    customer_id: int,
    password_hash: str,
    *,
    now: datetime,
    keep_session_id: int | None,
    how: str,
    verified_hash: str | None = None,
) -> Customer:
    """Store a new password hash in the caller's transaction, end every session but
    `keep_session_id` and every unused reset link, and send the "password changed"
    notice (`how`: "reset" or "account"). With `verified_hash`, only if that is still
    the stored hash."""
    change = update(customers).where(customers.c.id == customer_id)
    if verified_hash is not None:
        change = change.where(customers.c.password_hash == verified_hash)
    row = (
        await connection.execute(change.values(password_hash=password_hash).returning(*customers.c))
    ).one_or_none()
    if row is None:
        raise _changed_meanwhile()
    await end_sessions(connection, customer_id, now=now, keep_session_id=keep_session_id)
    await end_reset_links(connection, customer_id, now=now)
    await enqueue(
        connection,
        kind=MessageKind.PASSWORD_CHANGED,
        recipient=row.email,
        ref_id=customer_id,
        now=now,
        payload={"how": how},
    )
    return customer_from_row(row)


async def end_sessions(
    connection: AsyncConnection, customer_id: int, *, now: datetime, keep_session_id: int | None
) -> int:
    """Revoke the customer's sessions, all of them or all but one; how many ended."""
    revoke = update(sessions).where(
        sessions.c.customer_id == customer_id, sessions.c.revoked_at.is_(None)
    )
    if keep_session_id is not None:
        revoke = revoke.where(sessions.c.id != keep_session_id)
    return int((await connection.execute(revoke.values(revoked_at=now))).rowcount)


async def end_reset_links(connection: AsyncConnection, customer_id: int, *, now: datetime) -> None:
    """Every password reset link of this customer not used yet stops working."""
    await connection.execute(
        update(password_resets)
        .where(password_resets.c.customer_id == customer_id, password_resets.c.used_at.is_(None))
        .values(used_at=now)
    )


def mask_email(email: str) -> str:
    """`ada.lovelace@example.com` → `a•••@example.com`: enough for the owner to know the
    address, too little for whoever reads the old mailbox to follow the account."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}"


def _changed_meanwhile() -> GiftcardError:
    return GiftcardError(
        ErrorCode.INVALID_STATE,
        "Your account's email or password was changed meanwhile. Reload and try again.",
    )


async def create_api_key(
    db: Database,
    *,
    role: Role,
    name: str | None,
    clock: Clock,
    key: str | None = None,
    audit_actor: audit.Actor | None = None,
) -> tuple[int, str]:
    """A new API key: its id and the secret, which is never shown again. `key` is for a
    secret derived elsewhere (the demo's, from the server's secret key); one whose hash is
    stored already is refused by the unique key on `key_hash`. With `audit_actor`, the
    creation is recorded in the audit log (its role and name, never the key)."""
    name = check_name(name)
    if key is None:
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    elif not key.startswith(API_KEY_PREFIX) or len(key) > SECRET_LENGTH_MAX:
        raise ValueError("an API key starts with its prefix and fits SECRET_LENGTH_MAX")
    now = clock.now()

    async def work(connection: AsyncConnection) -> int:
        key_id = int(
            (
                await connection.execute(
                    insert(api_keys)
                    .values(
                        name=name,
                        role=role.value,
                        key_hash=secret_hash(key),
                        prefix=key[:12],
                        created_at=now,
                    )
                    .returning(api_keys.c.id)
                )
            ).scalar_one()
        )
        if audit_actor is not None:
            await audit.record(
                connection,
                audit_actor,
                audit.Action(
                    "api_key.create",
                    target=f"api_key:{key_id}",
                    detail={"role": role.value, "name": name},
                ),
                now=now,
            )
        return key_id

    return await db.run(work), key


async def create_staff(
    db: Database,
    *,
    email: str,
    password: str,
    role: Role,
    name: str | None = None,
    clock: Clock,
    audit_actor: audit.Actor | None = None,
) -> int:
    """A new staff member's id. With `audit_actor`, the creation is recorded in the audit
    log (the member's id and role)."""
    if role not in (Role.SUPPORT, Role.ADMIN):
        raise validation_error("Staff are support or admin.", "role")
    email = normalize_email(email)
    check_password(password)
    password_hash = await hash_password(password)
    now = clock.now()

    async def work(connection: AsyncConnection) -> int:
        found = await identity_of(connection, email)
        if found is not None:
            raise _staff_email_taken(email, found)
        staff_id = int(
            (
                await connection.execute(
                    insert(staff)
                    .values(
                        email=email,
                        name=check_name(name),
                        password_hash=password_hash,
                        role=role.value,
                        created_at=now,
                    )
                    .returning(staff.c.id)
                )
            ).scalar_one()
        )
        await _claim_identity(connection, email, staff_id=staff_id)
        if audit_actor is not None:
            await audit.record(
                connection,
                audit_actor,
                audit.Action(
                    "staff.create",
                    target=ids.format_id(ids.STAFF, staff_id),
                    detail={"role": role.value},
                ),
                now=now,
            )
        return staff_id

    try:
        return await db.run(work)
    except IntegrityError as error:
        if is_unique_violation(error):
            raise _staff_email_taken(email, None) from None
        raise


async def set_staff_password(
    db: Database,
    *,
    email: str,
    password: str,
    clock: Clock,
    audit_actor: audit.Actor | None = None,
) -> int:
    """A staff member's new password, set by an operator; every session of theirs ends.
    How many sessions ended. With `audit_actor`, the change is recorded in the audit log
    (never the password)."""
    email = normalize_email(email)
    check_password(password)
    password_hash = await hash_password(password)
    now = clock.now()

    async def work(connection: AsyncConnection) -> int:
        staff_id = (
            await connection.execute(
                update(staff)
                .where(staff.c.email == email)
                .values(password_hash=password_hash)
                .returning(staff.c.id)
            )
        ).scalar_one_or_none()
        if staff_id is None:
            raise GiftcardError(
                ErrorCode.NOT_FOUND, f"No staff member has the email {email}.", param="email"
            )
        ended = await connection.execute(
            update(sessions)
            .where(sessions.c.staff_id == staff_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if audit_actor is not None:
            await audit.record(
                connection,
                audit_actor,
                audit.Action(
                    "staff.password",
                    target=ids.format_id(ids.STAFF, staff_id),
                    detail={"sessions_ended": int(ended.rowcount)},
                ),
                now=now,
            )
        return int(ended.rowcount)

    return await db.run(work)


def _staff_email_taken(email: str, owner: Identity | None) -> GiftcardError:
    """Said to the operator creating staff, who may know who has the address."""
    if owner is not None and owner.customer_id is not None:
        account = ids.format_id(ids.CUSTOMER, owner.customer_id)
        detail = (
            f"{email} is the email of a customer account ({account}). "
            "A staff member needs an address of their own."
        )
    elif owner is not None:
        detail = f"There is a staff member with the email {email} already."
    else:
        detail = f"{email} was taken by a customer or staff member just now."
    return GiftcardError(ErrorCode.EMAIL_TAKEN, detail, param="email")
