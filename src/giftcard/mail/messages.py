"""What each kind of message says, and what its sending or giving up changes.

Every kind has a :class:`MessageHandler`: it renders the message from the row it refers
to when the message is sent (so a code or link is derived then, never stored), and it is
told, in the sender's transaction, when the message was sent or given up (a gift's
status follows its email). :func:`handler_for` finds it.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import jinja2
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.config import Settings
from giftcard.mail.outbox import MessageKind


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    kind: MessageKind
    recipient: str
    ref_id: int | None
    payload: dict[str, Any]
    message_id: str
    attempts: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> OutboxMessage:
        return cls(
            id=row.id,
            kind=MessageKind(row.kind),
            recipient=row.recipient,
            ref_id=row.ref_id,
            payload=json.loads(row.payload) if row.payload else {},
            message_id=row.message_id,
            attempts=row.attempts,
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class Content:
    """A rendered message: one subject line, a plain-text part and an HTML part."""

    subject: str
    text: str
    html: str


class NotToBeSent(Exception):
    """Raised by a renderer when the message must no longer go out (a reset link already
    used, a gift whose card was cancelled); the message is given up with this reason."""


class MessageHandler(Protocol):
    async def render(
        self, connection: AsyncConnection, message: OutboxMessage, settings: Settings
    ) -> Content: ...

    async def sent(
        self, connection: AsyncConnection, message: OutboxMessage, now: datetime
    ) -> None:
        """Called in the transaction that marks the message sent."""

    async def failed(
        self, connection: AsyncConnection, message: OutboxMessage, reason: str, now: datetime
    ) -> None:
        """Called in the transaction that gives the message up."""


# Each kind's handler, by the module and name that define it.
_HANDLERS = {
    MessageKind.GIFT: ("giftcard.gifts", "GIFT_EMAIL"),
    MessageKind.PASSWORD_RESET: ("giftcard.account_mail", "PASSWORD_RESET_EMAIL"),
    MessageKind.EMAIL_CHANGED: ("giftcard.account_mail", "EMAIL_CHANGED_EMAIL"),
    MessageKind.PASSWORD_CHANGED: ("giftcard.account_mail", "PASSWORD_CHANGED_EMAIL"),
    MessageKind.TEST: ("giftcard.mail.test_message", "TEST_EMAIL"),
}


def handler_for(kind: MessageKind) -> MessageHandler:
    module, name = _HANDLERS[kind]
    handler: MessageHandler = getattr(importlib.import_module(module), name)
    return handler


# The emails' templates: `NAME.html` and `NAME.txt` for each message, HTML escaped.
templates = jinja2.Environment(
    loader=jinja2.PackageLoader("giftcard.mail", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render_pair(name: str, **context: Any) -> tuple[str, str]:
    """The plain-text and HTML parts of the message `name`, from its two templates."""
    text = templates.get_template(f"{name}.txt").render(**context)
    html = templates.get_template(f"{name}.html").render(**context)
    return text, html
