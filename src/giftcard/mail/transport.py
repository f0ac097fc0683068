"""Handing a composed email over: to an SMTP server, or into a folder of .eml files.

:func:`transport_for` picks one from the settings. Either raises :class:`DeliveryFailed`
when the email was not handed over; the sender then retries it later, up to
GIFTCARD_MAIL_ATTEMPTS_MAX attempts. Every refusal is retried, a 5xx answer too: a server
that refuses for a while (a full mailbox, a relay not yet allowed, a misconfiguration
being fixed) often accepts later, and a message given up is a support ticket, whereas
retrying a truly dead address only costs a few more attempts before it is given up
with the server's last answer as its reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import aiosmtplib

from giftcard.config import Settings, SmtpServer, parse_smtp_url

log = logging.getLogger(__name__)

# How long a reason kept in `last_error` may be; a server's answer can run long.
REASON_CHARS_MAX = 500


class DeliveryFailed(Exception):
    """The email was not handed over; `reason` says why, in words fit for support (it
    holds no part of the message, only the server's answer or the network's error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:REASON_CHARS_MAX]


class Transport(Protocol):
    # Where the mail goes, for people: a folder, or the SMTP server without credentials.
    description: str

    async def send(self, email: EmailMessage, *, outbox_id: int, now: datetime) -> None:
        """Hand `email` over, or raise :class:`DeliveryFailed`."""


def transport_for(settings: Settings) -> Transport:
    if settings.smtp_url:
        return SmtpTransport(parse_smtp_url(settings.smtp_url), timeout_s=settings.smtp_timeout_s)
    return FileTransport(settings.mail_dir)


def announcement(settings: Settings) -> str:
    """Where emails go, as `giftcard serve` and `giftcard worker` say it at the start."""
    if settings.smtp_url:
        return f"Emails go to {parse_smtp_url(settings.smtp_url).address}"
    return f"Emails are written to {settings.mail_dir.resolve()}"


class SmtpTransport:
    """One connection per email, bounded as a whole by the timeout: STARTTLS whenever the
    server offers it on `smtp://` (and required when logging in), TLS from the start on
    `smtps://`, and the user and password of the URL when given. Certificates are
    checked against the system's authorities (the default SSL context, which honours
    SSL_CERT_FILE)."""

    def __init__(self, server: SmtpServer, *, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.description = server.address
        # The system's authorities, read once per transport rather than per email.
        self.tls_context = ssl.create_default_context()

    async def send(self, email: EmailMessage, *, outbox_id: int, now: datetime) -> None:
        server = self.server
        try:
            async with asyncio.timeout(self.timeout_s):
                await aiosmtplib.send(
                    email,
                    hostname=server.host,
                    port=server.port,
                    username=server.username,
                    password=server.password,
                    use_tls=server.implicit_tls,
                    start_tls=_starttls(server),
                    timeout=self.timeout_s,
                    tls_context=self.tls_context,
                )
        except aiosmtplib.SMTPRecipientsRefused as error:
            answers = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
            raise DeliveryFailed(f"{server.address} refused the recipient: {answers}") from None
        except aiosmtplib.SMTPResponseException as error:
            answer = f"{error.code} {error.message}"
            raise DeliveryFailed(f"{server.address} answered {answer}") from None
        except (TimeoutError, aiosmtplib.SMTPTimeoutError):
            raise DeliveryFailed(
                f"{server.address} did not finish within {self.timeout_s:g}s"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as error:
            raise DeliveryFailed(
                f"could not deliver through {server.address}: {_error_text(error)}"
            ) from None


def _starttls(server: SmtpServer) -> bool | None:
    """Whether to upgrade an `smtp://` connection: whenever the server offers it (None);
    and with a password to send, always (True), refusing a server that does not offer it,
    so that the password never crosses the network in the clear because someone on the
    way struck the offer out."""
    if server.implicit_tls:
        return False
    return True if server.username else None


def _error_text(error: BaseException) -> str:
    """An exception's gist: aiosmtplib wraps a refused connection or a failed TLS
    handshake in words of its own, so the cause is named when there is one."""
    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, ssl.SSLCertVerificationError):
            return f"TLS failed: certificate verify failed ({candidate.verify_message})"
        if isinstance(candidate, ssl.SSLError):
            return f"TLS failed ({candidate.reason or candidate})"
        if isinstance(candidate, OSError) and candidate.errno:
            return os.strerror(candidate.errno).lower()
    return str(error) or type(error).__name__


class FileTransport:
    """Each email written into a folder as `<time>-<outbox id>.eml`, readable by any mail
    program, and announced in the log, as Django's file back end does. For development
    and demos: the folder holds what the emails hold, codes too, so the files are
    readable by their owner only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.description = str(self.folder)

    async def send(self, email: EmailMessage, *, outbox_id: int, now: datetime) -> None:
        try:
            path = await asyncio.to_thread(self._write, email, outbox_id, now)
        except OSError as error:
            raise DeliveryFailed(f"could not write into {self.folder}: {error}") from None
        log.info(
            "Email to %s written to %s",
            email["To"],
            path,
            extra={"outbox_id": outbox_id, "path": str(path)},
        )

    def _write(self, email: EmailMessage, outbox_id: int, now: datetime) -> Path:
        """Written to a temporary name and renamed, so that a reader never sees half an
        email; the same message sent again within a second replaces its twin."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{now.strftime('%Y%m%d-%H%M%S')}-{outbox_id}.eml"
        temporary = self.folder / f".{path.name}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(email.as_bytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return path
