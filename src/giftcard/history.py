"""A customer's history: every movement of their available balance, newest first, read
from the ledger's postings (never reconstructed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from giftcard.customers import Customer
from giftcard.db.engine import Database
from giftcard.db.tables import cards, journal_transactions, postings

PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100

# Ledger transaction types as the shopper's history names them (SPEC §6).
_HISTORY_TYPES = {
    "redemption": "redemption",
    "hold": "payment",
    "payment": "payment",
    "capture": "payment",
    "refund": "refund",
    "adjustment": "adjustment",
    "release": "release",
}


@dataclass(frozen=True)
class HistoryItem:
    transaction_id: int
    type: str
    amount: int
    currency: str
    balance_after: int
    description: str
    created_at: datetime
    payment_id: int | None
    card_last4: str | None


@dataclass(frozen=True)
class Page:
    items: list[HistoryItem]
    has_more: bool


async def customer_history(
    db: Database,
    customer: Customer,
    *,
    limit: int = PAGE_SIZE_DEFAULT,
    starting_after: int | None = None,
) -> Page:
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise ValueError("limit out of range")
    query = (
        select(
            postings.c.transaction_id,
            postings.c.amount,
            postings.c.currency,
            postings.c.balance_after,
            journal_transactions.c.type,
            journal_transactions.c.description,
            journal_transactions.c.created_at,
            journal_transactions.c.payment_id,
            cards.c.last4,
        )
        .select_from(
            postings.join(
                journal_transactions, journal_transactions.c.id == postings.c.transaction_id
            ).outerjoin(cards, cards.c.id == journal_transactions.c.card_id)
        )
        .where(postings.c.account_id == customer.available_account_id)
        .order_by(postings.c.id.desc())
        .limit(limit + 1)
    )
    if starting_after is not None:
        query = query.where(postings.c.transaction_id < starting_after)
    async with db.transaction(write=False) as connection:
        rows = (await connection.execute(query)).all()
    items = [
        HistoryItem(
            transaction_id=row.transaction_id,
            type=_HISTORY_TYPES.get(row.type, row.type),
            amount=row.amount,
            currency=row.currency,
            balance_after=row.balance_after,
            description=row.description,
            created_at=row.created_at,
            payment_id=row.payment_id,
            card_last4=row.last4,
        )
        for row in rows[:limit]
    ]
    return Page(items, len(rows) > limit)
