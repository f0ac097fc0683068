"""Reports: the store's outstanding gift card liability, reconciled against the ledger,
and its daily activity. Read-only queries, one snapshot of the database.

What the store owes, per region and currency, is read from the records people act on:
the value of cards that can still be redeemed (active ones, expired ones, whose value
stays on the ledger until someone decides otherwise, and frozen ones that were funded)
and what customers hold in their balances, available or held for a payment. Per
currency, that total is then checked twice against the ledger (:mod:`giftcard.ledger`):

* it equals the sum of the tracked ledger accounts of those kinds (card, customer
  available, customer held): the records and the balances agree;
* the tracked accounts' total equals minus the sum of every posting on the system
  accounts (issuance, payments, store credit, adjustments): double entry holds, since
  every journal transaction sums to zero.

Each figure is reported with the differences, so that a report that does not reconcile
says by how much and on which side; `giftcard verify` then names the culprits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db.engine import Database
from giftcard.db.tables import cards, customers, journal_transactions, ledger_accounts, postings
from giftcard.errors import validation_error
from giftcard.ledger import AccountKind, TransactionType

DAYS_DEFAULT = 30
DAYS_MAX = 366

# The ledger account kinds whose balances are what the store owes.
OWED_KINDS = (AccountKind.CARD, AccountKind.CUSTOMER_AVAILABLE, AccountKind.CUSTOMER_HELD)
SERIES = ("issued", "redeemed", "spent", "refunded", "adjusted")
# Which journal transactions make each daily series (adjustments are read apart, from
# their system account, as a net signed figure).
_SERIES_OF_TYPE = {
    TransactionType.ISSUE.value: "issued",
    TransactionType.ACTIVATION.value: "issued",
    TransactionType.REDEMPTION.value: "redeemed",
    TransactionType.PAYMENT.value: "spent",
    TransactionType.CAPTURE.value: "spent",
    TransactionType.REFUND.value: "refunded",
}


@dataclass
class RegionFigures:
    """What one region owes in its currency, in minor units. `region` is None for
    system postings no customer's region can be found for."""

    region: str | None
    currency: str
    active_cards: int = 0
    active_value: int = 0
    expired_cards: int = 0
    expired_value: int = 0
    frozen_cards: int = 0
    frozen_value: int = 0
    inactive_cards: int = 0
    customers: int = 0
    customers_available: int = 0
    customers_held: int = 0
    store_credit_given: int = 0
    net_adjustments: int = 0

    @property
    def outstanding(self) -> int:
        """Everything still owed: card values that can be redeemed, and balances."""
        return (
            self.active_value
            + self.expired_value
            + self.frozen_value
            + self.customers_available
            + self.customers_held
        )


@dataclass(frozen=True)
class Reconciliation:
    currency: str
    # From cards and customers (the sum of the regions' `outstanding`).
    cards_and_customers: int
    # The sum of the tracked ledger accounts of the owed kinds.
    ledger_tracked_accounts: int
    # Minus the sum of every posting on the system accounts.
    ledger_system_accounts: int

    @property
    def difference_tracked(self) -> int:
        return self.ledger_tracked_accounts - self.cards_and_customers

    @property
    def difference_system(self) -> int:
        return self.ledger_system_accounts - self.ledger_tracked_accounts

    @property
    def reconciled(self) -> bool:
        return self.difference_tracked == 0 and self.difference_system == 0


@dataclass(frozen=True)
class DayActivity:
    day: date
    issued: int = 0
    redeemed: int = 0
    spent: int = 0
    refunded: int = 0
    adjusted: int = 0


@dataclass(frozen=True)
class CurrencyActivity:
    currency: str
    # One per day of the window, oldest first, days without movements included.
    days: list[DayActivity]


@dataclass(frozen=True)
class LiabilityReport:
    generated_at: datetime
    first_day: date
    last_day: date
    regions: list[RegionFigures]
    reconciliations: list[Reconciliation]
    activity: list[CurrencyActivity] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        return all(item.reconciled for item in self.reconciliations)


def window(now: datetime, days: int) -> tuple[date, date]:
    """The first and last day (UTC) of the last `days` days, today included."""
    if isinstance(days, bool) or not 1 <= days <= DAYS_MAX:
        raise validation_error(f"days must be from 1 to {DAYS_MAX}.", "days")
    today = now.astimezone(UTC).date()
    return today - timedelta(days=days - 1), today


async def liability(db: Database, *, now: datetime, days: int = DAYS_DEFAULT) -> LiabilityReport:
    """The liability report as of `now`, with activity over the last `days` days."""
    first_day, last_day = window(now, days)
    async with db.transaction(write=False) as connection:
        if connection.dialect.name == "postgresql":
            # One snapshot for every query, so that work committed meanwhile cannot make
            # one figure disagree with another.
            await connection.execute(
                text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            )
        regions = await _regions(connection, now)
        reconciliations = await _reconciliations(connection, regions)
        activity = await _activity(connection, first_day, last_day)
    currencies = {item.currency for item in reconciliations}
    for currency in currencies - {item.currency for item in activity}:
        activity.append(CurrencyActivity(currency, _empty_days(first_day, last_day)))
    activity.sort(key=lambda item: item.currency)
    return LiabilityReport(now, first_day, last_day, regions, reconciliations, activity)


def _total(condition: ColumnElement[bool], value: Any = 1) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, value), else_=0)), 0)


async def _regions(connection: AsyncConnection, now: datetime) -> list[RegionFigures]:
    figures: dict[tuple[str | None, str], RegionFigures] = {}

    def figure(region: str | None, currency: str) -> RegionFigures:
        return figures.setdefault((region, currency), RegionFigures(region, currency))

    card = cards.c
    active = card.state == "active"
    unexpired = card.expires_at.is_(None) | (card.expires_at > now)
    expired = and_(active, card.expires_at.is_not(None), card.expires_at <= now)
    frozen = card.state == "frozen"
    funded_frozen = and_(frozen, card.activated_at.is_not(None))
    card_rows = await connection.execute(
        select(
            card.region,
            card.currency,
            _total(and_(active, unexpired)).label("active_cards"),
            _total(and_(active, unexpired), card.amount).label("active_value"),
            _total(expired).label("expired_cards"),
            _total(expired, card.amount).label("expired_value"),
            _total(frozen).label("frozen_cards"),
            _total(funded_frozen, card.amount).label("frozen_value"),
            _total(card.state == "inactive").label("inactive_cards"),
        ).group_by(card.region, card.currency)
    )
    for row in card_rows:
        target = figure(row.region, row.currency)
        for name in (
            "active_cards",
            "active_value",
            "expired_cards",
            "expired_value",
            "frozen_cards",
            "frozen_value",
            "inactive_cards",
        ):
            setattr(target, name, int(getattr(row, name)))

    available = ledger_accounts.alias("available")
    held = ledger_accounts.alias("held")
    customer_rows = await connection.execute(
        select(
            customers.c.region,
            customers.c.currency,
            func.count().label("customers"),
            func.coalesce(func.sum(available.c.balance), 0).label("available"),
            func.coalesce(func.sum(held.c.balance), 0).label("held"),
        )
        .select_from(customers)
        .join(available, available.c.id == customers.c.available_account_id)
        .join(held, held.c.id == customers.c.held_account_id)
        .group_by(customers.c.region, customers.c.currency)
    )
    for row in customer_rows:
        target = figure(row.region, row.currency)
        target.customers = int(row.customers)
        target.customers_available = int(row.available)
        target.customers_held = int(row.held)

    for kind, name in (
        (AccountKind.STORE_CREDIT, "store_credit_given"),
        (AccountKind.ADJUSTMENTS, "net_adjustments"),
    ):
        for region, currency, given in await _given_by_region(connection, kind):
            setattr(figure(region, currency), name, given)
    return sorted(figures.values(), key=lambda item: (item.currency, item.region or ""))


async def _given_by_region(
    connection: AsyncConnection, kind: AccountKind
) -> list[tuple[str | None, str, int]]:
    """What a system account gave customers (minus its postings), by the region of the
    customer each journal transaction names."""
    rows = await connection.execute(
        select(
            customers.c.region,
            postings.c.currency,
            (-func.sum(postings.c.amount)).label("given"),
        )
        .select_from(postings)
        .join(ledger_accounts, ledger_accounts.c.id == postings.c.account_id)
        .join(journal_transactions, journal_transactions.c.id == postings.c.transaction_id)
        .outerjoin(customers, customers.c.id == journal_transactions.c.customer_id)
        .where(ledger_accounts.c.kind == kind.value, ledger_accounts.c.tracked.is_(False))
        .group_by(customers.c.region, postings.c.currency)
    )
    return [(row.region, row.currency, int(row.given)) for row in rows]


async def _reconciliations(
    connection: AsyncConnection, regions: Sequence[RegionFigures]
) -> list[Reconciliation]:
    from_records: dict[str, int] = defaultdict(int)
    for item in regions:
        from_records[item.currency] += item.outstanding
    account = ledger_accounts.c
    tracked = {
        row.currency: int(row.total)
        for row in await connection.execute(
            select(account.currency, func.coalesce(func.sum(account.balance), 0).label("total"))
            .where(account.tracked.is_(True), account.kind.in_([k.value for k in OWED_KINDS]))
            .group_by(account.currency)
        )
    }
    system = {
        row.currency: -int(row.total)
        for row in await connection.execute(
            select(
                postings.c.currency, func.coalesce(func.sum(postings.c.amount), 0).label("total")
            )
            .select_from(postings)
            .join(ledger_accounts, account.id == postings.c.account_id)
            .where(account.tracked.is_(False))
            .group_by(postings.c.currency)
        )
    }
    currencies = sorted(set(from_records) | set(tracked) | set(system))
    return [
        Reconciliation(
            currency,
            cards_and_customers=from_records.get(currency, 0),
            ledger_tracked_accounts=tracked.get(currency, 0),
            ledger_system_accounts=system.get(currency, 0),
        )
        for currency in currencies
    ]


def _day_of(connection: AsyncConnection, moment: ColumnElement[Any]) -> ColumnElement[str]:
    """The UTC day of a stored timestamp as text, `2026-12-02`."""
    if connection.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", moment), "YYYY-MM-DD")
    # SQLite keeps UTC timestamps as text starting with the day.
    return func.substr(moment, 1, 10)


def _empty_days(first_day: date, last_day: date) -> list[DayActivity]:
    count = (last_day - first_day).days + 1
    return [DayActivity(first_day + timedelta(days=offset)) for offset in range(count)]


async def _activity(
    connection: AsyncConnection, first_day: date, last_day: date
) -> list[CurrencyActivity]:
    since = datetime.combine(first_day, time(0, 0), tzinfo=UTC)
    until = datetime.combine(last_day + timedelta(days=1), time(0, 0), tzinfo=UTC)
    transaction = journal_transactions.c
    day = _day_of(connection, transaction.created_at).label("day")
    in_window = and_(transaction.created_at >= since, transaction.created_at < until)
    sums: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(SERIES, 0))
    moved = await connection.execute(
        select(
            day,
            transaction.currency,
            transaction.type,
            _total(postings.c.amount > 0, postings.c.amount).label("amount"),
        )
        .select_from(journal_transactions)
        .join(postings, postings.c.transaction_id == transaction.id)
        .where(in_window, transaction.type.in_(list(_SERIES_OF_TYPE)))
        .group_by(day, transaction.currency, transaction.type)
    )
    for row in moved:
        sums[(row.currency, row.day)][_SERIES_OF_TYPE[row.type]] += int(row.amount)
    adjusted = await connection.execute(
        select(day, postings.c.currency, (-func.sum(postings.c.amount)).label("amount"))
        .select_from(postings)
        .join(journal_transactions, transaction.id == postings.c.transaction_id)
        .join(ledger_accounts, ledger_accounts.c.id == postings.c.account_id)
        .where(
            in_window,
            ledger_accounts.c.kind == AccountKind.ADJUSTMENTS.value,
            ledger_accounts.c.tracked.is_(False),
        )
        .group_by(day, postings.c.currency)
    )
    for row in adjusted:
        sums[(row.currency, row.day)]["adjusted"] += int(row.amount)
    by_currency: dict[str, list[DayActivity]] = {}
    for currency in sorted({currency for currency, _ in sums}):
        by_currency[currency] = [
            DayActivity(item.day, **sums.get((currency, item.day.isoformat()), {}))
            for item in _empty_days(first_day, last_day)
        ]
    return [CurrencyActivity(currency, days) for currency, days in by_currency.items()]
