"""The only place where balances change.

Every movement of money is one journal transaction whose postings sum to zero; each
posting on a tracked account (a card's value, a customer's available or held balance)
updates that account's balance in the same database transaction, guarded so that it
never goes below zero, and records the balance after it. The store's own side of each
movement (issued value, adjustments, ...) lives in untracked system accounts whose
balance is the sum of their postings, which keeps the hot paths off a single shared row.

Accounts are always updated in ascending id order, so two transactions touching the same
accounts lock them in the same order and cannot deadlock each other.
"""

from __future__ import annotations

import enum
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import BigInteger, Engine, bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db import direct
from giftcard.db.bulk import copy_rows
from giftcard.db.tables import journal_transactions, ledger_accounts, postings
from giftcard.errors import ErrorCode, GiftcardError, LedgerInvariantError

POSTINGS_PER_TRANSACTION_MAX = 100_001


class AccountKind(enum.StrEnum):
    CUSTOMER_AVAILABLE = "customer_available"
    CUSTOMER_HELD = "customer_held"
    CARD = "card"
    # System accounts, one per currency, created by the migrations.
    ISSUANCE = "issuance"
    ADJUSTMENTS = "adjustments"
    PAYMENTS = "payments"
    # Refunds of what another payment method paid, credited to a balance at the
    # shopper's wish: new value the store gives, like issuing a card.
    STORE_CREDIT = "store_credit"


SYSTEM_KINDS = frozenset(
    {
        AccountKind.ISSUANCE,
        AccountKind.ADJUSTMENTS,
        AccountKind.PAYMENTS,
        AccountKind.STORE_CREDIT,
    }
)


class TransactionType(enum.StrEnum):
    ISSUE = "issue"
    ACTIVATION = "activation"
    REDEMPTION = "redemption"
    CANCELLATION = "cancellation"
    HOLD = "hold"
    CAPTURE = "capture"
    RELEASE = "release"
    PAYMENT = "payment"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class InsufficientBalance(GiftcardError):
    """A tracked account would have gone below zero; nothing was written."""

    def __init__(self, account_id: int) -> None:
        super().__init__(ErrorCode.INSUFFICIENT_BALANCE, "The balance is too low for this.")
        self.account_id = account_id


@dataclass(frozen=True)
class Posting:
    account_id: int
    amount: int
    # False for system accounts, whose balance is derived from their postings.
    tracked: bool = True


@dataclass(frozen=True)
class Entry:
    type: TransactionType
    currency: str
    description: str
    actor: str
    postings: Sequence[Posting]
    customer_id: int | None = None
    card_id: int | None = None
    payment_id: int | None = None


@dataclass(frozen=True)
class Posted:
    transaction_id: int
    created_at: datetime
    # The balance after the transaction, for each tracked account it touched.
    balances_after: dict[int, int]


def check_entry(entry: Entry) -> None:
    """Refuse an entry that would break double entry, before anything is written."""
    if len(entry.postings) < 2:
        raise LedgerInvariantError("a journal transaction needs at least two postings")
    if len(entry.postings) > POSTINGS_PER_TRANSACTION_MAX:
        raise LedgerInvariantError("too many postings in one journal transaction")
    if len({posting.account_id for posting in entry.postings}) != len(entry.postings):
        raise LedgerInvariantError("an account appears twice in one journal transaction")
    for posting in entry.postings:
        if type(posting.amount) is not int or posting.amount == 0:
            raise LedgerInvariantError(f"posting amount must be a non-zero int: {posting!r}")
    if sum(posting.amount for posting in entry.postings) != 0:
        raise LedgerInvariantError(f"postings of a {entry.type} transaction do not sum to zero")


# The statements of the hot paths are built once: building and hashing a statement costs
# more of SQLAlchemy's time than running a cached one (see `make bench`).
_INSERT_TRANSACTION = insert(journal_transactions).returning(journal_transactions.c.id)
_INSERT_POSTINGS = insert(postings)
# On PostgreSQL the whole entry is one statement, one round trip: the tracked accounts are
# locked in ascending id order (so that two entries cannot deadlock), each moved only if
# it stays at or above zero; the journal transaction and its postings are written only if
# every one of them moved. Otherwise the statement answers no transaction, and `post`
# finds out which account refused.
_POST_ENTRY = text(
    "WITH locked AS ("
    "SELECT id FROM ledger_accounts WHERE id = ANY(CAST(:moves AS bigint[])) "
    "ORDER BY id FOR UPDATE), "
    "moved AS ("
    "UPDATE ledger_accounts AS account SET balance = account.balance + move.amount "
    "FROM unnest(CAST(:moves AS bigint[]), CAST(:move_amounts AS bigint[])) "
    "AS move(account_id, amount) "
    "WHERE account.id = move.account_id AND account.id IN (SELECT id FROM locked) "
    "AND account.tracked IS true AND account.currency = :currency "
    "AND account.balance + move.amount >= 0 "
    "RETURNING account.id, account.balance), "
    "entry AS ("
    "INSERT INTO journal_transactions (type, currency, description, actor, customer_id, "
    "card_id, payment_id, created_at) SELECT :type, :currency, :description, :actor, "
    ":customer_id, :card_id, :payment_id, :created_at "
    "WHERE (SELECT count(*) FROM moved) = cardinality(CAST(:moves AS bigint[])) "
    "RETURNING id), "
    "lines AS (INSERT INTO postings (transaction_id, account_id, amount, currency, "
    "balance_after) SELECT entry.id, line.account_id, line.amount, :currency, "
    "moved.balance FROM entry, unnest(CAST(:accounts AS bigint[]), "
    "CAST(:amounts AS bigint[])) WITH ORDINALITY AS line(account_id, amount, position) "
    "LEFT JOIN moved ON moved.id = line.account_id "
    "ORDER BY line.position) "
    "SELECT (SELECT id FROM entry) AS transaction_id, "
    "coalesce(array_agg(moved.id), '{}') AS moved, "
    "coalesce(array_agg(moved.balance), '{}') AS balances FROM moved"
).bindparams(bindparam("created_at", type_=journal_transactions.c.created_at.type))
_AMOUNT = bindparam("b_amount", type_=BigInteger)
_MOVE = (
    update(ledger_accounts)
    .where(
        ledger_accounts.c.id == bindparam("b_account_id"),
        ledger_accounts.c.tracked.is_(True),
        ledger_accounts.c.currency == bindparam("b_currency"),
        ledger_accounts.c.balance + _AMOUNT >= 0,
    )
    .values(balance=ledger_accounts.c.balance + _AMOUNT)
    .returning(ledger_accounts.c.balance)
)
_BALANCE = select(ledger_accounts.c.balance).where(
    ledger_accounts.c.id == bindparam("b_account_id")
)


async def post(connection: AsyncConnection, entry: Entry, *, now: datetime) -> Posted:
    """Move the balances an entry names, then write it as one balanced journal
    transaction with its postings, each recording its account's balance after it."""
    check_entry(entry)
    journal = {
        "type": entry.type.value,
        "currency": entry.currency,
        "description": entry.description[:500],
        "actor": entry.actor,
        "customer_id": entry.customer_id,
        "card_id": entry.card_id,
        "payment_id": entry.payment_id,
        "created_at": now,
    }
    tracked = sorted((p for p in entry.postings if p.tracked), key=lambda p: p.account_id)
    if connection.dialect.name == "postgresql":
        row = (
            await direct.execute(
                connection,
                _POST_ENTRY,
                journal
                | {
                    "moves": [posting.account_id for posting in tracked],
                    "move_amounts": [posting.amount for posting in tracked],
                    "accounts": [posting.account_id for posting in entry.postings],
                    "amounts": [posting.amount for posting in entry.postings],
                },
            )
        ).one()
        if row.transaction_id is None:
            await _refuse(connection, tracked, set(row.moved), entry.currency)
        return Posted(row.transaction_id, now, dict(zip(row.moved, row.balances, strict=True)))
    balances_after: dict[int, int] = {}
    for posting in tracked:
        balances_after[posting.account_id] = await _move(connection, posting, entry.currency)
    transaction_id = (await direct.execute(connection, _INSERT_TRANSACTION, journal)).scalar_one()
    await direct.execute(
        connection,
        _INSERT_POSTINGS,
        [
            {
                "transaction_id": transaction_id,
                "account_id": posting.account_id,
                "amount": posting.amount,
                "currency": entry.currency,
                "balance_after": balances_after.get(posting.account_id),
            }
            for posting in entry.postings
        ],
    )
    return Posted(transaction_id, now, balances_after)


# Many entries in one statement (PostgreSQL): their tracked accounts locked in ascending
# id order, each moved once by the sum of its postings; the journal transactions (ids
# drawn first, so that each entry knows its own) and their postings are written only if
# every account moved and none went below zero at any posting, in the entries' order:
# what posting them one after the other would have done. Otherwise nothing answers a
# transaction, and `post_many` refuses the whole batch.
_POST_ENTRIES = text(
    "WITH line AS MATERIALIZED (SELECT * FROM unnest(CAST(:line_entries AS int[]), "
    "CAST(:line_accounts AS bigint[]), CAST(:line_amounts AS bigint[]), "
    "CAST(:line_tracked AS boolean[]), CAST(:line_currencies AS text[])) WITH ORDINALITY "
    "AS line(entry, account_id, amount, tracked, currency, position)), "
    "move AS (SELECT account_id, min(currency) AS currency, sum(amount) AS amount "
    "FROM line WHERE tracked GROUP BY account_id), "
    "locked AS (SELECT id FROM ledger_accounts WHERE id IN (SELECT account_id FROM move) "
    "ORDER BY id FOR UPDATE), "
    "moved AS (UPDATE ledger_accounts AS account SET balance = account.balance + move.amount "
    "FROM move WHERE account.id = move.account_id AND account.id IN (SELECT id FROM locked) "
    "AND account.tracked IS true AND account.currency = move.currency "
    "AND account.balance + move.amount >= 0 RETURNING account.id, account.balance), "
    "after AS MATERIALIZED (SELECT line.entry, line.position, line.account_id, "
    "moved.balance - coalesce(sum(line.amount) OVER (PARTITION BY line.account_id "
    "ORDER BY line.position ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0) "
    "AS balance FROM line JOIN moved ON moved.id = line.account_id WHERE line.tracked), "
    "good AS (SELECT (SELECT count(*) FROM moved) = (SELECT count(*) FROM move) "
    "AND NOT EXISTS (SELECT 1 FROM after WHERE balance < 0) AS ok), "
    "entry AS MATERIALIZED (SELECT e.*, nextval(pg_get_serial_sequence("
    "'journal_transactions', 'id')) AS id FROM unnest(CAST(:types AS text[]), "
    "CAST(:currencies AS text[]), CAST(:descriptions AS text[]), CAST(:actors AS text[]), "
    "CAST(:customer_ids AS bigint[]), CAST(:card_ids AS bigint[]), "
    "CAST(:payment_ids AS bigint[])) WITH ORDINALITY AS e(type, currency, description, "
    "actor, customer_id, card_id, payment_id, number) WHERE (SELECT ok FROM good)), "
    "journal AS (INSERT INTO journal_transactions (id, type, currency, description, actor, "
    "customer_id, card_id, payment_id, created_at) SELECT id, type, currency, description, "
    "actor, customer_id, card_id, payment_id, :created_at FROM entry ORDER BY number), "
    "lines AS (INSERT INTO postings (transaction_id, account_id, amount, currency, "
    "balance_after) SELECT entry.id, line.account_id, line.amount, line.currency, "
    "after.balance FROM line JOIN entry ON entry.number = line.entry "
    "LEFT JOIN after ON after.position = line.position ORDER BY line.position) "
    "SELECT (SELECT array_agg(id ORDER BY number) FROM entry) AS transaction_ids, "
    "(SELECT array_agg(entry ORDER BY position) FROM after) AS entries, "
    "(SELECT array_agg(account_id ORDER BY position) FROM after) AS accounts, "
    "(SELECT array_agg(balance ORDER BY position) FROM after) AS balances, "
    "(SELECT array_agg(id) FROM moved) AS moved"
).bindparams(bindparam("created_at", type_=journal_transactions.c.created_at.type))


async def post_many(
    connection: AsyncConnection, entries: Sequence[Entry], *, now: datetime
) -> list[Posted]:
    """:func:`post` for each of `entries`, in their order, in one statement on
    PostgreSQL. All of them are posted or none: when one of them would take an account
    below zero (or posts to an unusable one), this raises as :func:`post` does for it,
    and the caller's transaction must be rolled back."""
    currency_of: dict[int, str] = {}
    for entry in entries:
        check_entry(entry)
        for posting in entry.postings:
            if currency_of.setdefault(posting.account_id, entry.currency) != entry.currency:
                raise LedgerInvariantError(f"account {posting.account_id} in two currencies")
    if connection.dialect.name != "postgresql":
        return [await post(connection, entry, now=now) for entry in entries]
    lines: dict[str, list[object]] = {
        name: [] for name in ("entries", "accounts", "amounts", "tracked", "currencies")
    }
    for number, entry in enumerate(entries, start=1):
        for posting in entry.postings:
            for name, value in zip(
                lines,
                (number, posting.account_id, posting.amount, posting.tracked, entry.currency),
                strict=True,
            ):
                lines[name].append(value)
    row = (
        await direct.execute(
            connection,
            _POST_ENTRIES,
            {f"line_{name}": values for name, values in lines.items()}
            | {
                "types": [entry.type.value for entry in entries],
                "currencies": [entry.currency for entry in entries],
                "descriptions": [entry.description[:500] for entry in entries],
                "actors": [entry.actor for entry in entries],
                "customer_ids": [entry.customer_id for entry in entries],
                "card_ids": [entry.card_id for entry in entries],
                "payment_ids": [entry.payment_id for entry in entries],
                "created_at": now,
            },
        )
    ).one()
    if row.transaction_ids is None:
        await _refuse_many(connection, entries, row)
    balances_after: list[dict[int, int]] = [{} for _ in entries]
    for number, account_id, balance in zip(row.entries, row.accounts, row.balances, strict=True):
        balances_after[number - 1][account_id] = int(balance)
    return [
        Posted(transaction_id, now, after)
        for transaction_id, after in zip(row.transaction_ids, balances_after, strict=True)
    ]


async def _refuse_many(connection: AsyncConnection, entries: Sequence[Entry], row: Any) -> NoReturn:
    """Why a batch of entries was refused: an account that did not move (see
    :func:`_refuse`), or else the first that the entries' order took below zero."""
    moved = set(row.moved or ())
    for entry in entries:
        tracked = sorted((p for p in entry.postings if p.tracked), key=lambda p: p.account_id)
        if any(posting.account_id not in moved for posting in tracked):
            await _refuse(connection, tracked, moved, entry.currency)
    for account_id, balance in zip(row.accounts or (), row.balances or (), strict=True):
        if balance < 0:
            raise InsufficientBalance(account_id)
    raise LedgerInvariantError("a batch of entries was refused for no reason found")


async def _move(connection: AsyncConnection, posting: Posting, currency: str) -> int:
    """Add to one tracked account's balance, never below zero; return the new balance."""
    new_balance = (
        await direct.execute(
            connection,
            _MOVE,
            {
                "b_account_id": posting.account_id,
                "b_currency": currency,
                "b_amount": posting.amount,
            },
        )
    ).scalar_one_or_none()
    if new_balance is not None:
        return int(new_balance)
    await _refuse(connection, [posting], set(), currency)


async def _refuse(
    connection: AsyncConnection, tracked: Sequence[Posting], moved: set[int], currency: str
) -> NoReturn:
    """Why the first of `tracked` (in ascending id order) that did not move was refused:
    an account that cannot take postings in `currency`, or one that would go below zero.
    The caller's transaction must be rolled back: earlier accounts may have moved."""
    posting = next(p for p in tracked if p.account_id not in moved)
    account = ledger_accounts.c
    row = (
        await connection.execute(
            select(account.tracked, account.currency).where(account.id == posting.account_id)
        )
    ).one_or_none()
    if row is None or not row.tracked or row.currency != currency:
        raise LedgerInvariantError(f"posting to an unusable account: {posting!r} in {currency}")
    raise InsufficientBalance(posting.account_id)


async def open_card_accounts(
    connection: AsyncConnection,
    account_ids: Sequence[int],
    *,
    currency: str,
    funded_amount: int,
    description: str,
    actor: str,
    now: datetime,
) -> None:
    """Open many card accounts at once (ids from :func:`allocate_ids`), each funded with
    `funded_amount` from the issuance account in one journal transaction, or empty."""
    count = len(account_ids)
    if funded_amount < 0 or count == 0:
        raise LedgerInvariantError("card accounts open empty or with a positive amount")
    # One posting per card and one for the issuance account that pays them all.
    if count + 1 > POSTINGS_PER_TRANSACTION_MAX:
        raise LedgerInvariantError("too many card accounts for one journal transaction")
    await copy_rows(
        connection,
        ledger_accounts,
        {"id": account_ids},
        {
            "kind": AccountKind.CARD.value,
            "currency": currency,
            "tracked": True,
            "balance": funded_amount,
            "created_at": now,
        },
    )
    if funded_amount == 0:
        return
    issuance = await system_account(connection, AccountKind.ISSUANCE, currency)
    transaction_id = (
        await connection.execute(
            insert(journal_transactions)
            .values(
                type=TransactionType.ISSUE.value,
                currency=currency,
                description=description[:500],
                actor=actor,
                created_at=now,
            )
            .returning(journal_transactions.c.id)
        )
    ).scalar_one()
    # The issuance account pays for every card in one posting; each card's posting
    # records the balance its account opens with.
    await copy_rows(
        connection,
        postings,
        {
            "account_id": [issuance.account_id, *account_ids],
            "amount": [-funded_amount * count] + [funded_amount] * count,
            "balance_after": [None] + [funded_amount] * count,
        },
        {"transaction_id": transaction_id, "currency": currency},
    )


async def open_account(
    connection: AsyncConnection, kind: AccountKind, currency: str, *, now: datetime
) -> int:
    """A new tracked account with a zero balance."""
    if kind in SYSTEM_KINDS:
        raise LedgerInvariantError("system accounts are created by the migrations")
    return int(
        (
            await connection.execute(
                insert(ledger_accounts)
                .values(kind=kind.value, currency=currency, tracked=True, balance=0, created_at=now)
                .returning(ledger_accounts.c.id)
            )
        ).scalar_one()
    )


# System accounts are made by the migrations and never change, so each engine (one per
# database a process uses) looks each one up once.
_SYSTEM_ACCOUNTS: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str], int]] = (
    weakref.WeakKeyDictionary()
)


async def system_account(connection: AsyncConnection, kind: AccountKind, currency: str) -> Posting:
    """The untracked system account of `kind` in `currency`, as a posting target (amount 0
    here; use :func:`dataclasses.replace` or :func:`system_posting`)."""
    known = _SYSTEM_ACCOUNTS.setdefault(connection.sync_engine, {})
    account_id = known.get((kind.value, currency))
    if account_id is None:
        found = (
            await connection.execute(
                select(ledger_accounts.c.id).where(
                    ledger_accounts.c.kind == kind.value,
                    ledger_accounts.c.currency == currency,
                    ledger_accounts.c.tracked.is_(False),
                )
            )
        ).scalar_one_or_none()
        if found is None:
            raise LedgerInvariantError(f"no {kind} system account for {currency}; run migrations")
        account_id = known[(kind.value, currency)] = int(found)
    return Posting(account_id, 0, tracked=False)


async def system_posting(
    connection: AsyncConnection, kind: AccountKind, currency: str, amount: int
) -> Posting:
    account = await system_account(connection, kind, currency)
    return Posting(account.account_id, amount, tracked=False)


async def balance_of(connection: AsyncConnection, account_id: int) -> int:
    value = (await connection.execute(_BALANCE, {"b_account_id": account_id})).scalar_one()
    return int(value)
