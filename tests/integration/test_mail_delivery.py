"""Delivering the outbox to a real SMTP server (aiosmtpd), on SQLite and PostgreSQL,
with a clock the tests move: both parts and the fixed Message-ID arrive; a scheduled
message waits for its time; refusals and an unreachable server are retried with growing
waits, then the message is given up with its reason and counted; a message that must
not be sent, or cannot be composed, is given up at once; claims keep two senders apart.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.config import Settings, SmtpServer
from giftcard.db.tables import outbox_messages
from giftcard.mail import messages, outbox, sender
from giftcard.mail.messages import Content, NotToBeSent, OutboxMessage
from giftcard.mail.outbox import MessageKind
from giftcard.mail.test_message import queue_test_email
from giftcard.mail.transport import SmtpTransport
from giftcard.services import Services
from tests.mail_server import SmtpServer as RunningSmtpServer
from tests.mail_server import smtp_server
from tests.services import free_port

RECIPIENT = "ada@example.com"
RETRY_BASE_S = 30


@pytest.fixture
def smtp() -> Iterator[RunningSmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def mail(
    settings: Settings, clock: FrozenClock, smtp: RunningSmtpServer
) -> AsyncIterator[Services]:
    """Services whose emails go to the test's SMTP server."""
    services = Services.build(
        replace(
            settings,
            smtp_url=smtp.url,
            smtp_timeout_s=5,
            mail_claim_ttl_s=60,
            mail_retry_base_s=RETRY_BASE_S,
            mail_attempts_max=4,
        ),
        clock=clock,
    )
    yield services
    await services.close()


async def _row(services: Services, outbox_id: int) -> Any:
    async with services.db.transaction(write=False) as connection:
        result = await connection.execute(
            select(outbox_messages).where(outbox_messages.c.id == outbox_id)
        )
        return result.one()


async def _enqueue(services: Services, *, deliver_at: datetime | None = None) -> int:
    async def work(connection: AsyncConnection) -> int:
        return await outbox.enqueue(
            connection,
            kind=MessageKind.TEST,
            recipient=RECIPIENT,
            ref_id=None,
            now=services.clock.now(),
            deliver_at=deliver_at,
        )

    return await services.unit_of_work().run(work)


def _count(kind: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("giftcard_emails_total", {"kind": kind, "outcome": outcome})
    return value or 0.0


async def test_an_email_arrives_with_both_parts_its_message_id_and_date(
    mail: Services, smtp: RunningSmtpServer, clock: FrozenClock
) -> None:
    """Given a queued test email, one pass delivers it once: a text and an HTML part,
    the Message-ID fixed in the outbox, the Date of sending; the row is sent."""
    queued = await queue_test_email(mail.unit_of_work(), "Ada@Example.com")
    sent_before = _count("test", "sent")

    delivered = await sender.deliver_due(mail)
    again = await sender.deliver_due(mail)

    assert (delivered, again) == (1, 0)
    [received] = smtp.recorder.received
    assert received.recipients == [RECIPIENT]
    assert received.message_id == queued.message_id
    assert parsedate_to_datetime(str(received.message["Date"])) == clock.now().replace(
        microsecond=0
    )
    assert received.message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part for part in received.message.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "emails from this service reach you" in parts["text/plain"].get_content()
    assert "<html" in parts["text/html"].get_content()
    assert not received.over_tls  # a server that offers no STARTTLS is spoken to plainly
    row = await _row(mail, queued.id)
    assert (row.status, row.attempts, row.sent_at, row.claim_token) == (
        "sent",
        1,
        clock.now(),
        None,
    )
    assert _count("test", "sent") == sent_before + 1


async def test_a_scheduled_email_waits_for_its_time(
    mail: Services, smtp: RunningSmtpServer, clock: FrozenClock
) -> None:
    """Given a message to deliver tomorrow, nothing goes until the clock reaches it,
    and it goes then."""
    outbox_id = await _enqueue(mail, deliver_at=clock.now() + timedelta(days=1))

    assert await sender.deliver_due(mail) == 0
    clock.advance(timedelta(days=1) - timedelta(seconds=1))
    assert await sender.deliver_due(mail) == 0
    assert smtp.recorder.received == []

    clock.advance(timedelta(seconds=1))
    assert await sender.deliver_due(mail) == 1
    assert len(smtp.recorder.received) == 1
    assert (await _row(mail, outbox_id)).status == "sent"


async def test_refusals_and_an_unreachable_server_are_retried_then_the_email_is_failed(
    mail: Services, smtp: RunningSmtpServer, clock: FrozenClock
) -> None:
    """A 4xx answer, a 5xx answer and a refused connection are each retried after a
    doubling, jittered wait (nothing is tried before it); the fourth failure, the last
    attempt allowed, gives the message up with the reason, counted in the metrics."""
    outbox_id = await _enqueue(mail)
    retried, failed = _count("test", "retried"), _count("test", "failed")
    smtp.recorder.refuse_next("DATA", "451 4.3.0 Mailbox busy, try again later")
    smtp.recorder.refuse_next("RCPT", "550 5.1.1 No such user here")
    unreachable = SmtpTransport(SmtpServer("127.0.0.1", free_port(), False), timeout_s=5)

    async def attempt(transport: Any = None) -> Any:
        assert await sender.deliver_due(mail, transport=transport) == 0
        return await _row(mail, outbox_id)

    waits = []
    for number, (transport, reason) in enumerate(
        [
            (None, "451 4.3.0 Mailbox busy"),
            (None, "550 5.1.1 No such user"),
            (unreachable, "could not deliver through smtp://127.0.0.1"),
        ],
        start=1,
    ):
        row = await attempt(transport)
        assert (row.status, row.attempts) == ("pending", number)
        assert reason in row.last_error
        wait = row.next_attempt_at - clock.now()
        ceiling = timedelta(seconds=RETRY_BASE_S * 2 ** (number - 1))
        assert ceiling / 2 <= wait <= ceiling, (number, wait)
        waits.append(wait)
        clock.advance(wait - timedelta(seconds=1))
        assert await sender.deliver_due(mail, transport=transport) == 0  # not yet
        assert (await _row(mail, outbox_id)).attempts == number
        clock.advance(timedelta(seconds=1))
    assert row.last_error.endswith("connection refused")

    row = await attempt(unreachable)

    assert (row.status, row.attempts) == ("failed", 4)
    assert "could not deliver through smtp://127.0.0.1" in row.last_error
    assert smtp.recorder.received == []
    assert _count("test", "retried") == retried + 3
    assert _count("test", "failed") == failed + 1
    await sender.refresh_gauges(mail)
    assert REGISTRY.get_sample_value("giftcard_emails_failed") == 1
    assert REGISTRY.get_sample_value("giftcard_emails_pending") == 0
    clock.advance(timedelta(days=1))
    assert await sender.deliver_due(mail) == 0  # given up for good


class _Refusing:
    """A handler whose message must no longer go out (a reset link already used)."""

    failures: list[str]

    def __init__(self) -> None:
        self.failures = []

    async def render(self, connection: Any, message: OutboxMessage, settings: Any) -> Content:
        raise NotToBeSent("the link was used already")

    async def sent(self, connection: Any, message: OutboxMessage, now: datetime) -> None:
        raise AssertionError("never sent")

    async def failed(
        self, connection: Any, message: OutboxMessage, reason: str, now: datetime
    ) -> None:
        self.failures.append(reason)


class _Injecting(_Refusing):
    """A handler whose subject carries a line break and a header after it."""

    async def render(self, connection: Any, message: OutboxMessage, settings: Any) -> Content:
        return Content(subject="Hello\r\nBcc: thief@example.com", text="hi", html="<p>hi</p>")


REFUSING = _Refusing()
INJECTING = _Injecting()


@pytest.mark.parametrize(
    ("handler", "reason"),
    [("REFUSING", "the link was used already"), ("INJECTING", "line break")],
)
async def test_a_message_not_to_be_sent_or_not_composable_is_failed_at_once(
    mail: Services,
    smtp: RunningSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    handler: str,
    reason: str,
) -> None:
    """NotToBeSent from the renderer, or a header that would carry a line break, gives
    the message up on its first attempt, telling its handler; nothing reaches the
    server (no Bcc header smuggled through a subject)."""
    monkeypatch.setitem(messages._HANDLERS, MessageKind.TEST, (__name__, handler))
    outbox_id = await _enqueue(mail)
    told = globals()[handler].failures
    told.clear()

    assert await sender.deliver_due(mail) == 0

    row = await _row(mail, outbox_id)
    assert (row.status, row.attempts) == ("failed", 1)
    assert reason in row.last_error
    assert len(told) == 1
    assert reason in told[0]
    assert smtp.recorder.received == []


async def test_a_claim_keeps_other_senders_off_until_it_runs_out(
    mail: Services, smtp: RunningSmtpServer, clock: FrozenClock
) -> None:
    """Messages claimed by one sender are not claimed by another while the claim lasts;
    once it ran out another takes them, and the first sender's late record is refused
    (it cannot mark sent what the other is sending now)."""
    ids = [await _enqueue(mail) for _ in range(3)]
    ttl_s = mail.settings.mail_claim_ttl_s

    async def claim(connection: AsyncConnection) -> tuple[str, Any]:
        return await outbox.claim(connection, now=clock.now(), claim_ttl_s=ttl_s, limit=2)

    first_token, first = await mail.db.run(claim)
    _, second = await mail.db.run(claim)
    _, third = await mail.db.run(claim)

    assert [row.id for row in first] == ids[:2]
    assert [row.id for row in second] == ids[2:]
    assert third == []

    clock.advance(timedelta(seconds=ttl_s + 1))
    taken_token, taken = await mail.db.run(claim)
    assert [row.id for row in taken] == ids[:2]
    assert [row.attempts for row in taken] == [2, 2]

    async def late_mark(connection: AsyncConnection) -> bool:
        return await outbox.mark_sent(connection, ids[0], first_token, now=clock.now())

    async def own_mark(connection: AsyncConnection) -> bool:
        return await outbox.mark_sent(connection, ids[0], taken_token, now=clock.now())

    assert await mail.db.run(late_mark) is False
    assert (await _row(mail, ids[0])).status == "pending"
    assert await mail.db.run(own_mark) is True
    assert (await _row(mail, ids[0])).status == "sent"


async def test_a_stopping_sender_hands_back_what_it_has_not_started(
    mail: Services, smtp: RunningSmtpServer, clock: FrozenClock
) -> None:
    """When asked to stop, a sender finishes the message in hand and hands back the
    rest of its claim, attempts uncounted, for another sender to take at once."""
    ids = [await _enqueue(mail) for _ in range(3)]
    stop = asyncio.Event()
    smtp.recorder.on_accept = lambda _received: stop.set()

    assert await sender.deliver_due(mail, stop=stop) == 1

    rows = [await _row(mail, outbox_id) for outbox_id in ids]
    assert [(row.status, row.attempts, row.claim_token) for row in rows] == [
        ("sent", 1, None),
        ("pending", 0, None),
        ("pending", 0, None),
    ]
    assert await sender.deliver_due(mail) == 2


async def test_a_message_queued_in_this_process_wakes_its_sender_at_once(
    mail: Services, smtp: RunningSmtpServer
) -> None:
    """Given a running sender that would look again only in a minute, a unit of work that
    queues a message wakes it once it committed (no use case has to ask): the email is
    delivered within seconds; asked to stop, the sender ends at once."""
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(mail, stop=stop, poll_interval_s=60))
    await asyncio.sleep(0.2)  # its first pass found nothing; it waits now
    uow = mail.unit_of_work()

    async def work(connection: AsyncConnection) -> int:
        return await outbox.enqueue(
            connection, kind=MessageKind.TEST, recipient=RECIPIENT, ref_id=None, now=uow.clock.now()
        )

    await uow.run(work)
    for _ in range(100):
        if smtp.recorder.received:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, timeout=5)

    assert len(smtp.recorder.received) == 1


async def test_metrics_show_emails_by_kind_and_outcome(
    mail: Services, smtp: RunningSmtpServer
) -> None:
    """/metrics carries the delivery counter and the outbox gauges."""
    await queue_test_email(mail.unit_of_work(), RECIPIENT)
    await sender.deliver_due(mail)
    await sender.refresh_gauges(mail)
    transport = httpx.ASGITransport(app=create_app(services=mail))

    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        body = (await http.get("/metrics")).text

    assert 'giftcard_emails_total{kind="test",outcome="sent"}' in body
    assert "giftcard_emails_pending 0.0" in body
    assert "giftcard_emails_failed 0.0" in body


async def test_a_message_whose_every_attempt_died_with_its_sender_is_given_up(
    mail: Services, smtp: RunningSmtpServer, clock: FrozenClock
) -> None:
    """A message whose sending killed its sender each time (claimed, never recorded)
    is not tried forever: the claim after the last attempt allowed gives it up."""
    outbox_id = await _enqueue(mail)
    ttl_s = mail.settings.mail_claim_ttl_s

    async def claim_and_die(connection: AsyncConnection) -> tuple[str, Any]:
        return await outbox.claim(connection, now=clock.now(), claim_ttl_s=ttl_s, limit=1)

    for _ in range(mail.settings.mail_attempts_max):
        _, [row] = await mail.db.run(claim_and_die)
        clock.advance(timedelta(seconds=ttl_s + 1))

    assert await sender.deliver_due(mail) == 0

    row = await _row(mail, outbox_id)
    assert row.status == "failed"
    assert row.last_error == "no attempt finished: a sender stopped during each of 4"
    assert smtp.recorder.received == []


def test_retry_waits_double_up_to_an_hour_with_jitter_between_half_and_all() -> None:
    rng = random.Random(7)
    for attempts, ceiling_s in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (60, 3600)]:
        waits = [outbox.retry_wait_s(attempts, base_s=30, rng=rng) for _ in range(200)]
        assert ceiling_s / 2 <= min(waits) < max(waits) <= ceiling_s, attempts
