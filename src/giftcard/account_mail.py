"""Account emails: "Forgot your password?" links, and the notices that tell a customer
their email or password was changed.

A password reset link carries a **token**: HMAC-SHA-256, under the server's secret key
and a purpose of its own, of the 32 random bytes kept in `password_resets.token_seed`.
The sender derives it again when it renders the email, so the token is never stored; the
row keeps a keyed hash of it (under another purpose) to find the reset when the link
comes back. Without the secret key a copy of the database yields no working link.

The rules a link follows:

- It works once, for one hour (:data:`RESET_TTL`). Using it is a guarded update of its
  row (``used_at IS NULL AND expires_at > now``), so two tabs racing with one link
  change the password once.
- Only the newest link of a customer works: asking again ends the links before it, and
  so does any change of the account's password or email.
- Using it changes the password, ends **every** session of the customer, and sends the
  "password changed" notice to the account's address.
- Only customers get links. A staff member's address is answered like an address
  without an account (staff passwords are reset by an operator with the CLI).

Asking for a link answers the same, and does the same database work, whether or not the
address has an account: the same statements run in both cases, and without an account
they find no row to write (see :func:`request_password_reset`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from datetime import UTC, datetime, timedelta

from babel.dates import format_datetime
from sqlalchemy import Integer, LargeBinary, String, Text, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import codes
from giftcard.clock import Clock
from giftcard.config import Settings
from giftcard.customers import (
    Customer,
    check_password,
    end_reset_links,
    identity_of,
    normalize_email,
    replace_password,
)
from giftcard.db.engine import Database
from giftcard.db.tables import UTCDateTime, customers, outbox_messages, password_resets
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.limits import AbuseLimits
from giftcard.mail.messages import Content, NotToBeSent, OutboxMessage, render_pair
from giftcard.mail.outbox import MessageKind, MessageStatus, mark_queued, new_message_id
from giftcard.passwords import hash_password
from giftcard.unit_of_work import UnitOfWork

RESET_TTL = timedelta(hours=1)
# base64url of a 32-byte digest, without padding.
TOKEN_LENGTH = 43
_TOKEN_SYMBOLS = frozenset(string.ascii_letters + string.digits + "-_")
# Keep the link's token apart from a gift's code and from the token's own look-up hash,
# though all three come from the one secret key.
_TOKEN_PURPOSE = b"giftcard password reset link v1\x00"
_LOOKUP_PURPOSE = b"giftcard password reset lookup v1\x00"
# No customer has this id: what the statements of a request look for when the address
# has no account, so that they run all the same and find nothing.
_NOBODY = 0

PASSWORD_RESET_PATH = "/password-reset"  # noqa: S105 - a path
FORGOT_PASSWORD_PATH = "/forgot-password"  # noqa: S105 - a path


def reset_token(secret_key: bytes, seed: bytes) -> str:
    """The token of the link for the reset kept as `seed`."""
    if not secret_key:
        raise ValueError("reset_token needs a non-empty secret key")
    digest = hmac.new(secret_key, _TOKEN_PURPOSE + seed, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def token_hash(secret_key: bytes, token: str) -> bytes:
    """What `password_resets.token_hash` holds for `token`: a keyed hash, so that the
    column cannot be matched against tokens without the secret key either."""
    if not secret_key:
        raise ValueError("token_hash needs a non-empty secret key")
    return hmac.new(secret_key, _LOOKUP_PURPOSE + token.encode("ascii"), hashlib.sha256).digest()


def _lookup_hash(secret_key: bytes, token: str) -> bytes:
    """The hash to look `token` up by; a token of the wrong shape is refused before any
    query, with the same words as one that is unknown."""
    if len(token) != TOKEN_LENGTH or not set(token) <= _TOKEN_SYMBOLS:
        raise unusable_link()
    return token_hash(secret_key, token)


def reset_link(settings: Settings, token: str) -> str:
    return f"{settings.public_url}{PASSWORD_RESET_PATH}?token={token}"


def unusable_link() -> GiftcardError:
    """Said alike for a link that is unknown, used, replaced by a newer one or expired:
    the one useful thing to do is the same."""
    return GiftcardError(
        ErrorCode.INVALID_STATE,
        "This password reset link cannot be used: it has expired (links work for one "
        "hour), it was used already, or a newer link was sent. Ask for a new one.",
        param="token",
    )


# --- asking for a link ----------------------------------------------------------------


async def request_password_reset(uow: UnitOfWork, *, email: str, secret_key: bytes) -> None:
    """Send a password reset link to `email` if a customer has it; nothing otherwise.

    One transaction writes the reset and its email to the outbox. Every statement runs
    whether or not the address has an account, each written to find no row without one
    (`INSERT … SELECT` from the customer), so the request costs the same either way."""
    email = normalize_email(email)
    seed = codes.new_seed()
    digest = token_hash(secret_key, reset_token(secret_key, seed))
    message_id = new_message_id()

    async def work(connection: AsyncConnection) -> None:
        now = uow.clock.now()
        found = await identity_of(connection, email)
        customer_id = found.customer_id if found and found.customer_id else _NOBODY
        await end_reset_links(connection, customer_id, now=now)
        reset_id = (
            await connection.execute(
                insert(password_resets)
                .from_select(
                    ["customer_id", "token_seed", "token_hash", "expires_at", "created_at"],
                    select(
                        customers.c.id,
                        literal(seed, LargeBinary()),
                        literal(digest, LargeBinary()),
                        literal(now + RESET_TTL, UTCDateTime()),
                        literal(now, UTCDateTime()),
                    ).where(customers.c.id == customer_id),
                )
                .returning(password_resets.c.id)
            )
        ).scalar_one_or_none()
        await _enqueue_reset_email(
            connection, reset_id or _NOBODY, recipient=email, message_id=message_id, now=now
        )

    await uow.run(work)


async def request_password_reset_limited(
    uow: UnitOfWork, limits: AbuseLimits, *, email: str, address: str, secret_key: bytes
) -> None:
    """:func:`request_password_reset` under its limits: per client address and per
    email, every request counted, with an account or without one."""
    normalized = normalize_email(email)
    await limits.password_reset_attempt(normalized, address)
    await request_password_reset(uow, email=normalized, secret_key=secret_key)


async def _enqueue_reset_email(
    connection: AsyncConnection, reset_id: int, *, recipient: str, message_id: str, now: datetime
) -> None:
    """What `giftcard.mail.outbox.enqueue` writes, as an `INSERT … SELECT` from the reset,
    so that it writes nothing when there is no reset and costs the same statement."""
    mark_queued(connection)
    await connection.execute(
        insert(outbox_messages).from_select(
            [
                "kind",
                "recipient",
                "ref_id",
                "payload",
                "message_id",
                "status",
                "next_attempt_at",
                "attempts",
                "created_at",
            ],
            select(
                literal(MessageKind.PASSWORD_RESET.value, String()),
                literal(recipient, String()),
                password_resets.c.id,
                literal(None, Text()),
                literal(message_id, String()),
                literal(MessageStatus.PENDING.value, String()),
                literal(now, UTCDateTime()),
                literal(0, Integer()),
                literal(now, UTCDateTime()),
            ).where(password_resets.c.id == reset_id),
        )
    )


# --- using a link ---------------------------------------------------------------------


async def check_reset_link(db: Database, *, token: str, secret_key: bytes, clock: Clock) -> None:
    """Raise :func:`unusable_link` unless `token` could change a password now: what the
    page checks before showing its form. Reads only."""
    digest = _lookup_hash(secret_key, token)
    now = clock.now()
    async with db.transaction(write=False) as connection:
        found = (
            await connection.execute(
                select(password_resets.c.id).where(
                    password_resets.c.token_hash == digest,
                    password_resets.c.used_at.is_(None),
                    password_resets.c.expires_at > now,
                )
            )
        ).one_or_none()
    if found is None:
        raise unusable_link()


async def reset_password(
    uow: UnitOfWork, *, token: str, password: str, secret_key: bytes
) -> Customer:
    """Use a link: the password becomes `password`, the link is used up, every session
    of the customer ends and the "password changed" notice goes to their address."""
    check_password(password)
    digest = _lookup_hash(secret_key, token)
    # Hashing is slow on purpose, so a token that cannot be used is refused before it
    # (nobody makes the server hash for made-up tokens), and it happens before the
    # transaction, which stays short. The guarded update below still decides.
    await check_reset_link(uow.db, token=token, secret_key=secret_key, clock=uow.clock)
    password_hash = await hash_password(password)

    async def work(connection: AsyncConnection) -> Customer:
        now = uow.clock.now()
        used = (
            await connection.execute(
                update(password_resets)
                .where(
                    password_resets.c.token_hash == digest,
                    password_resets.c.used_at.is_(None),
                    password_resets.c.expires_at > now,
                )
                .values(used_at=now)
                .returning(password_resets.c.customer_id)
            )
        ).one_or_none()
        if used is None:
            raise unusable_link()
        return await replace_password(
            connection, used.customer_id, password_hash, now=now, keep_session_id=None, how="reset"
        )

    return await uow.run(work)


# --- the emails -----------------------------------------------------------------------


def _when(moment: datetime) -> str:
    """A moment as the emails write it: in UTC, since the reader's zone is unknown."""
    return format_datetime(moment.astimezone(UTC), "d MMM y, HH:mm 'UTC'", locale="en_US")


class PasswordResetEmail:
    """The link to choose a new password. Not sent once the link cannot be used."""

    async def render(
        self, connection: AsyncConnection, message: OutboxMessage, settings: Settings
    ) -> Content:
        row = (
            await connection.execute(
                select(password_resets).where(password_resets.c.id == message.ref_id)
            )
        ).one_or_none()
        if row is None or row.used_at is not None:
            raise NotToBeSent("the reset link was used or replaced by a newer one")
        if row.expires_at <= datetime.now(UTC):
            raise NotToBeSent("the reset link expired before it could be sent")
        link = reset_link(settings, reset_token(settings.secret_key, row.token_seed))
        text, html = render_pair(
            "password_reset",
            link=link,
            expires_at=_when(row.expires_at),
            forgot_link=settings.public_url + FORGOT_PASSWORD_PATH,
        )
        return Content("Choose a new password for your gift card account", text, html)

    async def sent(
        self, connection: AsyncConnection, message: OutboxMessage, now: datetime
    ) -> None:
        """Nothing follows a reset email's sending."""

    async def failed(
        self, connection: AsyncConnection, message: OutboxMessage, reason: str, now: datetime
    ) -> None:
        """The customer asks again; nothing else depends on this email."""


class _NoticeEmail:
    """A notice about the account, rendered from its payload; nothing follows it."""

    async def sent(
        self, connection: AsyncConnection, message: OutboxMessage, now: datetime
    ) -> None:
        """A notice changes nothing once sent."""

    async def failed(
        self, connection: AsyncConnection, message: OutboxMessage, reason: str, now: datetime
    ) -> None:
        """A notice given up changes nothing either."""


class EmailChangedEmail(_NoticeEmail):
    """To the old address: the account's email was changed (the new one shown masked)."""

    async def render(
        self, connection: AsyncConnection, message: OutboxMessage, settings: Settings
    ) -> Content:
        text, html = render_pair(
            "email_changed",
            new_email_hint=str(message.payload.get("new_email_hint", "another address")),
            changed_at=_when(message.created_at),
            forgot_link=settings.public_url + FORGOT_PASSWORD_PATH,
        )
        return Content("The email of your gift card account was changed", text, html)


class PasswordChangedEmail(_NoticeEmail):
    """To the account's address: its password was changed, and how."""

    async def render(
        self, connection: AsyncConnection, message: OutboxMessage, settings: Settings
    ) -> Content:
        text, html = render_pair(
            "password_changed",
            by_reset=message.payload.get("how") == "reset",
            changed_at=_when(message.created_at),
            forgot_link=settings.public_url + FORGOT_PASSWORD_PATH,
        )
        return Content("The password of your gift card account was changed", text, html)


PASSWORD_RESET_EMAIL = PasswordResetEmail()
EMAIL_CHANGED_EMAIL = EmailChangedEmail()
PASSWORD_CHANGED_EMAIL = PasswordChangedEmail()


__all__ = [
    "EMAIL_CHANGED_EMAIL",
    "PASSWORD_CHANGED_EMAIL",
    "PASSWORD_RESET_EMAIL",
    "RESET_TTL",
    "check_reset_link",
    "request_password_reset",
    "request_password_reset_limited",
    "reset_password",
    "reset_token",
    "token_hash",
    "unusable_link",
]
