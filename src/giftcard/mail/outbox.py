"""The outbox: emails decided in a transaction, delivered after it commits.

A use case that sends an email calls :func:`enqueue` on its own connection, so the
message exists exactly when what it announces does: no gift email without its card, no
card without its email. The sender (:mod:`giftcard.mail.sender`) claims due messages,
renders them, hands them to the transport, and marks them sent or schedules a retry.
"""

from __future__ import annotations

import enum
import json
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db.tables import outbox_messages

# The domain part of every Message-ID this service makes.
MESSAGE_ID_DOMAIN = "giftcard.invalid"


class MessageKind(enum.StrEnum):
    GIFT = "gift"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a kind of message
    EMAIL_CHANGED = "email_changed"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a kind of message


class MessageStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


def new_message_id() -> str:
    return f"<{secrets.token_hex(16)}@{MESSAGE_ID_DOMAIN}>"


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
    return int(result.scalar_one())
