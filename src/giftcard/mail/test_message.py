"""The test email: `giftcard mail test --to ADDRESS` queues one, so that an operator
can see their email settings work (as Django's `sendtestemail`). It refers to nothing
and changes nothing when it is sent or given up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.config import Settings
from giftcard.customers import normalize_email
from giftcard.db.tables import outbox_messages
from giftcard.mail import outbox
from giftcard.mail.messages import Content, OutboxMessage, render_pair
from giftcard.mail.outbox import MessageKind, MessageStatus
from giftcard.mail.transport import transport_for
from giftcard.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    recipient: str
    message_id: str


@dataclass(frozen=True)
class MessageState:
    status: MessageStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime


async def queue_test_email(uow: UnitOfWork, recipient: str) -> QueuedMessage:
    """Queue a test email to `recipient`, to be sent at once by a running sender."""
    address = normalize_email(recipient)

    async def work(connection: AsyncConnection) -> QueuedMessage:
        outbox_id = await outbox.enqueue(
            connection, kind=MessageKind.TEST, recipient=address, ref_id=None, now=uow.clock.now()
        )
        message_id = (
            await connection.execute(
                select(outbox_messages.c.message_id).where(outbox_messages.c.id == outbox_id)
            )
        ).scalar_one()
        return QueuedMessage(outbox_id, address, message_id)

    return await uow.run(work)


async def message_state(connection: AsyncConnection, outbox_id: int) -> MessageState:
    row = (
        await connection.execute(select(outbox_messages).where(outbox_messages.c.id == outbox_id))
    ).one()
    return MessageState(
        MessageStatus(row.status), row.attempts, row.last_error, row.next_attempt_at
    )


def _route(settings: Settings) -> str:
    destination = transport_for(settings).description
    return f"the SMTP server {destination}" if settings.smtp_url else f"the folder {destination}"


class TestEmail:
    async def render(
        self, connection: AsyncConnection, message: OutboxMessage, settings: Settings
    ) -> Content:
        text, html = render_pair(
            "test",
            public_url=settings.public_url,
            transport=_route(settings),
            message_id=message.message_id,
        )
        return Content(subject="Test email from giftcard", text=text, html=html)

    async def sent(
        self, connection: AsyncConnection, message: OutboxMessage, now: datetime
    ) -> None:
        return None

    async def failed(
        self, connection: AsyncConnection, message: OutboxMessage, reason: str, now: datetime
    ) -> None:
        return None


TEST_EMAIL = TestEmail()
