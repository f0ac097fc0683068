"""The outbox: emails decided in a transaction, delivered after it commits.

A use case that sends an email calls :func:`enqueue` on its own connection, so the
message exists exactly when what it announces does: no gift email without its card, no
card without its email. The sender (:mod:`giftcard.mail.sender`) claims due messages,
renders them, hands them to the transport, and marks them sent or schedules a retry.

Senders look for due messages every second. To have this process's sender go at once,
:func:`enqueue` marks the connection (:func:`mark_queued`) and the unit of work that
committed it wakes the sender (``Services.mail_wakeup``): no use case has to remember to.
"""

from __future__ import annotations

import enum
import json
import random
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db.tables import outbox_messages

# Set on a connection that queued a message in the transaction running on it.
_QUEUED = "giftcard.mail_queued"
# The domain part of every Message-ID this service makes.
MESSAGE_ID_DOMAIN = "giftcard.invalid"
# The longest wait between two attempts, however many failed before.
RETRY_WAIT_MAX_S = 3600
# Messages one sender claims at a time.
CLAIM_BATCH_MAX = 20


class MessageKind(enum.StrEnum):
    GIFT = "gift"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a kind of message
    EMAIL_CHANGED = "email_changed"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a kind of message
    # `giftcard mail test`: an operator checking the email settings.
    TEST = "test"


class MessageStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


def new_message_id() -> str:
    return f"<{secrets.token_hex(16)}@{MESSAGE_ID_DOMAIN}>"


def mark_queued(connection: AsyncConnection) -> None:
    """Note that the transaction on `connection` queued a message (see the module)."""
    connection.info[_QUEUED] = True


def take_queued(connection: AsyncConnection) -> bool:
    """Whether a message was queued on `connection` since the last call; clears the note."""
    return bool(connection.info.pop(_QUEUED, False))


async def enqueue(
    connection: AsyncConnection,
    *,
    kind: MessageKind,
    recipient: str,
    ref_id: int | None,
    now: datetime,
    deliver_at: datetime | None = None,
    payload: dict[str, Any] | None = None,
) -> int:
    """Write one message to be sent at `deliver_at` (now when not given); its id.

    `payload` holds what the message shows that is not secret; secrets (a code, a reset
    link) are derived when the message is rendered, never stored here."""
    result = await connection.execute(
        insert(outbox_messages)
        .values(
            kind=kind.value,
            recipient=recipient,
            ref_id=ref_id,
            payload=json.dumps(payload, sort_keys=True) if payload is not None else None,
            message_id=new_message_id(),
            status=MessageStatus.PENDING.value,
            next_attempt_at=deliver_at or now,
            attempts=0,
            created_at=now,
        )
        .returning(outbox_messages.c.id)
    )
    mark_queued(connection)
    return int(result.scalar_one())


def _due(now: datetime) -> ColumnElement[bool]:
    """Waiting, its time come, and claimed by no sender (or by one whose claim ran out)."""
    table = outbox_messages.c
    return and_(
        table.status == MessageStatus.PENDING.value,
        table.next_attempt_at <= now,
        or_(table.claimed_until.is_(None), table.claimed_until < now),
    )


async def next_due_at(connection: AsyncConnection, *, now: datetime) -> datetime | None:
    """When the earliest waiting message may be sent, if any is waiting: a read, so that
    an idle sender looks without taking SQLite's write lock."""
    table = outbox_messages.c
    ready = or_(table.claimed_until.is_(None), table.claimed_until < now)
    waiting = await connection.execute(
        select(func.min(table.next_attempt_at)).where(
            table.status == MessageStatus.PENDING.value, ready
        )
    )
    value: datetime | None = waiting.scalar_one()
    return value


async def claim(
    connection: AsyncConnection, *, now: datetime, claim_ttl_s: int, limit: int
) -> tuple[str, Sequence[Row[Any]]]:
    """Claim up to `limit` due messages, oldest first, for `claim_ttl_s`: the claim's
    token and the claimed rows, each with its attempt counted.

    On PostgreSQL the rows are locked with SKIP LOCKED, so two senders claiming at once
    take different messages rather than wait for each other; the UPDATE repeats the
    condition, so a row claimed and committed by another sender meanwhile is left to it.
    SQLite ignores FOR UPDATE, but this runs in a write transaction (BEGIN IMMEDIATE)
    and SQLite has one writer at a time: claimers take turns. The attempt is counted at
    the claim, not at the end, so that a message whose sending crashes the sender each
    time is still given up after GIFTCARD_MAIL_ATTEMPTS_MAX attempts."""
    table = outbox_messages.c
    token = secrets.token_hex(16)
    ids = (
        (
            await connection.execute(
                select(table.id)
                .where(_due(now))
                .order_by(table.next_attempt_at, table.id)
                .limit(min(limit, CLAIM_BATCH_MAX))
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
    if not ids:
        return token, []
    claimed = await connection.execute(
        update(outbox_messages)
        .where(table.id.in_(ids), _due(now))
        .values(
            claim_token=token,
            claimed_until=now + timedelta(seconds=claim_ttl_s),
            attempts=table.attempts + 1,
        )
        .returning(*outbox_messages.c)
    )
    rows = sorted(claimed.all(), key=lambda row: (row.next_attempt_at, row.id))
    return token, rows


def _claimed(outbox_id: int, token: str) -> ColumnElement[bool]:
    """Still this sender's: a sender whose claim ran out and was taken over by another
    must not mark what the other is now sending."""
    table = outbox_messages.c
    return and_(
        table.id == outbox_id,
        table.claim_token == token,
        table.status == MessageStatus.PENDING.value,
    )


async def mark_sent(
    connection: AsyncConnection, outbox_id: int, token: str, *, now: datetime
) -> bool:
    """The message was handed over; False if its claim was no longer this sender's."""
    result = await connection.execute(
        update(outbox_messages)
        .where(_claimed(outbox_id, token))
        .values(
            status=MessageStatus.SENT.value,
            sent_at=now,
            last_error=None,
            claim_token=None,
            claimed_until=None,
        )
    )
    return result.rowcount == 1


async def retry_later(
    connection: AsyncConnection, outbox_id: int, token: str, *, reason: str, at: datetime
) -> bool:
    """The attempt failed: try again at `at`, keeping the reason for support."""
    result = await connection.execute(
        update(outbox_messages)
        .where(_claimed(outbox_id, token))
        .values(next_attempt_at=at, last_error=reason, claim_token=None, claimed_until=None)
    )
    return result.rowcount == 1


async def give_up(connection: AsyncConnection, outbox_id: int, token: str, *, reason: str) -> bool:
    """No more attempts: the message is failed, with the reason why."""
    result = await connection.execute(
        update(outbox_messages)
        .where(_claimed(outbox_id, token))
        .values(
            status=MessageStatus.FAILED.value,
            last_error=reason,
            claim_token=None,
            claimed_until=None,
        )
    )
    return result.rowcount == 1


async def release(connection: AsyncConnection, outbox_ids: Sequence[int], token: str) -> None:
    """Hand claimed messages back unsent (a sender stopping, or short of time), their
    attempt not counted, for any sender to take at once."""
    if not outbox_ids:
        return
    table = outbox_messages.c
    await connection.execute(
        update(outbox_messages)
        .where(
            table.id.in_(outbox_ids),
            table.claim_token == token,
            table.status == MessageStatus.PENDING.value,
        )
        .values(claim_token=None, claimed_until=None, attempts=table.attempts - 1)
    )


def retry_wait_s(attempts: int, *, base_s: int, rng: random.Random | None = None) -> float:
    """How long to wait after the `attempts`-th failed attempt: `base_s`, doubling with
    each attempt, at most RETRY_WAIT_MAX_S; then between half of that and all of it at
    random ("equal jitter"), so that messages that failed together (a server down for a
    minute) do not all come back in the same second, yet none returns too soon."""
    ceiling = min(float(RETRY_WAIT_MAX_S), base_s * 2.0 ** min(max(attempts - 1, 0), 32))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


async def status_counts(connection: AsyncConnection) -> dict[MessageStatus, int]:
    """How many messages are waiting and how many were given up, now: two counts, each
    over its status's partial index, never over the messages sent."""
    table = outbox_messages.c

    def counted(status: MessageStatus) -> Any:
        return select(func.count()).where(table.status == status.value).scalar_subquery()

    statuses = (MessageStatus.PENDING, MessageStatus.FAILED)
    row = (await connection.execute(select(*(counted(status) for status in statuses)))).one()
    return {status: int(count) for status, count in zip(statuses, row, strict=True)}
