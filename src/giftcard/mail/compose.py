"""A rendered message made into an email: headers that cannot be forged, two parts."""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from giftcard.mail.messages import Content, OutboxMessage


class HeaderRefused(ValueError):
    """A header value would carry a line break or another control character."""


def single_line(value: str, *, what: str) -> str:
    """`value` for a header: refused when it holds a line break or any control
    character, so that nothing a person typed (a name, a subject) can add a header."""
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise HeaderRefused(f"{what} holds a line break or control character")
    return value


def compose(
    message: OutboxMessage, content: Content, *, sender: str, date: datetime
) -> EmailMessage:
    """The email for `message`: From, To, Subject, Date and its fixed Message-ID, with a
    plain-text part and an HTML alternative."""
    email = EmailMessage()
    email["From"] = single_line(sender, what="the sender address")
    email["To"] = Address(addr_spec=single_line(message.recipient, what="the recipient"))
    email["Subject"] = single_line(content.subject, what="the subject")
    email["Date"] = format_datetime(date)
    email["Message-ID"] = single_line(message.message_id, what="the Message-ID")
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(content.text)
    email.add_alternative(content.html, subtype="html")
    return email
