"""The sender: takes due messages from the outbox and delivers them.

Each pass claims a few due messages (exclusively: another sender, in this process or
another, takes others), and for each in turn renders it through its kind's handler,
composes the email, hands it to the transport, and records the outcome in a transaction
of its own, where the handler is told too (a gift's status follows its email):

- handed over: `sent`;
- refused or unreachable: tried again later, waiting longer each time
  (:func:`giftcard.mail.outbox.retry_wait_s`), until GIFTCARD_MAIL_ATTEMPTS_MAX
  attempts were made; then `failed`, with the last reason;
- not to be sent any more (:class:`~giftcard.mail.messages.NotToBeSent`), or impossible
  to compose: `failed` at once.

A sender that dies between the server's acceptance and the record (a crash, kill -9)
leaves its claim to run out; another sender then sends the message again, with the same
Message-ID: at most one duplicate, never a lost email.

:func:`run` is the loop, in every `giftcard serve` worker process and in `giftcard
worker`; :func:`deliver_due` is one pass, which tests call with a clock they control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.mail import outbox
from giftcard.mail.compose import HeaderRefused, compose
from giftcard.mail.messages import MessageHandler, NotToBeSent, OutboxMessage, handler_for
from giftcard.mail.outbox import MessageStatus
from giftcard.mail.transport import DeliveryFailed, Transport, transport_for
from giftcard.metrics import EMAIL_GAUGES_INTERVAL_S, EMAILS, EMAILS_FAILED, EMAILS_PENDING
from giftcard.services import Services

log = logging.getLogger(__name__)

# How often an idle sender looks for due messages (a message queued in this process
# wakes it at once; one queued elsewhere, or scheduled, waits at most this long).
POLL_INTERVAL_S = 1.0
# Messages one pass handles at most, so that the loop regularly refreshes the gauges
# and notices that it was asked to stop.
PASS_MESSAGES_MAX = 500


async def deliver_due(
    services: Services,
    *,
    transport: Transport | None = None,
    stop: asyncio.Event | None = None,
    messages_max: int = PASS_MESSAGES_MAX,
) -> int:
    """One pass: deliver the messages due now, up to `messages_max`; how many were sent.

    Stops early, handing back what it claimed but has not started, when `stop` is set."""
    transport = transport or transport_for(services.settings)
    settings = services.settings
    # Sending starts only while the claim has at least this long to run, so that a
    # message in hand is recorded before any other sender may take it over.
    time_needed = timedelta(seconds=settings.smtp_timeout_s)
    batch = max(1, settings.mail_claim_ttl_s // settings.smtp_timeout_s - 1)
    handled = sent = 0
    while handled < messages_max and not (stop and stop.is_set()):
        token, rows = await _claim(services, min(batch, messages_max - handled))
        if not rows:
            break
        for index, row in enumerate(rows):
            if (stop and stop.is_set()) or services.clock.now() + time_needed > row.claimed_until:
                await _release(services, rows[index:], token)
                return sent
            sent += await _deliver(services, transport, OutboxMessage.from_row(row), token)
            handled += 1
    return sent


async def _claim(services: Services, limit: int) -> tuple[str, Sequence[Row[Any]]]:
    now = services.clock.now()

    async def peek(connection: AsyncConnection) -> datetime | None:
        return await outbox.next_due_at(connection, now=now)

    # A read first: an idle sender must not take SQLite's write lock every second.
    due_at = await services.db.run(peek, write=False)
    if due_at is None or due_at > now:
        return "", []

    async def claim(connection: AsyncConnection) -> tuple[str, Sequence[Row[Any]]]:
        return await outbox.claim(
            connection, now=now, claim_ttl_s=services.settings.mail_claim_ttl_s, limit=limit
        )

    return await services.db.run(claim)


async def _release(services: Services, rows: Sequence[Row[Any]], token: str) -> None:
    async def release(connection: AsyncConnection) -> None:
        await outbox.release(connection, [row.id for row in rows], token)

    await services.db.run(release)


async def _deliver(
    services: Services, transport: Transport, message: OutboxMessage, token: str
) -> int:
    """Render, compose, hand over and record one claimed message; 1 if it was sent."""
    settings = services.settings
    if message.attempts > settings.mail_attempts_max:
        # Only a sender that died during each of its attempts leaves a message here.
        reason = f"no attempt finished: a sender stopped during each of {message.attempts - 1}"
        await _give_up(services, message, token, reason)
        return 0
    try:
        handler = handler_for(message.kind)
        async with services.db.transaction(write=False) as connection:
            content = await handler.render(connection, message, settings)
        email = compose(message, content, sender=settings.mail_from, date=services.clock.now())
    except (NotToBeSent, HeaderRefused) as error:
        await _give_up(services, message, token, str(error))
        return 0
    except Exception as error:
        # The message's words are not logged: they may hold a code or a link.
        log.exception("email could not be rendered", extra=_fields(message))
        await _attempt_failed(
            services, message, token, f"could not be rendered ({type(error).__name__})"
        )
        return 0
    try:
        await transport.send(email, outbox_id=message.id, now=services.clock.now())
    except DeliveryFailed as failure:
        await _attempt_failed(services, message, token, failure.reason)
        return 0
    await _sent(services, handler, message, token)
    return 1


async def _sent(
    services: Services, handler: MessageHandler, message: OutboxMessage, token: str
) -> None:
    now = services.clock.now()

    async def record(connection: AsyncConnection) -> bool:
        if not await outbox.mark_sent(connection, message.id, token, now=now):
            return False
        await handler.sent(connection, message, now)
        return True

    recorded = await services.db.run(record)
    EMAILS.labels(message.kind.value, "sent").inc()
    if recorded:
        log.info("email sent", extra=_fields(message))
    else:
        log.warning(
            "email sent after its claim ran out; another sender had it", extra=_fields(message)
        )


async def _attempt_failed(
    services: Services, message: OutboxMessage, token: str, reason: str
) -> None:
    """Retry later, or give up when this was the last attempt allowed."""
    settings = services.settings
    if message.attempts >= settings.mail_attempts_max:
        await _give_up(services, message, token, reason)
        return
    wait_s = outbox.retry_wait_s(message.attempts, base_s=settings.mail_retry_base_s)
    at = services.clock.now() + timedelta(seconds=wait_s)

    async def record(connection: AsyncConnection) -> bool:
        return await outbox.retry_later(connection, message.id, token, reason=reason, at=at)

    if await services.db.run(record):
        EMAILS.labels(message.kind.value, "retried").inc()
        log.warning(
            "email not delivered; will retry",
            extra={**_fields(message), "reason": reason, "next_attempt_at": at.isoformat()},
        )


async def _give_up(services: Services, message: OutboxMessage, token: str, reason: str) -> None:
    now = services.clock.now()

    async def record(connection: AsyncConnection) -> bool:
        if not await outbox.give_up(connection, message.id, token, reason=reason):
            return False
        await handler_for(message.kind).failed(connection, message, reason, now)
        return True

    if await services.db.run(record):
        EMAILS.labels(message.kind.value, "failed").inc()
        log.error("email given up", extra={**_fields(message), "reason": reason})


def _fields(message: OutboxMessage) -> dict[str, Any]:
    return {
        "outbox_id": message.id,
        "kind": message.kind.value,
        "message_id": message.message_id,
        "attempt": message.attempts,
    }


async def refresh_gauges(services: Services) -> None:
    """Count the waiting and the given-up messages for /metrics."""

    async def count(connection: AsyncConnection) -> dict[MessageStatus, int]:
        return await outbox.status_counts(connection)

    counts = await services.db.run(count, write=False)
    EMAILS_PENDING.set(counts[MessageStatus.PENDING])
    EMAILS_FAILED.set(counts[MessageStatus.FAILED])


async def run(
    services: Services,
    *,
    stop: asyncio.Event,
    transport: Transport | None = None,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> None:
    """Deliver due messages until `stop` is set: a pass, then a wait of `poll_interval_s`
    or until this process queues a message (``Services.mail_wakeup``). When `stop` is
    set mid-pass, the message in hand is finished and recorded first."""
    transport = transport or transport_for(services.settings)
    gauges_due = 0.0
    while not stop.is_set():
        services.mail_due.clear()
        try:
            await deliver_due(services, transport=transport, stop=stop)
            if time.monotonic() >= gauges_due:
                await refresh_gauges(services)
                gauges_due = time.monotonic() + EMAIL_GAUGES_INTERVAL_S
        except Exception:
            # The database away, say: the messages wait in the outbox meanwhile.
            log.exception("email delivery pass failed; will try again")
        await _first_of(stop, services.mail_due, timeout_s=poll_interval_s)


async def _first_of(*events: asyncio.Event, timeout_s: float) -> None:
    """Wait until one of `events` is set, or `timeout_s` passed."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for waiter in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
