"""Support's card use cases: look a card up (by its code, serial, last four within a
customer's cards, or id) and see where its value went; freeze, unfreeze, cancel, replace.

Every one of them writes its audit entry (:mod:`giftcard.audit`) in the transaction of
what it did; a look-up that found nothing is recorded too, in a transaction that commits
before the refusal is raised. A code is never recorded: only its last four symbols.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, cards, codes, ids
from giftcard.cards import Card, CardState, Replacement
from giftcard.db.tables import (
    card_events,
    customers,
    gifts,
    journal_transactions,
    ledger_accounts,
    postings,
)
from giftcard.db.tables import cards as cards_table
from giftcard.errors import ErrorCode, GiftcardError, RedemptionError, validation_error
from giftcard.gifts import GiftStatus
from giftcard.redemption import Balance
from giftcard.unit_of_work import UnitOfWork

REASON_LENGTH_MAX = 500
NOTE_LENGTH_MAX = audit.NOTE_LENGTH_MAX
# Cards one look-up by last four returns: with 20 bits in four symbols, one customer
# holding more than a few cards that end alike is already far-fetched.
CARDS_PER_LOOKUP_MAX = 20
# Events shown per card, the newest ones (a card has a handful; freezing and unfreezing
# over and over is what could make more).
EVENTS_PER_CARD_MAX = 500
LAST4_LENGTH = 4


@dataclass(frozen=True)
class CardEvent:
    type: str
    actor: str
    reason: str | None
    created_at: datetime
    transaction_id: int | None
    customer_id: int | None
    related_card_id: int | None


@dataclass(frozen=True)
class RedeemedInto:
    """The customer whose balance a card's value went into, and that balance now."""

    customer_id: int
    email: str
    name: str | None
    balance: Balance


@dataclass(frozen=True)
class Credit:
    """The journal transaction that credited a card's value to its customer, and their
    available balance right after it."""

    transaction_id: int
    created_at: datetime
    amount: int
    currency: str
    balance_after: int


@dataclass(frozen=True)
class GiftRef:
    id: int
    recipient_email: str
    recipient_name: str | None
    status: GiftStatus


@dataclass(frozen=True)
class CardLookup:
    card: Card
    events: list[CardEvent]
    redeemed_into: RedeemedInto | None
    credit: Credit | None
    gift: GiftRef | None
    # The card this one was issued in place of, and the one issued in its place.
    replaces_card_id: int | None
    replaced_by_card_id: int | None


# --- look-ups ----------------------------------------------------------------------


async def lookup(
    uow: UnitOfWork,
    actor: audit.Actor,
    *,
    code: str | None = None,
    serial: str | None = None,
    last4: str | None = None,
    customer_id: int | None = None,
    card_id: int | None = None,
    secret_key: bytes = b"",
) -> list[CardLookup]:
    """The cards asked for, with where their value went; one audit entry per card shown.
    Exactly one way of asking: a code (found by its hash under `secret_key`), a serial,
    last four with a customer, or an id."""
    ways = [
        code is not None,
        serial is not None,
        last4 is not None or customer_id is not None,
        card_id is not None,
    ]
    if sum(ways) != 1:
        raise validation_error(
            "Ask in exactly one way: a code, a serial, or last4 with customer_id.", None
        )
    # Every check of the input comes before any database work.
    if code is not None:
        normalized = _checked_code(code)
        by = "code"
        digest = codes.code_hash(secret_key, normalized)
        where: Any = cards_table.c.code_hash == digest
        missing = f"code …{normalized[-LAST4_LENGTH:]}", "No card has this code. " + _CHECK_CODE
    elif serial is not None:
        checked = codes.normalize_serial(serial)
        by = "serial"
        where = cards_table.c.serial == checked
        missing = f"serial {checked}", f"No card has serial {checked}. " + _CHECK_SERIAL
    elif card_id is not None:
        by = "id"
        where = cards_table.c.id == card_id
        missing = ids.format_id(ids.CARD, card_id), cards.no_card(card_id).detail
    else:
        if customer_id is None:
            raise validation_error(
                "Give customer_id with last4: the last four are looked up among the cards "
                "that customer redeemed.",
                "customer_id",
            )
        ending = _checked_last4(last4)
        by = "last4"
        where = and_(
            cards_table.c.redeemed_customer_id == customer_id, cards_table.c.last4 == ending
        )
        missing = (
            ids.format_id(ids.CUSTOMER, customer_id),
            f"{ids.format_id(ids.CUSTOMER, customer_id)} redeemed no card whose code ends "
            f"{ending}. Check the last four with the customer, or look the card up by its "
            "code or serial.",
        )

    async def work(connection: AsyncConnection) -> list[CardLookup]:
        now = uow.clock.now()
        rows = (
            await connection.execute(
                select(cards_table)
                .where(where)
                .order_by(cards_table.c.id.desc())
                .limit(CARDS_PER_LOOKUP_MAX)
            )
        ).all()
        if not rows:
            target, _ = missing
            await audit.record(
                connection,
                actor,
                audit.Action("card.lookup", target=target, outcome="not_found", detail={"by": by}),
                now=now,
            )
            return []
        found = []
        for row in rows:
            found.append(await _look_at(connection, cards.card_from_row(row, now)))
            await audit.record(
                connection,
                actor,
                audit.Action(
                    "card.lookup",
                    target=ids.format_id(ids.CARD, row.id),
                    detail={"by": by},
                ),
                now=now,
            )
        return found

    found = await uow.run(work)
    if not found:
        # Raised after the transaction committed: the look-up stays in the audit log.
        _, sentence = missing
        raise GiftcardError(ErrorCode.NOT_FOUND, sentence, param=by)
    return found


_CHECK_CODE = (
    "Check it with the customer: read it back symbol by symbol, or look the card up by the "
    "12-digit serial on its back."
)
_CHECK_SERIAL = "Check the 12 digits with the customer, or look the card up by its code."


def _checked_code(code: str) -> str:
    """The code, normalized and checked, or a refusal worded for a support agent."""
    try:
        return codes.check_code(code)
    except RedemptionError as error:
        if error.code is ErrorCode.CODE_MISTYPED:
            raise GiftcardError(
                ErrorCode.CODE_MISTYPED,
                "This code is almost surely mistyped: its check symbol does not fit, so one "
                "symbol is wrong or two are swapped. Read it back with the customer symbol "
                "by symbol.",
                param="code",
            ) from None
        raise GiftcardError(
            ErrorCode.CODE_MALFORMED,
            "This is not a gift card code: a code has 16 letters and digits (never U), in "
            "four groups of four. Ask the customer to read it again, or look the card up by "
            "the 12-digit serial on its back.",
            param="code",
        ) from None


def _checked_last4(last4: str | None) -> str:
    """The last four symbols of a code, forgiving case, separators and look-alikes."""
    text = "".join((last4 or "").split()).replace("-", "")
    if len(text) != LAST4_LENGTH or not text.isascii():
        raise validation_error(
            "last4 is the last four letters and digits of the code, like R3TW.", "last4"
        )
    text = text.upper().replace("O", "0").replace("I", "1").replace("L", "1")
    if not all(symbol in codes.ALPHABET for symbol in text):
        raise validation_error(
            "last4 is the last four letters and digits of the code, like R3TW (never U).",
            "last4",
        )
    return text


async def _look_at(connection: AsyncConnection, card: Card) -> CardLookup:
    events = await _events(connection, card.id)
    redeemed_into = credit = None
    if card.redeemed_customer_id is not None:
        redeemed_into, available_account_id = await _customer(connection, card.redeemed_customer_id)
        credit = await _credit(connection, card.id, available_account_id)
    replaces = next(
        (e.related_card_id for e in events if e.type == "issued" and e.related_card_id), None
    )
    replaced_by = next(
        (e.related_card_id for e in events if e.type == "replaced" and e.related_card_id), None
    )
    return CardLookup(
        card=card,
        events=events,
        redeemed_into=redeemed_into,
        credit=credit,
        gift=await _gift(connection, card),
        replaces_card_id=replaces,
        replaced_by_card_id=replaced_by,
    )


async def _events(connection: AsyncConnection, card_id: int) -> list[CardEvent]:
    rows = (
        await connection.execute(
            select(card_events)
            .where(card_events.c.card_id == card_id)
            .order_by(card_events.c.id.desc())
            .limit(EVENTS_PER_CARD_MAX)
        )
    ).all()
    return [
        CardEvent(
            type=row.type,
            actor=row.actor,
            reason=row.reason,
            created_at=row.created_at,
            transaction_id=row.transaction_id,
            customer_id=row.customer_id,
            related_card_id=row.related_card_id,
        )
        for row in reversed(rows)
    ]


async def _customer(connection: AsyncConnection, customer_id: int) -> tuple[RedeemedInto, int]:
    """The customer with their balance now; and their available balance's account."""
    customer = (
        await connection.execute(select(customers).where(customers.c.id == customer_id))
    ).one()
    balances = {
        row.id: int(row.balance)
        for row in await connection.execute(
            select(ledger_accounts.c.id, ledger_accounts.c.balance).where(
                ledger_accounts.c.id.in_([customer.available_account_id, customer.held_account_id])
            )
        )
    }
    balance = Balance(
        customer.currency,
        balances[customer.available_account_id],
        balances[customer.held_account_id],
    )
    return (
        RedeemedInto(customer.id, customer.email, customer.name, balance),
        customer.available_account_id,
    )


async def _credit(
    connection: AsyncConnection, card_id: int, available_account_id: int
) -> Credit | None:
    row = (
        await connection.execute(
            select(
                journal_transactions.c.id,
                journal_transactions.c.created_at,
                journal_transactions.c.currency,
                postings.c.amount,
                postings.c.balance_after,
            )
            .select_from(
                journal_transactions.join(
                    postings, postings.c.transaction_id == journal_transactions.c.id
                )
            )
            .where(
                journal_transactions.c.card_id == card_id,
                journal_transactions.c.type == "redemption",
                postings.c.account_id == available_account_id,
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return Credit(row.id, row.created_at, int(row.amount), row.currency, int(row.balance_after))


async def _gift(connection: AsyncConnection, card: Card) -> GiftRef | None:
    row = (
        await connection.execute(
            select(
                gifts.c.id, gifts.c.recipient_email, gifts.c.recipient_name, gifts.c.status
            ).where(gifts.c.card_id == card.id)
        )
    ).one_or_none()
    if row is None:
        return None
    # As the gifts module reads it: "redeemed" comes from the card.
    status = GiftStatus.REDEEMED if card.state is CardState.REDEEMED else GiftStatus(row.status)
    return GiftRef(row.id, row.recipient_email, row.recipient_name, status)


# --- changes -----------------------------------------------------------------------


def check_reason(reason: str | None, note: str | None) -> tuple[str, str | None]:
    """The reason (required, 1 to 500 characters once trimmed) and the note (optional)."""
    reason = (reason or "").strip()
    if not reason:
        raise validation_error("Give a reason: what happened, in a few words.", "reason")
    if len(reason) > REASON_LENGTH_MAX:
        raise validation_error(
            f"The reason is at most {REASON_LENGTH_MAX} characters; put the rest in the note.",
            "reason",
        )
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE_LENGTH_MAX:
        raise validation_error(f"The note is at most {NOTE_LENGTH_MAX} characters.", "note")
    return reason, note


def _action(
    name: str,
    card_id: int,
    reason: str,
    note: str | None,
    detail: dict[str, Any],
) -> audit.Action:
    return audit.Action(
        name,
        target=ids.format_id(ids.CARD, card_id),
        reason=reason,
        note=note,
        detail=detail,
    )


# How a card change is applied inside the caller's transaction (cards.freeze, ...), and
# what its audit entry adds about the card it left.
CardChange = Callable[..., Awaitable[Card]]
ChangeDetail = Callable[[Card], dict[str, Any]]


async def _change(
    uow: UnitOfWork,
    actor: audit.Actor,
    card_id: int,
    action: str,
    apply: CardChange,
    detail: ChangeDetail,
    *,
    reason: str,
    note: str | None,
) -> Card:
    """One card change and its audit entry, in one transaction."""
    reason, note = check_reason(reason, note)

    async def work(connection: AsyncConnection) -> Card:
        now = uow.clock.now()
        card = await apply(connection, card_id, reason=reason, actor=actor.actor, now=now)
        await audit.record(
            connection, actor, _action(action, card_id, reason, note, detail(card)), now=now
        )
        return card

    return await uow.run(work)


async def freeze(
    uow: UnitOfWork, actor: audit.Actor, card_id: int, *, reason: str, note: str | None = None
) -> Card:
    """Put a hold on a card: it keeps its value and cannot be redeemed until unfrozen."""
    return await _change(
        uow, actor, card_id, "card.freeze", cards.freeze, lambda card: {}, reason=reason, note=note
    )


async def unfreeze(
    uow: UnitOfWork, actor: audit.Actor, card_id: int, *, reason: str, note: str | None = None
) -> Card:
    """Release a hold: the card returns to the state it had before it was frozen."""
    return await _change(
        uow,
        actor,
        card_id,
        "card.unfreeze",
        cards.unfreeze,
        lambda card: {"state": card.state.value},
        reason=reason,
        note=note,
    )


async def cancel(
    uow: UnitOfWork, actor: audit.Actor, card_id: int, *, reason: str, note: str | None = None
) -> Card:
    """Cancel a card for good; a funded card's value goes back to the store."""
    return await _change(
        uow,
        actor,
        card_id,
        "card.cancel",
        cards.cancel,
        lambda card: {"funded": card.activated_at is not None, "amount": card.amount},
        reason=reason,
        note=note,
    )


async def replace(
    uow: UnitOfWork,
    actor: audit.Actor,
    card_id: int,
    *,
    reason: str,
    note: str | None = None,
    secret_key: bytes,
) -> Replacement:
    """A lost or damaged card that still holds its value is cancelled, and a new digital
    card of the same value, region and expiry is issued with a fresh code, at once. The
    new code is in the result only: never stored, logged or audited."""
    reason, note = check_reason(reason, note)

    async def work(connection: AsyncConnection) -> Replacement:
        now = uow.clock.now()
        replacement = await cards.replace(
            connection, card_id, reason=reason, actor=actor.actor, now=now, secret_key=secret_key
        )
        new = replacement.new.card
        await audit.record(
            connection,
            actor,
            _action(
                "card.replace",
                card_id,
                reason,
                note,
                {"new_card": ids.format_id(ids.CARD, new.id), "new_last4": new.last4},
            ),
            now=now,
        )
        return replacement

    return await uow.run(work)
