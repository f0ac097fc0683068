"""Support's view of customers: finding them by email, and everything about one of them
(balance, history, cards redeemed, gifts bought, payments, adjustments).

Every use case here reveals something about a customer, so each records an audit entry
(`customer.search`, `customer.view`, `customer.history`) in its own transaction: the
entry is written whether or not anything was found, and a read that failed midway has
still been recorded as attempted. The reads themselves happen after the entry commits.

Searching: a whole address (something with `@` and a dot after it) matches exactly,
case-insensitively; anything shorter is the beginning of an address (at least two
characters), matched with `LIKE` with its `%` and `_` taken literally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, gifts, history, ids
from giftcard.customers import Customer, customer_from_row
from giftcard.db.tables import cards, customers, ledger_accounts, payments
from giftcard.errors import ErrorCode, GiftcardError, validation_error
from giftcard.redemption import Balance
from giftcard.support import adjustments
from giftcard.unit_of_work import UnitOfWork

SEARCH_LIMIT_DEFAULT = 20
SEARCH_LIMIT_MAX = 50
SEARCH_PREFIX_LENGTH_MIN = 2
SEARCH_LENGTH_MAX = 254
DETAIL_HISTORY_SIZE = 20
DETAIL_CARDS_MAX = 20
DETAIL_GIFTS_MAX = 20
DETAIL_PAYMENTS_MAX = 10
DETAIL_ADJUSTMENTS_MAX = 20

_WHOLE_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class CustomerSummary:
    customer: Customer
    balance: Balance

    @property
    def public_id(self) -> str:
        return ids.format_id(ids.CUSTOMER, self.customer.id)


@dataclass(frozen=True)
class SearchResult:
    query: str
    exact: bool
    items: list[CustomerSummary]
    has_more: bool


@dataclass(frozen=True)
class RedeemedCard:
    card_id: int
    serial: str
    last4: str
    amount: int
    currency: str
    redeemed_at: datetime | None


@dataclass(frozen=True)
class PaymentSummary:
    id: int
    order_id: str
    status: str
    currency: str
    amount: int
    gift_card_amount: int
    captured_amount: int
    refunded_amount: int
    created_at: datetime


@dataclass(frozen=True)
class CustomerDetail:
    customer: Customer
    balance: Balance
    history: history.Page
    cards_redeemed: list[RedeemedCard]
    gifts: list[gifts.Gift]
    payments: list[PaymentSummary]
    adjustments: list[adjustments.Adjustment]


# --- searching ----------------------------------------------------------------------


@dataclass(frozen=True)
class EmailQuery:
    text: str
    exact: bool


def check_query(raw: str) -> EmailQuery:
    """The words searched, normalized: a whole address or the beginning of one."""
    if not isinstance(raw, str):
        raise validation_error("Enter an email address or its beginning.", "email")
    text = raw.strip().lower()
    if len(text) > SEARCH_LENGTH_MAX:
        raise validation_error(
            f"An email address has at most {SEARCH_LENGTH_MAX} characters.", "email"
        )
    if not text.isprintable():
        raise validation_error("An email address has no control characters.", "email")
    if _WHOLE_ADDRESS.match(text):
        return EmailQuery(text, exact=True)
    if len(text) < SEARCH_PREFIX_LENGTH_MIN:
        raise validation_error(
            f"Enter at least {SEARCH_PREFIX_LENGTH_MIN} characters of the email address.",
            "email",
        )
    return EmailQuery(text, exact=False)


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _with_balances() -> Select[Any]:
    available = ledger_accounts.alias("available")
    held = ledger_accounts.alias("held")
    return select(
        customers,
        available.c.balance.label("available_balance"),
        held.c.balance.label("held_balance"),
    ).select_from(
        customers.join(available, available.c.id == customers.c.available_account_id).join(
            held, held.c.id == customers.c.held_account_id
        )
    )


def _summary(row: Any) -> CustomerSummary:
    customer = customer_from_row(row)
    return CustomerSummary(
        customer, Balance(customer.currency, int(row.available_balance), int(row.held_balance))
    )


async def find(
    uow: UnitOfWork, actor: audit.Actor, email: str, *, limit: int = SEARCH_LIMIT_DEFAULT
) -> SearchResult:
    """Customers whose email is `email` or begins with it, newest first."""
    if not 1 <= limit <= SEARCH_LIMIT_MAX:
        raise validation_error(f"limit must be between 1 and {SEARCH_LIMIT_MAX}.", "limit")
    query = check_query(email)
    statement = _with_balances().order_by(customers.c.id.desc()).limit(limit + 1)
    if query.exact:
        statement = statement.where(customers.c.email == query.text)
    else:
        statement = statement.where(customers.c.email.like(_like_prefix(query.text), escape="\\"))

    async def work(connection: AsyncConnection) -> SearchResult:
        rows = (await connection.execute(statement)).all()
        items = [_summary(row) for row in rows[:limit]]
        await audit.record(
            connection,
            actor,
            audit.Action(
                "customer.search",
                target=query.text,
                detail={"found": len(items), "exact": query.exact},
            ),
            now=uow.clock.now(),
        )
        return SearchResult(query.text, query.exact, items, len(rows) > limit)

    return await uow.run(work)


# --- one customer -------------------------------------------------------------------


def _no_customer(customer_id: int) -> GiftcardError:
    return GiftcardError(
        ErrorCode.NOT_FOUND, f"No customer {ids.format_id(ids.CUSTOMER, customer_id)}."
    )


async def load(connection: AsyncConnection, customer_id: int) -> CustomerSummary:
    row = (
        await connection.execute(_with_balances().where(customers.c.id == customer_id))
    ).one_or_none()
    if row is None:
        raise _no_customer(customer_id)
    return _summary(row)


async def _audited_summary(
    uow: UnitOfWork,
    actor: audit.Actor,
    customer_id: int,
    action: str,
    detail: dict[str, Any] | None = None,
) -> CustomerSummary:
    """The customer and balance, read in the transaction that records `action`."""

    async def work(connection: AsyncConnection) -> CustomerSummary:
        summary = await load(connection, customer_id)
        await audit.record(
            connection,
            actor,
            audit.Action(action, target=summary.public_id, detail=detail),
            now=uow.clock.now(),
        )
        return summary

    return await uow.run(work)


async def detail(
    uow: UnitOfWork,
    actor: audit.Actor,
    customer_id: int,
    *,
    history_limit: int = DETAIL_HISTORY_SIZE,
    history_starting_after: int | None = None,
) -> CustomerDetail:
    """Everything support needs to answer a customer: balance, the latest history (or
    the page of it after `history_starting_after`), cards redeemed into the account,
    gifts bought, payments and adjustments."""
    if not 1 <= history_limit <= history.PAGE_SIZE_MAX:
        raise validation_error(f"limit must be between 1 and {history.PAGE_SIZE_MAX}.", "limit")
    summary = await _audited_summary(
        uow,
        actor,
        customer_id,
        "customer.view",
        None
        if history_starting_after is None
        else {"starting_after": ids.format_id(ids.TRANSACTION, history_starting_after)},
    )
    db = uow.db
    async with db.transaction(write=False) as connection:
        redeemed = (
            await connection.execute(
                select(
                    cards.c.id,
                    cards.c.serial,
                    cards.c.last4,
                    cards.c.amount,
                    cards.c.currency,
                    cards.c.redeemed_at,
                )
                .where(cards.c.redeemed_customer_id == customer_id)
                .order_by(cards.c.redeemed_at.desc(), cards.c.id.desc())
                .limit(DETAIL_CARDS_MAX)
            )
        ).all()
        paid = (
            await connection.execute(
                select(payments)
                .where(payments.c.customer_id == customer_id)
                .order_by(payments.c.id.desc())
                .limit(DETAIL_PAYMENTS_MAX)
            )
        ).all()
        adjusted = await adjustments.list_for_customer(
            connection, customer_id, limit=DETAIL_ADJUSTMENTS_MAX
        )
    latest = await history.customer_history(
        db, summary.customer, limit=history_limit, starting_after=history_starting_after
    )
    bought = await gifts.list_for_purchaser(
        db, customer_id, clock=uow.clock, limit=DETAIL_GIFTS_MAX
    )
    return CustomerDetail(
        customer=summary.customer,
        balance=summary.balance,
        history=latest,
        cards_redeemed=[
            RedeemedCard(row.id, row.serial, row.last4, row.amount, row.currency, row.redeemed_at)
            for row in redeemed
        ],
        gifts=bought.items,
        payments=[
            PaymentSummary(
                id=row.id,
                order_id=row.order_id,
                status=row.status,
                currency=row.currency,
                amount=row.amount,
                gift_card_amount=row.gift_card_amount,
                captured_amount=row.captured_amount,
                refunded_amount=row.refunded_amount,
                created_at=row.created_at,
            )
            for row in paid
        ],
        adjustments=adjusted,
    )


@dataclass(frozen=True)
class HistoryPage:
    customer: CustomerSummary
    page: history.Page


async def customer_history(
    uow: UnitOfWork,
    actor: audit.Actor,
    customer_id: int,
    *,
    limit: int = history.PAGE_SIZE_DEFAULT,
    starting_after: int | None = None,
) -> HistoryPage:
    """The customer's full history, a page at a time, as `GET /v1/me/transactions`."""
    if not 1 <= limit <= history.PAGE_SIZE_MAX:
        raise validation_error(f"limit must be between 1 and {history.PAGE_SIZE_MAX}.", "limit")
    detail_fields: dict[str, Any] = {}
    if starting_after is not None:
        detail_fields["starting_after"] = ids.format_id(ids.TRANSACTION, starting_after)
    summary = await _audited_summary(
        uow, actor, customer_id, "customer.history", detail_fields or None
    )
    page = await history.customer_history(
        uow.db, summary.customer, limit=limit, starting_after=starting_after
    )
    return HistoryPage(summary, page)


__all__ = [
    "CustomerDetail",
    "CustomerSummary",
    "HistoryPage",
    "PaymentSummary",
    "RedeemedCard",
    "SearchResult",
    "check_query",
    "correct_gift_recipient",
    "customer_history",
    "detail",
    "find",
    "load",
    "resend_gift",
]


# --- gifts --------------------------------------------------------------------------


async def resend_gift(uow: UnitOfWork, actor: audit.Actor, gift_id: int) -> gifts.Gift:
    """Staff (or a key) send a gift's email again; audited `gift.resend`."""

    async def record(connection: AsyncConnection, gift: gifts.Gift) -> None:
        await audit.record(
            connection,
            actor,
            audit.Action(
                "gift.resend",
                target=gift.public_id,
                detail={"recipient_email": gift.recipient_email, "card_last4": gift.card_last4},
            ),
            now=uow.clock.now(),
        )

    return await gifts.resend(uow, gift_id, actor=actor.actor, on_resent=record)


async def correct_gift_recipient(
    uow: UnitOfWork,
    actor: audit.Actor,
    gift_id: int,
    *,
    recipient_email: str,
    recipient_name: str | None,
    secret_key: bytes,
) -> gifts.Correction:
    """Send a gift to the right address (a new code if the wrong one saw it); audited
    `gift.correct_recipient` with both addresses."""

    async def record(connection: AsyncConnection, correction: gifts.Correction) -> None:
        await audit.record(
            connection,
            actor,
            audit.Action(
                "gift.correct_recipient",
                target=correction.gift.public_id,
                detail={
                    "from": correction.previous_email,
                    "to": correction.gift.recipient_email,
                    "new_code": correction.rekeyed,
                    "card_last4": correction.gift.card_last4,
                },
            ),
            now=uow.clock.now(),
        )

    return await gifts.correct_recipient(
        uow,
        gift_id,
        recipient_email=recipient_email,
        recipient_name=recipient_name,
        actor=actor.actor,
        secret_key=secret_key,
        on_corrected=record,
    )
