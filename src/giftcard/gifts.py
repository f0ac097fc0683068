"""E-gift cards: a digital card bought for someone, delivered by email, resent on request.

Buying a gift is one transaction: the card is issued and funded, the gift is written, and
its email is put in the outbox, so there is never an email without its card nor a card
without its email. The code is not stored: it is derived from the gift's seed with the
server's secret key (:func:`giftcard.codes.derive_code`) when the email is rendered, so a
resent email carries the same code and the database alone reveals none.

A gift's status is `scheduled` (its email waits to be sent), `sent` or `failed` (the
sender gave up), as stored, and `redeemed` once its card is, whatever the email did.

Decisions a reader may look for:

* Who may see a gift: staff, the store's API keys, and the customer who bought it. To any
  other customer it does not exist (`not_found`, not `forbidden`). The reason of a failed
  delivery (`last_error`, words from a mail server) is for staff and API keys only.
* A resend sends a new email (a new Message-ID) with the same code, now. It is refused
  with `invalid_state` while the gift's email is still on its way (`scheduled`), and when
  the card can no longer be redeemed by the recipient: redeemed, cancelled, expired, or
  frozen (support lifts the hold first, then resends).
* A purchaser may buy a gift in another store than their own: the store took payment and
  the recipient, not the buyer, redeems it.
* `deliver_at` may be up to a minute in the past (clocks differ); such a gift is sent at
  once. It may be at most a year ahead.
"""

from __future__ import annotations

import enum
import math
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from babel.dates import format_date
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, Row, and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, cards, codes, ids
from giftcard.cards import CardKind, CardState, IssueRequest
from giftcard.clock import Clock
from giftcard.config import Settings
from giftcard.customers import mask_email
from giftcard.db.engine import Database
from giftcard.db.tables import cards as cards_table
from giftcard.db.tables import customers, gifts, outbox_messages
from giftcard.errors import ErrorCode, GiftcardError, TooManyAttempts, validation_error
from giftcard.mail import outbox
from giftcard.mail.compose import single_line
from giftcard.mail.messages import (
    Content,
    MessageHandler,
    NotToBeSent,
    OutboxMessage,
    render_pair,
)
from giftcard.money import REGIONS, Region, check_gift_amount, format_minor
from giftcard.money import region as find_region
from giftcard.unit_of_work import UnitOfWork

NAME_LENGTH_MAX = 200
MESSAGE_LENGTH_MAX = 1000
DELIVER_AT_INPUT_LENGTH_MAX = 64
EMAIL_INPUT_LENGTH_MAX = 254
# How far in the past a delivery time may be (the caller's clock runs behind ours).
DELIVER_AT_PAST_GRACE = timedelta(minutes=1)
DELIVER_AT_AHEAD_MAX = timedelta(days=365)
# A buyer may resend a gift's email once this long after it last went out: a resend is
# for an email lost or deleted, and the recipient's mailbox is not the buyer's to fill.
# Support and admins, who answer the recipient's own request, are not held to it.
BUYER_RESEND_INTERVAL = timedelta(minutes=15)
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100

# Characters that can break a line or reorder what a reader sees, refused in names.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


class GiftStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    SENT = "sent"
    FAILED = "failed"
    # Never stored: how a gift whose card was redeemed reads.
    REDEEMED = "redeemed"


@dataclass(frozen=True)
class GiftRequest:
    """A gift as asked for, before any check: amounts in minor units."""

    amount: int
    region: str
    recipient_email: str
    sender_name: str
    recipient_name: str | None = None
    message: str | None = None
    deliver_at: datetime | None = None
    purchaser_customer_id: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class CheckedGift:
    amount: int
    region: Region
    recipient_email: str
    sender_name: str
    recipient_name: str | None
    message: str | None
    deliver_at: datetime
    purchaser_customer_id: int | None


@dataclass(frozen=True)
class Gift:
    """A gift as its buyer, staff and the store see it: never its code."""

    id: int
    card_id: int
    card_serial: str
    card_last4: str
    card_state: CardState
    amount: int
    currency: str
    region: str
    recipient_email: str
    recipient_name: str | None
    sender_name: str
    message: str | None
    deliver_at: datetime
    purchaser_customer_id: int | None
    status: GiftStatus
    sent_at: datetime | None
    attempts: int
    last_error: str | None
    created_at: datetime

    @property
    def public_id(self) -> str:
        return ids.format_id(ids.GIFT, self.id)

    @property
    def can_resend(self) -> bool:
        return self.status in (GiftStatus.SENT, GiftStatus.FAILED) and (
            self.card_state is CardState.ACTIVE
        )


@dataclass(frozen=True)
class Page:
    items: list[Gift]
    has_more: bool


# --- checking a request (pure) ------------------------------------------------------


def parse_deliver_at(text: str, *, param: str = "deliver_at") -> datetime:
    """An ISO 8601 timestamp with its time zone (``2026-12-24T09:00:00+01:00``)."""
    example = "like 2026-12-24T09:00:00+01:00 or 2026-12-24T08:00:00Z"
    if not isinstance(text, str) or len(text) > DELIVER_AT_INPUT_LENGTH_MAX:
        raise validation_error(
            f"Write the delivery time as an ISO 8601 timestamp, {example}.", param
        )
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise validation_error(
            f"Write the delivery time as an ISO 8601 timestamp, {example}.", param
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise validation_error(
            f"Add a time zone to the delivery time (Z or an offset such as +01:00), {example}.",
            param,
        )
    return moment


def check_name(value: str | None, param: str, *, required: bool) -> str | None:
    """A person's name for an email: 1 to 200 characters on one line."""
    name = value.strip() if isinstance(value, str) else None
    if not name:
        if required:
            raise validation_error("Enter a name.", param)
        return None
    if len(name) > NAME_LENGTH_MAX:
        raise validation_error(f"A name has at most {NAME_LENGTH_MAX} characters.", param)
    if any(_refused_in_name(character) for character in name):
        raise validation_error(
            "A name is one line of text, without line breaks or control characters.", param
        )
    return name


def _refused_in_name(character: str) -> bool:
    return character in _BIDI_CONTROLS or unicodedata.category(character) in _REFUSED_CATEGORIES


def check_message(value: str | None, param: str = "message") -> str | None:
    """The sender's message: line breaks kept (as ``\\n``), at most 1,000 characters."""
    if value is None:
        return None
    message = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not message:
        return None
    if len(message) > MESSAGE_LENGTH_MAX:
        raise validation_error(
            f"The message has {len(message):,} characters; at most {MESSAGE_LENGTH_MAX:,} fit.",
            param,
        )
    if any(character not in "\n\t" and _refused_in_name(character) for character in message):
        raise validation_error("The message holds control characters; remove them.", param)
    return message


def check_recipient_email(value: str, param: str = "recipient_email") -> str:
    """The address in the form every mail server takes: a domain in ASCII (IDNA), and a
    local part in ASCII too, since not every server on the way speaks SMTPUTF8."""
    if not isinstance(value, str) or len(value) > EMAIL_INPUT_LENGTH_MAX:
        raise validation_error("Enter the recipient's email address.", param)
    try:
        checked = validate_email(value.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise validation_error(f"Enter a valid email address. {error}", param) from None
    return str(checked.ascii_email or checked.normalized)


def check_request(request: GiftRequest, now: datetime) -> CheckedGift:
    """The request, checked and normalized, or a `validation_error` naming the field."""
    store = find_region(request.region)
    if request.currency is not None and request.currency != store.currency:
        raise GiftcardError(
            ErrorCode.CURRENCY_MISMATCH,
            f"Gift cards of the {store.store_name} are in {store.currency}, not "
            f"{str(request.currency)[:8]}.",
            param="currency",
        )
    check_gift_amount(request.amount, store)
    deliver_at = request.deliver_at or now
    if deliver_at.tzinfo is None:
        raise validation_error("Add a time zone to the delivery time.", "deliver_at")
    if deliver_at < now - DELIVER_AT_PAST_GRACE:
        raise validation_error(
            "The delivery time is in the past. Leave it out to send the gift now.", "deliver_at"
        )
    if deliver_at > now + DELIVER_AT_AHEAD_MAX:
        raise validation_error("A gift can be scheduled at most a year ahead.", "deliver_at")
    return CheckedGift(
        amount=request.amount,
        region=store,
        recipient_email=check_recipient_email(request.recipient_email),
        sender_name=check_name(request.sender_name, "sender_name", required=True) or "",
        recipient_name=check_name(request.recipient_name, "recipient_name", required=False),
        message=check_message(request.message),
        deliver_at=deliver_at,
        purchaser_customer_id=request.purchaser_customer_id,
    )


# --- reading gifts ------------------------------------------------------------------


def _latest_message() -> Any:
    """The gift's newest email: its attempts and last error tell how delivery goes."""
    return (
        select(outbox_messages.c.id)
        .where(
            outbox_messages.c.kind == outbox.MessageKind.GIFT.value,
            outbox_messages.c.ref_id == gifts.c.id,
        )
        .order_by(outbox_messages.c.id.desc())
        .limit(1)
        .correlate(gifts)
        .scalar_subquery()
    )


def _gift_query() -> Any:
    latest = outbox_messages.alias("latest")
    return select(
        gifts,
        cards_table.c.serial.label("card_serial"),
        cards_table.c.last4.label("card_last4"),
        cards_table.c.state.label("card_state"),
        cards_table.c.expires_at.label("card_expires_at"),
        latest.c.attempts.label("message_attempts"),
        latest.c.last_error.label("message_last_error"),
    ).select_from(
        gifts.join(cards_table, cards_table.c.id == gifts.c.card_id).outerjoin(
            latest, and_(latest.c.id == _latest_message())
        )
    )


def gift_from_row(row: Row[Any], now: datetime) -> Gift:
    card_state = cards.effective_state(row.card_state, row.card_expires_at, now)
    status = GiftStatus.REDEEMED if card_state is CardState.REDEEMED else GiftStatus(row.status)
    return Gift(
        id=row.id,
        card_id=row.card_id,
        card_serial=row.card_serial,
        card_last4=row.card_last4,
        card_state=card_state,
        amount=row.amount,
        currency=row.currency,
        region=row.region,
        recipient_email=row.recipient_email,
        recipient_name=row.recipient_name,
        sender_name=row.sender_name,
        message=row.message,
        deliver_at=row.deliver_at,
        purchaser_customer_id=row.purchaser_customer_id,
        status=status,
        sent_at=row.sent_at,
        attempts=row.message_attempts or 0,
        last_error=row.last_error or row.message_last_error,
        created_at=row.created_at,
    )


def _no_gift(gift_id: int) -> GiftcardError:
    return GiftcardError(ErrorCode.NOT_FOUND, f"No gift {ids.format_id(ids.GIFT, gift_id)}.")


async def _load(
    connection: AsyncConnection, gift_id: int, now: datetime, *, viewer: int | None
) -> Gift:
    query = _gift_query().where(gifts.c.id == gift_id)
    if viewer is not None:
        query = query.where(gifts.c.purchaser_customer_id == viewer)
    row = (await connection.execute(query)).one_or_none()
    if row is None:
        raise _no_gift(gift_id)
    return gift_from_row(row, now)


async def get(db: Database, gift_id: int, *, clock: Clock, viewer: int | None = None) -> Gift:
    """The gift `gift_id`; when `viewer` (a customer id) is given, only if they bought it."""
    async with db.transaction(write=False) as connection:
        return await _load(connection, gift_id, clock.now(), viewer=viewer)


async def list_for_purchaser(
    db: Database,
    customer_id: int,
    *,
    clock: Clock,
    limit: int = PAGE_SIZE_DEFAULT,
    starting_after: int | None = None,
) -> Page:
    """The gifts a customer bought, newest first, a page at a time."""
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise ValueError("limit out of range")
    query = (
        _gift_query()
        .where(gifts.c.purchaser_customer_id == customer_id)
        .order_by(gifts.c.id.desc())
        .limit(limit + 1)
    )
    if starting_after is not None:
        # Ids only go up, so "older than the cursor" needs no look-up of the cursor: an
        # id from elsewhere just starts the page there and reveals nothing.
        query = query.where(gifts.c.id < starting_after)
    async with db.transaction(write=False) as connection:
        rows = (await connection.execute(query)).all()
    now = clock.now()
    return Page([gift_from_row(row, now) for row in rows[:limit]], len(rows) > limit)


# --- buying and resending -----------------------------------------------------------


async def create(
    uow: UnitOfWork,
    request: GiftRequest,
    *,
    secret_key: bytes,
    actor: str,
    audit_actor: audit.Actor | None = None,
) -> Gift:
    """Issue a funded digital card for the recipient and queue its email, in one
    transaction. With `audit_actor`, the purchase is recorded in the audit log, the
    recipient's address masked."""
    now = uow.clock.now()
    checked = check_request(request, now)
    # Drawn once: a retried transaction issues the same code.
    seed = codes.new_seed()
    code = codes.derive_code(secret_key, seed)
    issue_request = IssueRequest(
        amount=checked.amount, region=checked.region, kind=CardKind.DIGITAL
    )

    async def work(connection: AsyncConnection) -> Gift:
        if checked.purchaser_customer_id is not None:
            await _require_customer(connection, checked.purchaser_customer_id)
        issued = await cards.issue_with_code(
            connection, issue_request, code, secret_key=secret_key, actor=actor, now=now
        )
        gift_id = (
            await connection.execute(
                insert(gifts)
                .values(
                    card_id=issued.card.id,
                    code_seed=seed,
                    amount=checked.amount,
                    currency=checked.region.currency,
                    region=checked.region.code,
                    recipient_email=checked.recipient_email,
                    recipient_name=checked.recipient_name,
                    sender_name=checked.sender_name,
                    message=checked.message,
                    deliver_at=checked.deliver_at,
                    purchaser_customer_id=checked.purchaser_customer_id,
                    status=GiftStatus.SCHEDULED.value,
                    actor=actor,
                    created_at=now,
                )
                .returning(gifts.c.id)
            )
        ).scalar_one()
        await outbox.enqueue(
            connection,
            kind=outbox.MessageKind.GIFT,
            recipient=checked.recipient_email,
            ref_id=gift_id,
            now=now,
            deliver_at=checked.deliver_at,
        )
        await cards.record_event(connection, issued.card.id, "gift_queued", actor=actor, now=now)
        if audit_actor is not None:
            await audit.record(
                connection,
                audit_actor,
                audit.Action(
                    "gift.create",
                    target=ids.format_id(ids.GIFT, gift_id),
                    detail={
                        "amount": checked.amount,
                        "currency": checked.region.currency,
                        "recipient": mask_email(checked.recipient_email),
                        "card": ids.format_id(ids.CARD, issued.card.id),
                    },
                ),
                now=now,
            )
        return await _load(connection, gift_id, now, viewer=None)

    return await uow.run(work)


async def _require_customer(connection: AsyncConnection, customer_id: int) -> None:
    found = (
        await connection.execute(select(customers.c.id).where(customers.c.id == customer_id))
    ).scalar_one_or_none()
    if found is None:
        raise GiftcardError(
            ErrorCode.NOT_FOUND,
            f"No customer {ids.format_id(ids.CUSTOMER, customer_id)}.",
            param="purchaser_customer_id",
        )


def _resent_too_soon(may_from: datetime, now: datetime) -> TooManyAttempts:
    wait_s = max(1, math.ceil((may_from - now).total_seconds()))
    minutes = max(1, -(-wait_s // 60))
    return TooManyAttempts(
        "The gift's email went out a moment ago; you can send it again in "
        f"{minutes} minute{'s' if minutes != 1 else ''}. Ask the recipient to look in their "
        "spam folder meanwhile.",
        retry_after_s=wait_s,
    )


_NOT_RESENDABLE = {
    CardState.REDEEMED: "The gift card was redeemed already, so there is nothing to resend.",
    CardState.CANCELLED: "The gift card was cancelled; its code no longer works.",
    CardState.EXPIRED: "The gift card has expired; its code no longer works.",
    CardState.FROZEN: "The gift card is on hold. Lift the hold first, then resend.",
}


async def resend(
    uow: UnitOfWork,
    gift_id: int,
    *,
    actor: str,
    viewer: int | None = None,
    on_resent: Callable[[AsyncConnection, Gift], Awaitable[None]] | None = None,
) -> Gift:
    """Send the gift's email again now, with the same code and a new Message-ID. When
    `viewer` (a customer id) is given, only a gift they bought can be resent.
    `on_resent` runs in the same transaction (a staff resend's audit entry)."""
    now = uow.clock.now()

    async def work(connection: AsyncConnection) -> Gift:
        gift = await _load(connection, gift_id, now, viewer=viewer)
        refusal = _NOT_RESENDABLE.get(gift.card_state)
        if refusal is not None:
            raise GiftcardError(ErrorCode.INVALID_STATE, refusal)
        buyer_may_from = (
            None if viewer is None or gift.sent_at is None else gift.sent_at + BUYER_RESEND_INTERVAL
        )
        if buyer_may_from is not None and buyer_may_from > now:
            raise _resent_too_soon(buyer_may_from, now)
        guards: list[ColumnElement[bool]] = [
            gifts.c.status.in_([GiftStatus.SENT.value, GiftStatus.FAILED.value])
        ]
        if viewer is not None:
            guards.append(
                or_(gifts.c.sent_at.is_(None), gifts.c.sent_at <= now - BUYER_RESEND_INTERVAL)
            )
        # The guard settles two resends at once: one turns the gift back to scheduled,
        # the other finds it scheduled and is refused.
        reset = await connection.execute(
            update(gifts)
            .where(gifts.c.id == gift_id, *guards)
            .values(status=GiftStatus.SCHEDULED.value, deliver_at=now, last_error=None)
        )
        if reset.rowcount != 1:
            raise GiftcardError(
                ErrorCode.INVALID_STATE,
                "The gift's email is on its way already; it can be resent once it was sent "
                "or failed.",
            )
        await outbox.enqueue(
            connection,
            kind=outbox.MessageKind.GIFT,
            recipient=gift.recipient_email,
            ref_id=gift_id,
            now=now,
        )
        await cards.record_event(connection, gift.card_id, "gift_resent", actor=actor, now=now)
        resent = await _load(connection, gift_id, now, viewer=None)
        if on_resent is not None:
            await on_resent(connection, resent)
        return resent

    return await uow.run(work)


@dataclass(frozen=True)
class Correction:
    """A gift after its recipient was corrected: `rekeyed` when the card's code changed
    because the first address had been sent the old one."""

    gift: Gift
    previous_email: str
    rekeyed: bool


_NOT_CORRECTABLE = {
    CardState.REDEEMED: "The gift card was redeemed already; its recipient can no longer be "
    "changed. Look up the card to see which account it went to.",
    CardState.CANCELLED: "The gift card was cancelled; there is nothing to send.",
    CardState.EXPIRED: "The gift card has expired; there is nothing to send.",
    CardState.FROZEN: "The gift card is on hold. Lift the hold first, then correct the recipient.",
}


async def correct_recipient(
    uow: UnitOfWork,
    gift_id: int,
    *,
    recipient_email: str,
    recipient_name: str | None,
    actor: str,
    secret_key: bytes,
    on_corrected: Callable[[AsyncConnection, Correction], Awaitable[None]] | None = None,
) -> Correction:
    """Send a gift to another address than the one it was bought for.

    A gift whose email never went out just gets the new address: its waiting email goes
    there, at the time it was scheduled for (a failed one is queued again, now). A gift
    whose email went out but whose card is unredeemed was seen by the wrong address, so
    its code changes: the card is re-keyed (a new seed, a new code hash and last four;
    same card, serial and value, so no money moves and the ledger is untouched), the old
    code stops working in the same transaction, and the new code goes to the new
    address now. A redeemed, cancelled, expired or frozen card is `invalid_state`.

    `on_corrected` runs in the same transaction (the support door records its audit
    entry there)."""
    email = check_recipient_email(recipient_email)
    name = check_name(recipient_name, "recipient_name", required=False)
    now = uow.clock.now()
    # Drawn once: a retried transaction writes the same new code.
    seed = codes.new_seed()
    new_code = codes.derive_code(secret_key, seed)

    async def work(connection: AsyncConnection) -> Correction:
        # Two corrections at once take turns on the gift's row (a SQLite write
        # transaction holds the whole database already): the second sees the first's
        # address and code, so the last address named gets the last code.
        await connection.execute(select(gifts.c.id).where(gifts.c.id == gift_id).with_for_update())
        gift = await _load(connection, gift_id, now, viewer=None)
        refusal = _NOT_CORRECTABLE.get(gift.card_state)
        if refusal is not None:
            raise GiftcardError(ErrorCode.INVALID_STATE, refusal)
        if email.lower() == gift.recipient_email.lower():
            raise validation_error(
                "This is the address the gift already goes to; enter the corrected one.",
                "recipient_email",
            )
        waiting = await _waiting_messages(connection, gift_id, now)
        rekey = gift.sent_at is not None
        if rekey:
            # The guard settles a race with a redemption of the old code: whichever
            # changes the card first wins, and the other finds it changed.
            rekeyed = await connection.execute(
                update(cards_table)
                .where(
                    cards_table.c.id == gift.card_id,
                    cards_table.c.state == CardState.ACTIVE.value,
                )
                .values(
                    code_hash=codes.code_hash(secret_key, new_code),
                    last4=codes.code_last4(new_code),
                )
            )
            if rekeyed.rowcount != 1:
                raise GiftcardError(
                    ErrorCode.INVALID_STATE,
                    "The gift card changed a moment ago (redeemed or put on hold); look it "
                    "up again.",
                )
        values: dict[str, Any] = {"recipient_email": email, "recipient_name": name}
        if rekey:
            values.update(code_seed=seed)
        if rekey or gift.status is GiftStatus.FAILED:
            values.update(status=GiftStatus.SCHEDULED.value, last_error=None)
            if not waiting:
                values.update(deliver_at=now)
        await connection.execute(update(gifts).where(gifts.c.id == gift_id).values(**values))
        if waiting:
            await connection.execute(
                update(outbox_messages)
                .where(outbox_messages.c.id.in_(waiting))
                .values(recipient=email)
            )
        elif rekey or gift.status is GiftStatus.FAILED:
            await outbox.enqueue(
                connection,
                kind=outbox.MessageKind.GIFT,
                recipient=email,
                ref_id=gift_id,
                now=now,
            )
        await cards.record_event(
            connection,
            gift.card_id,
            "gift_rekeyed" if rekey else "gift_recipient_corrected",
            actor=actor,
            now=now,
        )
        correction = Correction(
            gift=await _load(connection, gift_id, now, viewer=None),
            previous_email=gift.recipient_email,
            rekeyed=rekey,
        )
        if on_corrected is not None:
            await on_corrected(connection, correction)
        return correction

    return await uow.run(work)


async def _waiting_messages(connection: AsyncConnection, gift_id: int, now: datetime) -> list[int]:
    """The gift's emails still to be sent; `invalid_state` if a sender holds one now (it
    may be rendering it for the old address this very moment)."""
    rows = (
        await connection.execute(
            select(outbox_messages.c.id, outbox_messages.c.claimed_until).where(
                outbox_messages.c.kind == outbox.MessageKind.GIFT.value,
                outbox_messages.c.ref_id == gift_id,
                outbox_messages.c.status == outbox.MessageStatus.PENDING.value,
            )
        )
    ).all()
    if any(row.claimed_until is not None and row.claimed_until >= now for row in rows):
        raise GiftcardError(
            ErrorCode.INVALID_STATE,
            "The gift's email is being sent right now; try again in a minute.",
        )
    return [row.id for row in rows]


# --- the email ----------------------------------------------------------------------


def redeem_link(settings: Settings, code: str) -> str:
    return f"{settings.public_url}/redeem?code={codes.format_code(code)}"


def subject(sender_name: str, amount: str) -> str:
    return f"{sender_name} sent you a {amount} gift card"


class GiftEmail:
    """The gift's email, and what its delivery changes on the gift."""

    async def render(
        self, connection: AsyncConnection, message: OutboxMessage, settings: Settings
    ) -> Content:
        row = await _email_row(connection, message)
        # A card cancelled, frozen or redeemed before its email left is not announced:
        # its code would not work (support resends once a hold is lifted).
        if row.card_state != CardState.ACTIVE.value:
            raise NotToBeSent(f"the gift card is {row.card_state}")
        store = REGIONS[row.region]
        code = codes.derive_code(settings.secret_key, row.code_seed)
        amount = format_minor(row.amount, row.currency, store.locale)
        context = {
            "amount": amount,
            "sender_name": row.sender_name,
            "recipient_name": row.recipient_name,
            "message_lines": row.message.split("\n") if row.message else [],
            "code": codes.format_code(code),
            "redeem_url": redeem_link(settings, code),
            "store_name": store.store_name,
            "expires_on": None
            if row.card_expires_at is None
            else format_date(row.card_expires_at, format="long", locale=store.locale),
        }
        text, html = render_pair("gift", **context)
        return Content(
            subject=single_line(subject(row.sender_name, amount), what="the subject"),
            text=text,
            html=html,
        )

    async def sent(
        self, connection: AsyncConnection, message: OutboxMessage, now: datetime
    ) -> None:
        await connection.execute(
            update(gifts)
            .where(gifts.c.id == message.ref_id)
            .values(status=GiftStatus.SENT.value, sent_at=now, last_error=None)
        )

    async def failed(
        self, connection: AsyncConnection, message: OutboxMessage, reason: str, now: datetime
    ) -> None:
        await connection.execute(
            update(gifts)
            .where(gifts.c.id == message.ref_id)
            .values(status=GiftStatus.FAILED.value, last_error=reason)
        )


async def _email_row(connection: AsyncConnection, message: OutboxMessage) -> Row[Any]:
    row = (
        await connection.execute(
            select(
                gifts,
                cards_table.c.state.label("card_state"),
                cards_table.c.expires_at.label("card_expires_at"),
            )
            .select_from(gifts.join(cards_table, cards_table.c.id == gifts.c.card_id))
            .where(gifts.c.id == message.ref_id)
        )
    ).one_or_none()
    if row is None:
        raise NotToBeSent("the gift no longer exists")
    return row


GIFT_EMAIL: MessageHandler = GiftEmail()

__all__ = [
    "GIFT_EMAIL",
    "CheckedGift",
    "Correction",
    "Gift",
    "GiftRequest",
    "GiftStatus",
    "Page",
    "check_request",
    "correct_recipient",
    "create",
    "get",
    "list_for_purchaser",
    "parse_deliver_at",
    "resend",
]
