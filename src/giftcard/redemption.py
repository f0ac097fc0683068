"""Redeeming a code: its value moves into one customer's balance, exactly once.

The claim on the card is one guarded UPDATE (`... WHERE code_hash = :h AND state =
'active' ...`): of any number of concurrent attempts on one code, exactly one sees a row
come back; the rest find nothing to update and are told why by :func:`_refusal`. The
card's state and the customer's balance change in the same transaction, so neither can
happen without the other.

On PostgreSQL, the redemptions of a process that come while a batch of them is being
committed go together in the next (group commit, :func:`_redeem_batch`): one
transaction of a few statements over arrays claims all their keys and cards and posts
one journal transaction for each, the same guards deciding as for one alone. What a
batch cannot settle runs by itself, so a refusal is the same whichever way it came.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from babel.dates import format_date
from sqlalchemy import Row, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import codes, ledger
from giftcard.cards import (
    CardState,
    Event,
    effective_state,
    record_event_later,
    record_events_later,
)
from giftcard.customers import Customer
from giftcard.db import batches, direct, riders
from giftcard.db.engine import Database
from giftcard.db.tables import cards, ledger_accounts
from giftcard.errors import ErrorCode, RedemptionError
from giftcard.limits import AbuseLimits, RedeemAttempt, RedemptionsPaused
from giftcard.metrics import REDEMPTIONS
from giftcard.money import REGIONS, format_minor
from giftcard.unit_of_work import KeptRefusal, RunAlone, UnitOfWork, run_together

# The claim on a card, built once (see giftcard.ledger): only an active, unexpired card of
# the customer's store is taken, and only by one of any number of concurrent attempts.
_NOW = bindparam("b_now", type_=cards.c.redeemed_at.type)
_CLAIM_CARD = (
    update(cards)
    .where(
        cards.c.code_hash == bindparam("b_code_hash"),
        cards.c.state == CardState.ACTIVE.value,
        cards.c.region == bindparam("b_region"),
        cards.c.expires_at.is_(None) | (cards.c.expires_at > _NOW),
    )
    .values(
        state=CardState.REDEEMED.value,
        redeemed_at=_NOW,
        redeemed_customer_id=bindparam("b_customer_id"),
    )
    .returning(
        cards.c.id,
        cards.c.account_id,
        cards.c.amount,
        cards.c.currency,
        cards.c.serial,
        cards.c.last4,
        # The customer's held balance, which a redemption does not move, read in the same
        # round trip for the answer.
        select(ledger_accounts.c.balance)
        .where(ledger_accounts.c.id == bindparam("b_held_account_id"))
        .scalar_subquery()
        .label("held"),
    )
)


@dataclass(frozen=True)
class Balance:
    currency: str
    available: int
    held: int

    @property
    def total(self) -> int:
        return self.available + self.held


@dataclass(frozen=True)
class Redemption:
    transaction_id: int
    amount: int
    currency: str
    balance: Balance
    card_serial: str
    card_last4: str
    created_at: datetime


async def redeem(
    uow: UnitOfWork,
    customer: Customer,
    raw_code: str,
    *,
    secret_key: bytes,
    actor: str,
    attempt: RedeemAttempt | None = None,
) -> Redemption:
    """Move a card's value into `customer`'s available balance, or raise RedemptionError;
    the `attempt` of the abuse limits it runs under, if any, is told of its start and of
    its success or refusal in its transaction. A refusal commits that transaction (see
    :class:`~giftcard.unit_of_work.KeptRefusal`), with what counts it."""
    code = codes.check_code(raw_code)
    digest = codes.code_hash(secret_key, code)
    if uow.db.reads_committed:
        settled = await _BATCHES.submit(uow.db, _Waiting(uow, customer, digest, actor, attempt))
        if isinstance(settled, Redemption):
            _count_redeemed()
            return settled

    async def work(connection: AsyncConnection) -> Redemption:
        now = uow.clock.now()
        if attempt is not None:
            await attempt.began_in(connection)
        card = (
            await riders.execute(
                connection,
                _CLAIM_CARD,
                {
                    "b_code_hash": digest,
                    "b_region": customer.region,
                    "b_now": now,
                    "b_customer_id": customer.id,
                    "b_held_account_id": customer.held_account_id,
                },
            )
        ).one_or_none()
        if card is None:
            refusal = await _refusal(connection, digest, customer, now)
            if attempt is not None:
                await attempt.refused_in(connection, refusal)
            # Nothing of the redemption was written: what counts the refusal commits.
            raise KeptRefusal(refusal)
        posted = await ledger.post(connection, _entry(card, customer, actor), now=now)
        record_event_later(
            connection,
            card.id,
            "redeemed",
            actor=actor,
            now=now,
            transaction_id=posted.transaction_id,
            customer_id=customer.id,
        )
        if attempt is not None:
            await attempt.succeeded_in(connection)
        # Counted once the credit is committed, whichever door asked for it.
        uow.on_commit(_count_redeemed)
        return _redemption(card, posted, customer)

    return await uow.run(work)


async def redeem_limited(
    uow: UnitOfWork,
    limits: AbuseLimits,
    customer: Customer,
    raw_code: str,
    *,
    address: str,
    secret_key: bytes,
    actor: str,
) -> Redemption:
    """:func:`redeem` under the abuse limits of SPEC §8, as every door calls it: refused
    at once while the account or address is locked, before the code is looked at; every
    refusal counts, whatever its error, and a success gives its units back. A code that
    passes its check symbol is also counted against the service-wide limit on codes that
    match no card, and refused while that is full, for everyone."""
    try:
        codes.check_code(raw_code)
        looks_up_a_code = True
    except RedemptionError:
        looks_up_a_code = False
    try:
        async with limits.redeem_attempt(
            customer.id, address, looks_up_a_code=looks_up_a_code
        ) as attempt:
            return await redeem(
                uow, customer, raw_code, secret_key=secret_key, actor=actor, attempt=attempt
            )
    except RedemptionError as error:
        REDEMPTIONS.labels(outcome=error.code.value).inc()
        raise
    except RedemptionsPaused:
        REDEMPTIONS.labels(outcome="paused").inc()
        raise


@dataclass(frozen=True)
class _Waiting:
    """A redemption waiting to go in the next batch."""

    uow: UnitOfWork
    customer: Customer
    digest: bytes
    actor: str
    attempt: RedeemAttempt | None


# The claim on many cards (PostgreSQL), in the order of their code hashes, so that two
# batches with a code in common wait for each other instead of deadlocking; each card
# answers with the number of the redemption that took it and its customer's held balance.
_CLAIM_CARDS = text(
    "UPDATE cards SET state = :redeemed, redeemed_at = :now, "
    "redeemed_customer_id = claim.customer_id FROM (SELECT * FROM unnest("
    "CAST(:numbers AS int[]), CAST(:digests AS bytea[]), CAST(:regions AS text[]), "
    "CAST(:customer_ids AS bigint[]), CAST(:held_ids AS bigint[])) "
    "AS claim(number, digest, region, customer_id, held_id) ORDER BY claim.digest) AS claim "
    "WHERE cards.code_hash = claim.digest AND cards.state = :active "
    "AND cards.region = claim.region AND (cards.expires_at IS NULL OR cards.expires_at > :now) "
    "RETURNING claim.number, cards.id, cards.account_id, cards.amount, cards.currency, "
    "cards.serial, cards.last4, "
    "(SELECT balance FROM ledger_accounts WHERE id = claim.held_id) AS held"
).bindparams(
    bindparam("now", type_=cards.c.redeemed_at.type),
    active=CardState.ACTIVE.value,
    redeemed=CardState.REDEEMED.value,
)


async def _redeem_batch(db: Database, batch: Sequence[_Waiting]) -> list[Redemption | RunAlone]:
    """Group commit of redemptions on PostgreSQL (see
    :func:`~giftcard.unit_of_work.run_together`): the redemptions of this process that
    waited while the last batch ran go in one transaction: their keys claimed, their
    cards claimed by one guarded UPDATE, one journal transaction each
    (:func:`giftcard.ledger.post_many`), their events and answers written and the units
    of those reserved before given back with one statement. Redemptions whose limits
    count in the transaction are looked at first, without the keys' locks (see
    :meth:`RedeemAttempt.full_among`). A code that matched no active card of its region
    (or was sent twice in the batch), or an attempt that found a limit full, is left to
    run by itself, so a refusal is worded, counted and remembered exactly as before, and
    one bad request never fails its neighbours."""
    return await run_together(
        db,
        [waiting.uow for waiting in batch],
        [waiting.digest for waiting in batch],
        functools.partial(_settle, batch),
        what="redemptions",
    )


async def _settle(
    batch: Sequence[_Waiting], connection: AsyncConnection, going: Sequence[int], now: datetime
) -> dict[int, Redemption]:
    attempts = [(n, a) for n in going if (a := batch[n].attempt) is not None]
    full = await RedeemAttempt.full_among(connection, [a for _, a in attempts])
    if any(full):
        # Refused by the limits when each runs by itself, under its keys' locks.
        blocked = {n for (n, _), is_full in zip(attempts, full, strict=True) if is_full}
        going = [n for n in going if n not in blocked]
        if not going:
            return {}
    rows = (
        await direct.execute(
            connection,
            _CLAIM_CARDS,
            {
                "numbers": going,
                "digests": [batch[n].digest for n in going],
                "regions": [batch[n].customer.region for n in going],
                "customer_ids": [batch[n].customer.id for n in going],
                "held_ids": [batch[n].customer.held_account_id for n in going],
                "now": now,
            },
        )
    ).all()
    if not rows:
        return {}
    cards_of = {row.number: row for row in sorted(rows, key=lambda row: row.number)}
    posted = await ledger.post_many(
        connection,
        [_entry(card, batch[n].customer, batch[n].actor) for n, card in cards_of.items()],
        now=now,
    )
    settled = {
        n: _redemption(card, entry, batch[n].customer)
        for (n, card), entry in zip(cards_of.items(), posted, strict=True)
    }
    record_events_later(
        connection,
        "redeemed",
        [
            Event(cards_of[n].id, batch[n].actor, redemption.transaction_id, batch[n].customer.id)
            for n, redemption in settled.items()
        ],
        now=now,
    )
    await RedeemAttempt.all_succeeded_in(
        connection, [a for n in settled if (a := batch[n].attempt) is not None]
    )
    return settled


def _redemption(card: Row[Any], posted: ledger.Posted, customer: Customer) -> Redemption:
    """What a redemption answers: the card it took, and the balance right after it."""
    return Redemption(
        transaction_id=posted.transaction_id,
        amount=card.amount,
        currency=card.currency,
        balance=Balance(
            card.currency, posted.balances_after[customer.available_account_id], int(card.held)
        ),
        card_serial=card.serial,
        card_last4=card.last4,
        created_at=posted.created_at,
    )


def _entry(card: Row[Any], customer: Customer, actor: str) -> ledger.Entry:
    """A redemption's journal transaction: the card's value into the available balance."""
    return ledger.Entry(
        type=ledger.TransactionType.REDEMPTION,
        currency=card.currency,
        description=f"Gift card ending {card.last4} redeemed",
        actor=actor,
        customer_id=customer.id,
        card_id=card.id,
        postings=[
            ledger.Posting(card.account_id, -card.amount),
            ledger.Posting(customer.available_account_id, card.amount),
        ],
    )


_BATCHES: batches.PerDatabase[_Waiting, Redemption | RunAlone] = batches.PerDatabase(_redeem_batch)


def _count_redeemed() -> None:
    REDEMPTIONS.labels(outcome="redeemed").inc()


async def _refusal(
    connection: AsyncConnection, digest: bytes, customer: Customer, now: datetime
) -> RedemptionError:
    """Why the guarded update found no card to redeem, in words a shopper understands."""
    card = (
        await connection.execute(select(cards).where(cards.c.code_hash == digest))
    ).one_or_none()
    if card is None:
        return RedemptionError(
            ErrorCode.CODE_NOT_FOUND,
            "We couldn't find a gift card with this code. Check that you typed it exactly "
            "as printed.",
            param="code",
        )
    return _refusal_for_card(card, customer, now)


def _refusal_for_card(card: Row[Any], customer: Customer, now: datetime) -> RedemptionError:
    locale = REGIONS[customer.region].locale
    state = effective_state(card.state, card.expires_at, now)
    if state is CardState.REDEEMED:
        when = format_date(card.redeemed_at, format="long", locale=locale)
        if card.redeemed_customer_id == customer.id:
            detail = f"This code was already added to your account on {when}."
        else:
            detail = (
                f"This code was already redeemed by another account on {when}. If you "
                "think that is wrong, contact support."
            )
        return RedemptionError(ErrorCode.CODE_ALREADY_REDEEMED, detail, param="code")
    if state is CardState.FROZEN:
        return RedemptionError(
            ErrorCode.CODE_FROZEN,
            "This gift card is on hold. Please contact support to have it released.",
            param="code",
        )
    if state is CardState.CANCELLED:
        return RedemptionError(
            ErrorCode.CODE_NOT_ACTIVE,
            "This gift card was cancelled and cannot be used. Please contact support.",
            param="code",
        )
    if state is CardState.INACTIVE:
        return RedemptionError(
            ErrorCode.CODE_NOT_ACTIVE,
            "This gift card has not been activated yet. Cards are activated when they are "
            "bought; if you bought this one, keep the receipt and contact the store.",
            param="code",
        )
    if state is CardState.EXPIRED:
        when = format_date(card.expires_at, format="long", locale=locale)
        return RedemptionError(
            ErrorCode.CODE_EXPIRED, f"This gift card expired on {when}.", param="code"
        )
    card_store = REGIONS[card.region]
    own_store = REGIONS[customer.region]
    return RedemptionError(
        ErrorCode.REGION_MISMATCH,
        f"This gift card ({format_minor(card.amount, card.currency)}) is for the "
        f"{card_store.store_name}, but your account belongs to the {own_store.store_name}. "
        "It can only be redeemed in an account of its own store.",
        param="code",
    )


# A customer's two balances, read together by one statement (so from one snapshot).
_BALANCES = select(ledger_accounts.c.id, ledger_accounts.c.balance).where(
    ledger_accounts.c.id.in_([bindparam("b_available_id"), bindparam("b_held_id")])
)


async def balance(db: Database, customer: Customer) -> Balance:
    # One statement: on PostgreSQL without BEGIN and COMMIT around it.
    async with db.reading() as connection:
        rows = (
            await connection.execute(
                _BALANCES,
                {
                    "b_available_id": customer.available_account_id,
                    "b_held_id": customer.held_account_id,
                },
            )
        ).all()
    by_id = {row.id: int(row.balance) for row in rows}
    return Balance(
        customer.currency, by_id[customer.available_account_id], by_id[customer.held_account_id]
    )
