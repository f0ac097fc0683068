"""Cards: issuing (one or 100,000), activating physical cards, freezing, cancelling, replacing.

A card's value lives in its own ledger account. A digital card is issued `active` and
funded at once (the store's issuance account pays the card's account); a physical card is
issued `inactive` with an empty account and is funded when it is activated at a till.
An `active` card past its `expires_at` reads as `expired`; the stored state stays
`active`, so nothing has to run at midnight for a card to expire.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import BigInteger, Row, Text, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, codes, ids, ledger
from giftcard.clock import Clock
from giftcard.db import riders
from giftcard.db.bulk import allocate_ids, array_rows, bulk_load, copy_rows, find_existing
from giftcard.db.engine import Database
from giftcard.db.tables import card_events, cards, ledger_accounts
from giftcard.errors import ErrorCode, GiftcardError, validation_error
from giftcard.money import AMOUNT_MINOR_MAX, REGIONS, Region
from giftcard.unit_of_work import UnitOfWork

CARDS_PER_REQUEST_MAX = 1000
CARDS_PER_BATCH_MAX = 1_000_000
# Rows written per bulk statement, and the step of progress reports.
CARDS_PER_CHUNK = 5000
SERIAL_DRAW_ATTEMPTS_MAX = 5


class CardKind(enum.StrEnum):
    DIGITAL = "digital"
    PHYSICAL = "physical"


class CardState(enum.StrEnum):
    INACTIVE = "inactive"
    ACTIVE = "active"
    REDEEMED = "redeemed"
    FROZEN = "frozen"
    CANCELLED = "cancelled"
    # Never stored: how an active card past its expiry reads.
    EXPIRED = "expired"


@dataclass(frozen=True)
class Card:
    """A card as anyone but its first recipient sees it: never the code."""

    id: int
    serial: str
    last4: str
    kind: CardKind
    state: CardState
    amount: int
    currency: str
    region: str
    expires_at: datetime | None
    activated_at: datetime | None
    redeemed_at: datetime | None
    redeemed_customer_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class IssuedCard:
    """A card just issued, with its full code: shown once, then never again."""

    card: Card
    code: str


@dataclass(frozen=True)
class IssueRequest:
    amount: int
    region: Region
    kind: CardKind
    count: int = 1
    expires_at: datetime | None = None


ProgressCallback = Callable[[int], None]
# Called inside the issuing transaction, before it commits, with the cards it issued: a
# CLI writes their codes down here, so that no card exists whose code was never kept.
# A retried transaction calls it again with the same codes; it must be safe to repeat.
KeepCodes = Callable[[Sequence[IssuedCard]], None]


def effective_state(state: str, expires_at: datetime | None, now: datetime) -> CardState:
    if state == CardState.ACTIVE and expires_at is not None and expires_at <= now:
        return CardState.EXPIRED
    return CardState(state)


def card_from_row(row: Row[Any], now: datetime) -> Card:
    return Card(
        id=row.id,
        serial=row.serial,
        last4=row.last4,
        kind=CardKind(row.kind),
        state=effective_state(row.state, row.expires_at, now),
        amount=row.amount,
        currency=row.currency,
        region=row.region,
        expires_at=row.expires_at,
        activated_at=row.activated_at,
        redeemed_at=row.redeemed_at,
        redeemed_customer_id=row.redeemed_customer_id,
        created_at=row.created_at,
    )


def check_issue_request(request: IssueRequest, now: datetime, *, count_max: int) -> None:
    if type(request.amount) is not int or not 0 < request.amount <= AMOUNT_MINOR_MAX:
        raise validation_error(
            f"The amount must be a whole number of minor units from 1 to {AMOUNT_MINOR_MAX}.",
            "amount",
        )
    if not 1 <= request.count <= count_max:
        raise validation_error(f"count must be from 1 to {count_max}.", "count")
    if request.expires_at is not None and request.expires_at <= now:
        raise validation_error("expires_at must be in the future.", "expires_at")


async def issue(
    uow: UnitOfWork,
    request: IssueRequest,
    *,
    secret_key: bytes,
    actor: str,
    count_max: int = CARDS_PER_REQUEST_MAX,
    on_progress: ProgressCallback | None = None,
    keep_codes: KeepCodes | None = None,
    audit_actor: audit.Actor | None = None,
) -> list[IssuedCard]:
    """Issue `request.count` cards in one transaction: all of them or none. With
    `audit_actor`, the batch is recorded in the audit log (one entry, never a code)."""
    now = uow.clock.now()
    check_issue_request(request, now, count_max=count_max)
    # Drawn once: a retried transaction issues the same codes, none of which the rolled
    # back attempt made real.
    drafts = [(codes.generate_code(), codes.generate_serial()) for _ in range(request.count)]

    async def work(connection: AsyncConnection) -> list[IssuedCard]:
        async with bulk_load(connection):
            unique_drafts = await _replace_taken_serials(connection, drafts)
            issued = await _insert_cards(
                connection, request, unique_drafts, secret_key, actor, now, on_progress
            )
        if audit_actor is not None:
            await audit.record(connection, audit_actor, _issue_action(request, issued), now=now)
        if keep_codes is not None:
            keep_codes(issued)
        return issued

    return await uow.run(work)


def _issue_action(request: IssueRequest, issued: list[IssuedCard]) -> audit.Action:
    first = ids.format_id(ids.CARD, issued[0].card.id) if issued else None
    last = ids.format_id(ids.CARD, issued[-1].card.id) if issued else None
    return audit.Action(
        "card.issue",
        target=first,
        detail={
            "count": len(issued),
            "amount": request.amount,
            "currency": request.region.currency,
            "region": request.region.code,
            "kind": request.kind.value,
            "first_card": first,
            "last_card": last,
        },
    )


async def issue_with_code(
    connection: AsyncConnection,
    request: IssueRequest,
    code: str,
    *,
    secret_key: bytes,
    actor: str,
    now: datetime,
    replaces_card_id: int | None = None,
) -> IssuedCard:
    """One card whose code the caller chose (an e-gift's, derived from its seed; a
    replacement's, fresh), issued inside the caller's transaction exactly as :func:`issue`
    issues each of its cards. A replacement's `issued` event names the card it replaces."""
    check_issue_request(request, now, count_max=1)
    drafts = await _replace_taken_serials(connection, [(code, codes.generate_serial())])
    (issued,) = await _insert_cards(
        connection, request, drafts, secret_key, actor, now, None, replaces_card_id
    )
    return issued


async def _replace_taken_serials(
    connection: AsyncConnection, drafts: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Serials are random and short enough to collide with existing cards now and then;
    draw new ones for those. (Codes have 75 random bits; their unique key is enough.)"""
    result = list(drafts)
    for _ in range(SERIAL_DRAW_ATTEMPTS_MAX):
        taken = await find_existing(connection, cards.c.serial, [serial for _, serial in result])
        seen: set[str] = set()
        clean = True
        for index, (code, serial) in enumerate(result):
            if serial in taken or serial in seen:
                result[index] = (code, codes.generate_serial())
                clean = False
            seen.add(result[index][1])
        if clean:
            return result
    raise GiftcardError(ErrorCode.INTERNAL_ERROR, "Could not draw unique serials; try again.")


async def _insert_cards(
    connection: AsyncConnection,
    request: IssueRequest,
    drafts: list[tuple[str, str]],
    secret_key: bytes,
    actor: str,
    now: datetime,
    on_progress: ProgressCallback | None,
    replaces_card_id: int | None = None,
) -> list[IssuedCard]:
    count = len(drafts)
    digital = request.kind is CardKind.DIGITAL
    state = CardState.ACTIVE if digital else CardState.INACTIVE
    region = request.region
    account_ids = await allocate_ids(connection, ledger_accounts, count)
    card_ids = await allocate_ids(connection, cards, count)
    issued: list[IssuedCard] = []
    for start in range(0, count, CARDS_PER_CHUNK):
        stop = min(count, start + CARDS_PER_CHUNK)
        chunk = _issued_cards(request, state, drafts[start:stop], card_ids[start:stop], now)
        await ledger.open_card_accounts(
            connection,
            account_ids[start:stop],
            currency=region.currency,
            funded_amount=request.amount if digital else 0,
            description=f"Issued {stop - start} digital card(s) of {region.store_name}",
            actor=actor,
            now=now,
        )
        # Given column by column: at 100,000 cards a dictionary per row costs more than
        # the insert itself, and most columns hold one value for the whole batch.
        await copy_rows(
            connection,
            cards,
            {
                "id": card_ids[start:stop],
                "serial": [item.card.serial for item in chunk],
                "code_hash": [codes.code_hash(secret_key, item.code) for item in chunk],
                "last4": [item.card.last4 for item in chunk],
                "account_id": account_ids[start:stop],
            },
            {
                "kind": request.kind.value,
                "state": state.value,
                "amount": request.amount,
                "currency": region.currency,
                "region": region.code,
                "expires_at": request.expires_at,
                "activated_at": now if digital else None,
                "created_at": now,
            },
        )
        event: dict[str, Any] = {"type": "issued", "actor": actor, "created_at": now}
        if replaces_card_id is not None:
            event["related_card_id"] = replaces_card_id
        await copy_rows(connection, card_events, {"card_id": card_ids[start:stop]}, event)
        issued.extend(chunk)
        if on_progress is not None:
            on_progress(stop - start)
    return issued


def _issued_cards(
    request: IssueRequest,
    state: CardState,
    drafts: list[tuple[str, str]],
    card_ids: list[int],
    now: datetime,
) -> list[IssuedCard]:
    """The new cards as their first recipient sees them, with their codes."""
    activated_at = now if state is CardState.ACTIVE else None
    return [
        IssuedCard(
            Card(
                id=card_id,
                serial=serial,
                last4=codes.code_last4(code),
                kind=request.kind,
                state=state,
                amount=request.amount,
                currency=request.region.currency,
                region=request.region.code,
                expires_at=request.expires_at,
                activated_at=activated_at,
                redeemed_at=None,
                redeemed_customer_id=None,
                created_at=now,
            ),
            code,
        )
        for (code, serial), card_id in zip(drafts, card_ids, strict=True)
    ]


def no_card(card_id: int) -> GiftcardError:
    return GiftcardError(ErrorCode.NOT_FOUND, f"No card {ids.format_id(ids.CARD, card_id)}.")


async def get(db: Database, card_id: int, *, clock: Clock) -> Card:
    async with db.transaction(write=False) as connection:
        row = (await connection.execute(select(cards).where(cards.c.id == card_id))).one_or_none()
    if row is None:
        raise no_card(card_id)
    return card_from_row(row, clock.now())


async def activate(
    uow: UnitOfWork, serial: str, *, actor: str, audit_actor: audit.Actor | None = None
) -> Card:
    """A physical card sold at a till: it becomes active and its value is funded. With
    `audit_actor`, the activation is recorded in the audit log."""
    serial = codes.normalize_serial(serial)
    now = uow.clock.now()

    async def work(connection: AsyncConnection) -> Card:
        row = (
            await connection.execute(
                update(cards)
                .where(
                    cards.c.serial == serial,
                    cards.c.state == CardState.INACTIVE.value,
                    (cards.c.expires_at.is_(None)) | (cards.c.expires_at > now),
                )
                .values(state=CardState.ACTIVE.value, activated_at=now)
                .returning(*cards.c)
            )
        ).one_or_none()
        if row is None:
            _raise_not_activatable(
                (
                    await connection.execute(select(cards).where(cards.c.serial == serial))
                ).one_or_none(),
                now,
            )
        await ledger.post(
            connection,
            ledger.Entry(
                type=ledger.TransactionType.ACTIVATION,
                currency=row.currency,
                description=f"Activated card {row.serial}",
                actor=actor,
                card_id=row.id,
                postings=[
                    await ledger.system_posting(
                        connection, ledger.AccountKind.ISSUANCE, row.currency, -row.amount
                    ),
                    ledger.Posting(row.account_id, row.amount),
                ],
            ),
            now=now,
        )
        await record_event(connection, row.id, "activated", actor=actor, now=now)
        if audit_actor is not None:
            await audit.record(
                connection,
                audit_actor,
                audit.Action(
                    "card.activate",
                    target=ids.format_id(ids.CARD, row.id),
                    detail={"amount": row.amount, "currency": row.currency},
                ),
                now=now,
            )
        return card_from_row(row, now)

    return await uow.run(work)


def _raise_not_activatable(row: Row[Any] | None, now: datetime) -> NoReturn:
    if row is None:
        raise GiftcardError(ErrorCode.NOT_FOUND, "No card has this serial.", param="serial")
    state = effective_state(row.state, row.expires_at, now)
    if row.state == CardState.INACTIVE:
        raise GiftcardError(ErrorCode.INVALID_STATE, "This card expired before it was sold.")
    raise GiftcardError(
        ErrorCode.INVALID_STATE, f"This card cannot be activated: it is {state.value}."
    )


# Executed by itself or as a rider (see giftcard.db.riders): its parameters are named
# their own way.
_INSERT_EVENT = insert(card_events).values(
    {
        column: bindparam(f"b_event_{column.key}", type_=column.type)
        for column in card_events.c
        if column is not card_events.c.id
    }
)


async def record_event(
    connection: AsyncConnection,
    card_id: int,
    event_type: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    transaction_id: int | None = None,
    customer_id: int | None = None,
    related_card_id: int | None = None,
) -> None:
    await connection.execute(
        _INSERT_EVENT,
        _event(
            card_id,
            event_type,
            actor=actor,
            now=now,
            reason=reason,
            transaction_id=transaction_id,
            customer_id=customer_id,
            related_card_id=related_card_id,
        ),
    )


def record_event_later(
    connection: AsyncConnection,
    card_id: int,
    event_type: str,
    *,
    actor: str,
    now: datetime,
    transaction_id: int | None = None,
    customer_id: int | None = None,
) -> None:
    """:func:`record_event`, sent with the transaction's next statement (see
    :mod:`giftcard.db.riders`), for a use case that reads no event back."""
    event = _event(
        card_id,
        event_type,
        actor=actor,
        now=now,
        transaction_id=transaction_id,
        customer_id=customer_id,
    )
    riders.write_later(connection, _INSERT_EVENT, event)


# The events of many cards in one statement, riding along (PostgreSQL's arrays).
_EVENT_ROWS = array_rows(
    card_id=("b_events_card_id", BigInteger()),
    actor=("b_events_actor", Text()),
    transaction_id=("b_events_transaction_id", BigInteger()),
    customer_id=("b_events_customer_id", BigInteger()),
)
_INSERT_EVENTS = insert(card_events).from_select(
    ["card_id", "type", "actor", "transaction_id", "customer_id", "created_at"],
    select(
        _EVENT_ROWS.c.card_id,
        bindparam("b_events_type", type_=card_events.c.type.type),
        _EVENT_ROWS.c.actor,
        _EVENT_ROWS.c.transaction_id,
        _EVENT_ROWS.c.customer_id,
        bindparam("b_events_created_at", type_=card_events.c.created_at.type),
    ),
)


@dataclass(frozen=True)
class Event:
    card_id: int
    actor: str
    transaction_id: int | None = None
    customer_id: int | None = None


def record_events_later(
    connection: AsyncConnection, event_type: str, events: Sequence[Event], *, now: datetime
) -> None:
    """:func:`record_event_later` for many cards at once, in one statement (PostgreSQL)."""
    if connection.dialect.name != "postgresql":
        raise RuntimeError("many events in one statement need PostgreSQL's arrays")
    riders.write_later(
        connection,
        _INSERT_EVENTS,
        {
            "b_events_card_id": [event.card_id for event in events],
            "b_events_actor": [event.actor for event in events],
            "b_events_transaction_id": [event.transaction_id for event in events],
            "b_events_customer_id": [event.customer_id for event in events],
            "b_events_type": event_type,
            "b_events_created_at": now,
        },
    )


def _event(
    card_id: int,
    event_type: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    transaction_id: int | None = None,
    customer_id: int | None = None,
    related_card_id: int | None = None,
) -> dict[str, Any]:
    """The parameters of :data:`_INSERT_EVENT`."""
    return {
        "b_event_card_id": card_id,
        "b_event_type": event_type,
        "b_event_actor": actor,
        "b_event_reason": reason,
        "b_event_transaction_id": transaction_id,
        "b_event_customer_id": customer_id,
        "b_event_related_card_id": related_card_id,
        "b_event_created_at": now,
    }


# --- support's changes of state ---------------------------------------------------
#
# Each is one guarded UPDATE inside the caller's transaction: of two changes racing on one
# card (two freezes, a replace and a redemption), exactly one finds the card in a state it
# may leave; the other finds no row and is told what the card is now.

FREEZABLE = (CardState.INACTIVE, CardState.ACTIVE)
CANCELLABLE = (CardState.INACTIVE, CardState.ACTIVE, CardState.FROZEN)


async def freeze(
    connection: AsyncConnection, card_id: int, *, reason: str, actor: str, now: datetime
) -> Card:
    """A reversible hold: the card keeps its value and cannot be redeemed until unfrozen."""
    row = (
        await connection.execute(
            update(cards)
            .where(cards.c.id == card_id, cards.c.state.in_([s.value for s in FREEZABLE]))
            # The right-hand side reads the row as it was: the state it had before.
            .values(state=CardState.FROZEN.value, state_before_freeze=cards.c.state)
            .returning(*cards.c)
        )
    ).one_or_none()
    if row is None:
        await _refuse(connection, card_id, "freeze", now)
    await record_event(connection, card_id, "frozen", actor=actor, now=now, reason=reason)
    return card_from_row(row, now)


async def unfreeze(
    connection: AsyncConnection, card_id: int, *, reason: str, actor: str, now: datetime
) -> Card:
    """A frozen card returns to the state it had before it was frozen."""
    row = (
        await connection.execute(
            update(cards)
            .where(cards.c.id == card_id, cards.c.state == CardState.FROZEN.value)
            .values(state=cards.c.state_before_freeze, state_before_freeze=None)
            .returning(*cards.c)
        )
    ).one_or_none()
    if row is None:
        await _refuse(connection, card_id, "unfreeze", now)
    await record_event(connection, card_id, "unfrozen", actor=actor, now=now, reason=reason)
    return card_from_row(row, now)


async def cancel(
    connection: AsyncConnection, card_id: int, *, reason: str, actor: str, now: datetime
) -> Card:
    """Cancel for good: the card can never be redeemed, and a funded card's value goes
    back from its account to the store's issuance account."""
    row = (
        await connection.execute(
            update(cards)
            .where(cards.c.id == card_id, cards.c.state.in_([s.value for s in CANCELLABLE]))
            .values(state=CardState.CANCELLED.value, state_before_freeze=None)
            .returning(*cards.c)
        )
    ).one_or_none()
    if row is None:
        await _refuse(connection, card_id, "cancel", now)
    transaction_id = await _return_value(connection, row, actor=actor, now=now)
    await record_event(
        connection,
        card_id,
        "cancelled",
        actor=actor,
        now=now,
        reason=reason,
        transaction_id=transaction_id,
    )
    return card_from_row(row, now)


@dataclass(frozen=True)
class Replacement:
    """A lost or damaged card, now cancelled, and the card issued in its stead."""

    old: Card
    new: IssuedCard


async def replace(
    connection: AsyncConnection,
    card_id: int,
    *,
    reason: str,
    actor: str,
    now: datetime,
    secret_key: bytes,
) -> Replacement:
    """Cancel a card that still holds its value and issue a new digital, active card of
    the same value, region and expiry with a fresh code, in the caller's transaction."""
    row = (
        await connection.execute(
            update(cards)
            .where(
                cards.c.id == card_id,
                cards.c.state.in_([CardState.ACTIVE.value, CardState.FROZEN.value]),
                cards.c.activated_at.is_not(None),
                cards.c.expires_at.is_(None) | (cards.c.expires_at > now),
            )
            .values(state=CardState.CANCELLED.value, state_before_freeze=None)
            .returning(*cards.c)
        )
    ).one_or_none()
    if row is None:
        await _refuse(connection, card_id, "replace", now)
    transaction_id = await _return_value(connection, row, actor=actor, now=now)
    new = await issue_with_code(
        connection,
        IssueRequest(
            amount=row.amount,
            region=REGIONS[row.region],
            kind=CardKind.DIGITAL,
            expires_at=row.expires_at,
        ),
        codes.generate_code(),
        secret_key=secret_key,
        actor=actor,
        now=now,
        replaces_card_id=card_id,
    )
    await record_event(
        connection,
        card_id,
        "replaced",
        actor=actor,
        now=now,
        reason=reason,
        transaction_id=transaction_id,
        related_card_id=new.card.id,
    )
    return Replacement(card_from_row(row, now), new)


async def _return_value(
    connection: AsyncConnection, row: Row[Any], *, actor: str, now: datetime
) -> int | None:
    """A funded card's value back to the issuance account; the journal transaction's id,
    or None for a card that was never funded (a physical card never sold)."""
    if row.activated_at is None:
        return None
    posted = await ledger.post(
        connection,
        ledger.Entry(
            type=ledger.TransactionType.CANCELLATION,
            currency=row.currency,
            description=f"Cancelled card {row.serial}",
            actor=actor,
            card_id=row.id,
            postings=[
                ledger.Posting(row.account_id, -row.amount),
                await ledger.system_posting(
                    connection, ledger.AccountKind.ISSUANCE, row.currency, row.amount
                ),
            ],
        ),
        now=now,
    )
    return posted.transaction_id


async def _refuse(
    connection: AsyncConnection, card_id: int, change: str, now: datetime
) -> NoReturn:
    """Why the guarded update found no card to change, in a sentence for support."""
    row = (await connection.execute(select(cards).where(cards.c.id == card_id))).one_or_none()
    if row is None:
        raise no_card(card_id)
    raise GiftcardError(ErrorCode.INVALID_STATE, refusal_sentence(row, change, now))


def refusal_sentence(row: Row[Any], change: str, now: datetime) -> str:
    """What the card is, and what to do instead of `change` (freeze, unfreeze, cancel,
    replace), when the card cannot have it."""
    state = effective_state(row.state, row.expires_at, now)
    if state is CardState.REDEEMED:
        when = row.redeemed_at.strftime("%Y-%m-%d %H:%M UTC")
        customer = ids.format_id(ids.CUSTOMER, row.redeemed_customer_id)
        return (
            f"The card was redeemed on {when} into the account of {customer}: its value "
            f"is in that customer's balance, so there is nothing to {change}. Look at "
            "that customer's history, and adjust their balance if something is wrong."
        )
    if state is CardState.CANCELLED:
        return (
            f"The card is cancelled and holds no value, so there is nothing to {change}. "
            "Look at its events to see who cancelled it and why."
        )
    if change == "freeze":
        return "The card is already frozen. Unfreeze it to let it be redeemed again."
    if change == "unfreeze":
        return f"The card is not frozen: it is {state.value}. There is nothing to unfreeze."
    # Only a replacement refuses the remaining states.
    if state is CardState.EXPIRED or (
        row.expires_at is not None and row.expires_at <= now and row.activated_at is not None
    ):
        return (
            f"The card expired on {row.expires_at.strftime('%Y-%m-%d')}: its value cannot "
            "move to a new card. Cancel it, and adjust the customer's balance if the store "
            "agrees to make good on it."
        )
    return (
        f"The card is {state.value} and was never sold, so it holds no value to move to a "
        "new card. If it is lost, cancel it; if it is being sold, activate it at the till."
    )
