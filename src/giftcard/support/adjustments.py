"""Adjusting a customer's balance by hand, with a second pair of eyes for large amounts.

An adjustment is a signed amount in the customer's currency with a reason and a note.
One whose size is at most the approval threshold (`GIFTCARD_ADJUSTMENT_APPROVAL_MINOR`)
is applied at once: one journal transaction (`adjustment`) between the ADJUSTMENTS
system account and the customer's available balance, whose guard refuses a deduction
larger than that balance. A larger one is stored `pending_approval` and moves no money
until a staff member other than its creator approves it; it is then applied in the
approval's transaction (and if the balance no longer covers a deduction, the approval
is refused and the adjustment stays pending).

Decisions a reader may look for:

* Approving needs a person: a staff member's session, never an API key, and never the
  staff member (or key) that created the adjustment.
* Rejecting needs a person too, except that the creator may withdraw their own pending
  adjustment by rejecting it: no money moves, so no second pair of eyes is needed.
* Two decisions at once are settled by a guarded UPDATE (`WHERE status =
  'pending_approval'`): one wins, the other is `invalid_state`.
* The journal transaction's actor is the staff member who applied it (the creator for a
  small one, the approver for a large one); its description, which the customer sees
  in their history, comes from the reason, never from the internal note.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, ids, ledger
from giftcard.customers import Customer, customer_from_row
from giftcard.db.engine import Database
from giftcard.db.tables import adjustments, customers
from giftcard.errors import ErrorCode, GiftcardError, validation_error
from giftcard.money import AMOUNT_MINOR_MAX, example_amount, format_minor, parse_amount
from giftcard.unit_of_work import UnitOfWork

NOTE_LENGTH_MAX = 2000
# A signed amount as typed; the amount itself is read by money.parse_amount.
_SIGNED_AMOUNT = re.compile(r"\s*(?P<sign>[-+\u2212\u2013]?)\s*(?P<number>.*?)\s*", re.S)
_MINUS_SIGNS = "-\u2212\u2013"
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100


class Reason(enum.StrEnum):
    GOODWILL = "goodwill"
    CORRECTION = "correction"
    FRAUD_REVERSAL = "fraud_reversal"
    LOST_CARD_REPLACEMENT = "lost_card_replacement"
    OTHER = "other"


# How each reason reads: to staff (the console's choices), and to the customer in their
# history (the journal transaction's description).
REASON_LABELS = {
    Reason.GOODWILL: "Goodwill",
    Reason.CORRECTION: "Correction",
    Reason.FRAUD_REVERSAL: "Fraud reversal",
    Reason.LOST_CARD_REPLACEMENT: "Lost card replacement",
    Reason.OTHER: "Other",
}
_DESCRIPTIONS = {
    Reason.GOODWILL: "Goodwill credit from customer support",
    Reason.CORRECTION: "Balance correction by customer support",
    Reason.FRAUD_REVERSAL: "Reversal of a fraudulent credit",
    Reason.LOST_CARD_REPLACEMENT: "Value of a lost gift card",
    Reason.OTHER: "Balance adjustment by customer support",
}


class Status(enum.StrEnum):
    APPLIED = "applied"
    PENDING_APPROVAL = "pending_approval"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Adjustment:
    id: int
    customer_id: int
    amount: int
    currency: str
    reason: Reason
    note: str
    status: Status
    created_by: str
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    transaction_id: int | None
    created_at: datetime
    # Filled in by the lists, for people to recognise the customer.
    customer_email: str | None = None

    @property
    def public_id(self) -> str:
        return ids.format_id(ids.ADJUSTMENT, self.id)


@dataclass(frozen=True)
class Page:
    items: list[Adjustment]
    has_more: bool


def _from_row(row: Any) -> Adjustment:
    return Adjustment(
        id=row.id,
        customer_id=row.customer_id,
        amount=row.amount,
        currency=row.currency,
        reason=Reason(row.reason),
        note=row.note,
        status=Status(row.status),
        created_by=row.created_by,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_note=row.decision_note,
        transaction_id=row.transaction_id,
        created_at=row.created_at,
        customer_email=row._mapping.get("customer_email"),
    )


# --- checking a request (pure) ------------------------------------------------------


def check_amount(amount: object) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise validation_error(
            "The amount is a whole number of minor units (cents), negative to deduct.", "amount"
        )
    if amount == 0:
        raise validation_error(
            "An adjustment of zero changes nothing: give a positive amount to credit the "
            "customer or a negative one to deduct.",
            "amount",
        )
    if abs(amount) > AMOUNT_MINOR_MAX:
        raise validation_error(
            f"The amount is too large; at most {AMOUNT_MINOR_MAX:,} minor units either way.",
            "amount",
        )
    return amount


def check_reason(reason: object) -> Reason:
    try:
        return Reason(str(reason))
    except ValueError:
        choices = ", ".join(reason.value for reason in Reason)
        raise validation_error(f"Choose a reason: one of {choices}.", "reason") from None


def check_note(note: object, *, required: bool = True, param: str = "note") -> str | None:
    text = note.strip() if isinstance(note, str) else ""
    if not text:
        if required:
            raise validation_error(
                "Write a note saying why: the customer's request, the ticket, what you checked.",
                param,
            )
        return None
    if len(text) > NOTE_LENGTH_MAX:
        raise validation_error(
            f"The note has {len(text):,} characters; at most {NOTE_LENGTH_MAX:,} fit.", param
        )
    if "\x00" in text:
        raise validation_error("The note holds a NUL character; remove it.", param)
    return text


# --- creating -----------------------------------------------------------------------


async def _customer(connection: AsyncConnection, customer_id: int) -> Customer:
    row = (
        await connection.execute(select(customers).where(customers.c.id == customer_id))
    ).one_or_none()
    if row is None:
        raise GiftcardError(
            ErrorCode.NOT_FOUND, f"No customer {ids.format_id(ids.CUSTOMER, customer_id)}."
        )
    return customer_from_row(row)


async def _apply(
    connection: AsyncConnection,
    customer: Customer,
    amount: int,
    reason: Reason,
    *,
    actor: audit.Actor,
    now: datetime,
) -> int:
    """Move `amount` between the ADJUSTMENTS account and the customer's available
    balance; the journal transaction's id. A deduction the balance does not cover is
    `insufficient_balance`, and nothing is written."""
    currency = customer.currency
    system = await ledger.system_posting(
        connection, ledger.AccountKind.ADJUSTMENTS, currency, -amount
    )
    try:
        posted = await ledger.post(
            connection,
            ledger.Entry(
                type=ledger.TransactionType.ADJUSTMENT,
                currency=currency,
                description=_DESCRIPTIONS[reason],
                actor=actor.actor,
                customer_id=customer.id,
                postings=[ledger.Posting(customer.available_account_id, amount), system],
            ),
            now=now,
        )
    except ledger.InsufficientBalance:
        available = await ledger.balance_of(connection, customer.available_account_id)
        raise GiftcardError(
            ErrorCode.INSUFFICIENT_BALANCE,
            f"The customer's available balance is {format_minor(available, currency)}; "
            f"deducting {format_minor(-amount, currency)} would take it below zero. "
            "Deduct at most the available balance.",
            param="amount",
        ) from None
    return posted.transaction_id


def parse_signed_major(text: str, region: str) -> int:
    """A signed amount as the people of the customer's store (`region`) write money, its
    sign first (`-5,00 €` or `+12,50` in Germany, `-$5.00` or `12.5` in the US; the
    typographic minus and the en dash phones turn a minus into too), as minor units of the
    store's currency. More decimals than the currency has are refused, never rounded."""
    match = _SIGNED_AMOUNT.fullmatch(text) if isinstance(text, str) else None
    credit = example_amount(region)
    like = f"like {credit} to credit the customer or -{credit} to deduct"
    if match is None or not match["number"]:
        raise validation_error(f"Enter an amount, {like}.", "amount")
    if any(minus in match["number"] for minus in _MINUS_SIGNS):
        # "$-5" would otherwise be refused as "not more than zero", which is wrong here.
        raise validation_error(f"Put the sign first, {like}.", "amount")
    minor = parse_amount(match["number"], region, param="amount", allow_zero=True)
    if minor == 0:
        raise validation_error(
            f"An adjustment of zero changes nothing: enter an amount {like}.", "amount"
        )
    # The sign group matches "" when there is none, and "" is in every string.
    return -minor if match["sign"] and match["sign"] in _MINUS_SIGNS else minor


async def create(
    uow: UnitOfWork,
    actor: audit.Actor,
    customer_id: int,
    *,
    reason: str,
    note: str,
    approval_minor: int,
    amount: int | None = None,
    amount_major: str | None = None,
    currency: str | None = None,
) -> Adjustment:
    """Adjust a customer's balance: applied at once up to `approval_minor` either way,
    otherwise stored `pending_approval`. The amount is `amount` in minor units, or
    `amount_major` as typed in the console, read as the customer's store writes money."""
    if (amount is None) == (amount_major is None):
        raise ValueError("give amount or amount_major")
    if amount is not None:
        amount = check_amount(amount)
    checked_reason = check_reason(reason)
    checked_note = check_note(note)
    now = uow.clock.now()

    async def work(connection: AsyncConnection) -> Adjustment:
        customer = await _customer(connection, customer_id)
        if currency is not None and currency != customer.currency:
            raise GiftcardError(
                ErrorCode.CURRENCY_MISMATCH,
                f"This customer's balance is in {customer.currency}, not {str(currency)[:8]}.",
                param="currency",
            )
        signed = (
            amount
            if amount is not None
            else check_amount(parse_signed_major(amount_major or "", customer.region))
        )
        applies_now = abs(signed) <= approval_minor
        transaction_id = None
        if applies_now:
            transaction_id = await _apply(
                connection, customer, signed, checked_reason, actor=actor, now=now
            )
        status = Status.APPLIED if applies_now else Status.PENDING_APPROVAL
        row = (
            await connection.execute(
                insert(adjustments)
                .values(
                    customer_id=customer.id,
                    amount=signed,
                    currency=customer.currency,
                    reason=checked_reason.value,
                    note=checked_note,
                    status=status.value,
                    created_by=actor.actor,
                    transaction_id=transaction_id,
                    created_at=now,
                )
                .returning(*adjustments.c)
            )
        ).one()
        adjustment = _from_row(row)
        await audit.record(
            connection,
            actor,
            audit.Action(
                "adjustment.create",
                target=adjustment.public_id,
                reason=checked_reason.value,
                note=checked_note,
                outcome=status.value,
                detail=_audit_detail(adjustment),
            ),
            now=now,
        )
        return adjustment

    return await uow.run(work)


def _audit_detail(adjustment: Adjustment) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "customer_id": ids.format_id(ids.CUSTOMER, adjustment.customer_id),
        "amount": adjustment.amount,
        "currency": adjustment.currency,
        "status": adjustment.status.value,
    }
    if adjustment.transaction_id is not None:
        detail["transaction_id"] = ids.format_id(ids.TRANSACTION, adjustment.transaction_id)
    return detail


# --- deciding -----------------------------------------------------------------------


def _needs_a_person(verb: str) -> GiftcardError:
    return GiftcardError(
        ErrorCode.FORBIDDEN,
        f"{verb.capitalize()} an adjustment needs a person: log in as a staff member (a "
        "support or admin session), not an API key.",
    )


async def _why_not(
    connection: AsyncConnection, adjustment_id: int, actor: audit.Actor, *, approving: bool
) -> GiftcardError:
    """Why a guarded decision found nothing to decide."""
    row = (
        await connection.execute(select(adjustments).where(adjustments.c.id == adjustment_id))
    ).one_or_none()
    if row is None:
        return GiftcardError(
            ErrorCode.NOT_FOUND, f"No adjustment {ids.format_id(ids.ADJUSTMENT, adjustment_id)}."
        )
    if approving and row.created_by == actor.actor:
        return GiftcardError(
            ErrorCode.FORBIDDEN,
            "You cannot approve your own adjustment: another staff member must approve it.",
        )
    if row.status != Status.PENDING_APPROVAL.value:
        words = {"applied": "applied already", "rejected": "rejected already"}
        return GiftcardError(
            ErrorCode.INVALID_STATE,
            f"This adjustment was {words.get(row.status, row.status)}; only one waiting for "
            "approval can be approved or rejected.",
        )
    # Pending, not one's own to approve: only a key rejecting another's gets here.
    return _needs_a_person("rejecting")


async def _decide(
    connection: AsyncConnection,
    adjustment_id: int,
    actor: audit.Actor,
    *,
    guards: list[ColumnElement[bool]],
    values: dict[str, Any],
    approving: bool,
) -> Adjustment:
    """The guarded UPDATE that settles two decisions at once: only one finds it pending."""
    row = (
        await connection.execute(
            update(adjustments)
            .where(
                adjustments.c.id == adjustment_id,
                adjustments.c.status == Status.PENDING_APPROVAL.value,
                *guards,
            )
            .values(**values)
            .returning(*adjustments.c)
        )
    ).one_or_none()
    if row is None:
        raise await _why_not(connection, adjustment_id, actor, approving=approving)
    return _from_row(row)


async def approve(
    uow: UnitOfWork, actor: audit.Actor, adjustment_id: int, *, note: str | None = None
) -> Adjustment:
    """A second staff member approves a pending adjustment; it is applied at once."""
    if not actor.is_staff:
        raise _needs_a_person("approving")
    decision_note = check_note(note, required=False)
    now = uow.clock.now()

    async def work(connection: AsyncConnection) -> Adjustment:
        # First the claim (the row stays locked to this transaction), then the money:
        # a refusal by the ledger rolls the claim back and the adjustment stays pending.
        claimed = await _decide(
            connection,
            adjustment_id,
            actor,
            guards=[adjustments.c.created_by != actor.actor],
            values={"decided_by": actor.actor, "decided_at": now, "decision_note": decision_note},
            approving=True,
        )
        customer = await _customer(connection, claimed.customer_id)
        transaction_id = await _apply(
            connection, customer, claimed.amount, claimed.reason, actor=actor, now=now
        )
        row = (
            await connection.execute(
                update(adjustments)
                .where(adjustments.c.id == adjustment_id)
                .values(status=Status.APPLIED.value, transaction_id=transaction_id)
                .returning(*adjustments.c)
            )
        ).one()
        adjustment = _from_row(row)
        await audit.record(
            connection,
            actor,
            audit.Action(
                "adjustment.approve",
                target=adjustment.public_id,
                reason=adjustment.reason.value,
                note=decision_note,
                detail=_audit_detail(adjustment),
            ),
            now=now,
        )
        return adjustment

    return await uow.run(work)


async def reject(
    uow: UnitOfWork, actor: audit.Actor, adjustment_id: int, *, note: str | None = None
) -> Adjustment:
    """Turn a pending adjustment down (or, by its creator, withdraw it); no money moves."""
    decision_note = check_note(note, required=False)
    now = uow.clock.now()
    # A staff member may reject anyone's; a key only withdraw its own.
    guards = [] if actor.is_staff else [adjustments.c.created_by == actor.actor]

    async def work(connection: AsyncConnection) -> Adjustment:
        adjustment = await _decide(
            connection,
            adjustment_id,
            actor,
            guards=guards,
            values={
                "status": Status.REJECTED.value,
                "decided_by": actor.actor,
                "decided_at": now,
                "decision_note": decision_note,
            },
            approving=False,
        )
        await audit.record(
            connection,
            actor,
            audit.Action(
                "adjustment.reject",
                target=adjustment.public_id,
                reason=adjustment.reason.value,
                note=decision_note,
                detail={
                    **_audit_detail(adjustment),
                    "withdrawn": adjustment.created_by == actor.actor,
                },
            ),
            now=now,
        )
        return adjustment

    return await uow.run(work)


# --- reading ------------------------------------------------------------------------


def _page_query(limit: int, starting_after: int | None) -> Select[Any]:
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise validation_error(f"limit must be between 1 and {PAGE_SIZE_MAX}.", "limit")
    query = (
        select(adjustments, customers.c.email.label("customer_email"))
        .select_from(adjustments.join(customers, customers.c.id == adjustments.c.customer_id))
        .order_by(adjustments.c.id.desc())
        .limit(limit + 1)
    )
    if starting_after is not None:
        query = query.where(adjustments.c.id < starting_after)
    return query


async def list_adjustments(
    db: Database,
    *,
    status: Status | None = None,
    limit: int = PAGE_SIZE_DEFAULT,
    starting_after: int | None = None,
) -> Page:
    """Adjustments newest first, all or those in `status`, a page at a time."""
    query = _page_query(limit, starting_after)
    if status is not None:
        query = query.where(adjustments.c.status == status.value)
    async with db.transaction(write=False) as connection:
        rows = (await connection.execute(query)).all()
    return Page([_from_row(row) for row in rows[:limit]], len(rows) > limit)


async def pending(
    db: Database, *, limit: int = PAGE_SIZE_DEFAULT, starting_after: int | None = None
) -> Page:
    """The approval queue: adjustments waiting for a second staff member, newest first."""
    return await list_adjustments(
        db, status=Status.PENDING_APPROVAL, limit=limit, starting_after=starting_after
    )


async def list_for_customer(
    connection: AsyncConnection, customer_id: int, *, limit: int = PAGE_SIZE_DEFAULT
) -> list[Adjustment]:
    """A customer's latest adjustments, newest first, in the caller's transaction."""
    rows = (
        await connection.execute(
            select(adjustments)
            .where(adjustments.c.customer_id == customer_id)
            .order_by(adjustments.c.id.desc())
            .limit(limit)
        )
    ).all()
    return [_from_row(row) for row in rows]


async def get(db: Database, adjustment_id: int) -> Adjustment:
    async with db.transaction(write=False) as connection:
        row = (
            await connection.execute(select(adjustments).where(adjustments.c.id == adjustment_id))
        ).one_or_none()
    if row is None:
        raise GiftcardError(
            ErrorCode.NOT_FOUND, f"No adjustment {ids.format_id(ids.ADJUSTMENT, adjustment_id)}."
        )
    return _from_row(row)


__all__ = [
    "REASON_LABELS",
    "Adjustment",
    "Page",
    "Reason",
    "Status",
    "approve",
    "check_amount",
    "check_note",
    "check_reason",
    "create",
    "get",
    "list_adjustments",
    "list_for_customer",
    "parse_signed_major",
    "pending",
    "reject",
]
