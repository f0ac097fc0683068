"""The bank test's check: the model a run built from its acknowledged answers against
what the database holds.

Each problem found is one line that starts with its kind: `lost` (acknowledged, not in
the database), `duplicated` (in the database more often than acknowledged, a balance
above the model's, or a request sent again that was acted on again), `mismatch`,
`negative`, `refused` (an answer the workload did not expect), `slow` (answered later
than the bound after the server was back) or `unanswered`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from giftcard import ids
from giftcard.db.engine import Database
from giftcard.db.tables import (
    adjustments,
    customers,
    gifts,
    journal_transactions,
    ledger_accounts,
    payments,
    refunds,
)

if TYPE_CHECKING:
    from tests.faults.bank import Bank, Operation


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


@dataclass
class Report:
    """What the check found. `problems` is empty when the run kept every promise."""

    operations: int
    acknowledged: int
    refused: Counter[str]
    problems: list[str]
    # The longest any operation waited for its answer once the server was back.
    slowest_answer_s: float

    def of_kind(self, word: str) -> list[str]:
        return [problem for problem in self.problems if problem.startswith(word)]

    def summary(self, limit: int = 30) -> str:
        shown = "\n".join(self.problems[:limit])
        more = len(self.problems) - limit
        return shown + (f"\n... and {more} more" if more > 0 else "")


EXPECTED_REFUSALS = {("adjust", "insufficient_balance")}


async def check(bank: Bank, database_url: str) -> Report:
    """Compare every acknowledged operation and every balance with the database."""
    problems: list[str] = []
    operations = bank.operations
    problems += _check_answers(bank)
    db = Database(database_url, pool_size=2)
    try:
        async with db.transaction(write=False) as connection:
            problems += await _check_redemptions(connection, bank)
            problems += await _check_payments(connection, bank)
            problems += await _check_adjustments(connection, bank)
            problems += await _check_gifts(connection, bank)
            problems += await _check_balances(connection, bank)
    finally:
        await db.dispose()
    refused = Counter(
        f"{op.kind}:{op.error_code or op.status}"
        for op in operations
        if op.status is not None and not op.acknowledged
    )
    waits = [wait for _, wait in _waits(bank)]
    return Report(
        len(operations),
        sum(op.acknowledged for op in operations),
        refused,
        problems,
        round(max(waits, default=0.0), 2),
    )


def _waits(bank: Bank) -> list[tuple[Operation, float]]:
    """Each answered operation with how long it waited after the server was last back
    (or after it was sent, if later): the time a retrying client cannot blame on a crash."""
    waits = []
    for op in bank.operations:
        if op.answered_at is None:
            continue
        back = max([moment for moment in bank.backs if moment <= op.answered_at], default=0.0)
        waits.append((op, op.answered_at - max(op.started_at, back)))
    return waits


def _check_answers(bank: Bank) -> list[str]:
    problems: list[str] = []
    for op in bank.operations:
        if op.answered_at is None:
            problems.append(f"unanswered: {op.kind} {op.key} after {op.attempts} attempts")
            continue
        if not op.acknowledged and (op.kind, op.error_code) not in EXPECTED_REFUSALS:
            problems.append(f"refused: {op.kind} {op.key} answered {op.status} {op.answer}")
        if op.resent is not None:
            again = op.resent
            if again.status_code != op.status or _json(again) != op.answer:
                problems.append(
                    f"duplicated: {op.kind} {op.key} sent again got {again.status_code} "
                    f"{_json(again)}, not the first answer {op.status}"
                )
            elif again.headers.get("idempotent-replayed") != "true":
                problems.append(f"duplicated: {op.kind} {op.key} sent again was not a replay")
    for op, waited_s in _waits(bank):
        if waited_s > bank.settings.answered_within_s:
            problems.append(
                f"slow: {op.kind} {op.key} answered {waited_s:.1f} s after the server was back"
            )
    return problems


async def _check_redemptions(connection: Any, bank: Bank) -> list[str]:
    problems: list[str] = []
    journal = journal_transactions.c
    for account in bank.accounts:
        rows = (
            await connection.execute(
                select(journal.id).where(
                    journal.customer_id == account.number, journal.type == "redemption"
                )
            )
        ).all()
        found = {int(row.id) for row in rows}
        acknowledged = {ids.parse_id(ids.TRANSACTION, text) for text in account.redemptions}
        for missing in sorted(acknowledged - found):
            problems.append(f"lost: redemption txn {missing} of {account.id} is not in the journal")
        extra = found - acknowledged
        if extra:
            problems.append(
                f"duplicated: {len(extra)} redemption(s) into {account.id} nobody was told of"
            )
    return problems


async def _check_payments(connection: Any, bank: Bank) -> list[str]:
    problems: list[str] = []
    paying = [op for op in bank.operations if op.kind == "pay" and op.body is not None]
    order_ids = [op.body["order_id"] for op in paying if op.body is not None]
    rows = (
        await connection.execute(select(payments).where(payments.c.order_id.in_(order_ids)))
        if order_ids
        else None
    )
    by_order: dict[str, list[Any]] = {}
    for row in rows.all() if rows is not None else []:
        by_order.setdefault(row.order_id, []).append(row)
    refund_rows = (await connection.execute(select(refunds.c.payment_id, refunds.c.amount))).all()
    refunds_of: dict[int, list[int]] = {}
    for row in refund_rows:
        refunds_of.setdefault(int(row.payment_id), []).append(int(row.amount))
    for op in paying:
        assert op.body is not None
        found = by_order.get(op.body["order_id"], [])
        expected = 1 if op.acknowledged else 0
        if len(found) > expected:
            problems.append(
                f"duplicated: order {op.body['order_id']} paid {len(found)} times, "
                f"acknowledged {expected}"
            )
        elif len(found) < expected:
            problems.append(f"lost: order {op.body['order_id']} acknowledged but not paid")
    for paid in bank.payments.values():
        number = ids.parse_id(ids.PAYMENT, paid.id)
        rows_for = [row for row in by_order.get(paid.order_id, []) if int(row.id) == number]
        if not rows_for:
            continue
        row = rows_for[0]
        # A refund changes a payment's status too; the amounts say all that matters then.
        status = paid.status if not paid.refunds else row.status
        if (row.status, row.captured_amount, row.refunded_amount) != (
            status,
            paid.captured_amount,
            paid.refunded_amount,
        ):
            problems.append(
                f"mismatch: payment {paid.id} is {row.status} captured {row.captured_amount} "
                f"refunded {row.refunded_amount}; acknowledged {paid.status} captured "
                f"{paid.captured_amount} refunded {paid.refunded_amount}"
            )
        stored = sorted(refunds_of.get(number, []))
        if stored != sorted(paid.refunds):
            word = "duplicated" if len(stored) > len(paid.refunds) else "lost"
            problems.append(
                f"{word}: payment {paid.id} has refunds {stored}, acknowledged {paid.refunds}"
            )
    return problems


async def _check_adjustments(connection: Any, bank: Bank) -> list[str]:
    problems: list[str] = []
    adjusting = [op for op in bank.operations if op.kind == "adjust" and op.body is not None]
    notes = Counter(
        row.note
        for row in (
            await connection.execute(
                select(adjustments.c.note).where(
                    adjustments.c.note.like(f"bank bank-{bank.run_id}-%")
                )
            )
        ).all()
    )
    for op in adjusting:
        assert op.body is not None
        expected = 1 if op.acknowledged else 0
        found = notes[op.body["note"]]
        if found != expected:
            word = "duplicated" if found > expected else "lost"
            problems.append(
                f"{word}: adjustment {op.key} of {op.body['amount']} stored {found} times, "
                f"acknowledged {expected}"
            )
    return problems


async def _check_gifts(connection: Any, bank: Bank) -> list[str]:
    problems: list[str] = []
    stored = Counter(
        row.recipient_email
        for row in (
            await connection.execute(
                select(gifts.c.recipient_email).where(
                    gifts.c.recipient_email.like(f"gift-{bank.run_id}-%")
                )
            )
        ).all()
    )
    for op in bank.operations:
        if op.kind != "gift" or op.body is None:
            continue
        expected = 1 if op.acknowledged else 0
        found = stored[op.body["recipient_email"]]
        if found != expected:
            word = "duplicated" if found > expected else "lost"
            problems.append(f"{word}: gift {op.key} stored {found} times, acknowledged {expected}")
    return problems


async def _check_balances(connection: Any, bank: Bank) -> list[str]:
    problems: list[str] = []
    accounts = ledger_accounts.c
    for account in bank.accounts:
        row = (
            await connection.execute(
                select(customers.c.available_account_id, customers.c.held_account_id).where(
                    customers.c.id == account.number
                )
            )
        ).one()
        balances = dict(
            (
                await connection.execute(
                    select(accounts.id, accounts.balance).where(
                        accounts.id.in_([row.available_account_id, row.held_account_id])
                    )
                )
            ).all()
        )
        available = int(balances[row.available_account_id])
        held = int(balances[row.held_account_id])
        if (available, held) != (account.available, account.held):
            word = "duplicated" if available + held > account.available + account.held else "lost"
            problems.append(
                f"{word}: {account.id} has available {available} held {held}; the model "
                f"{account.available} and {account.held}"
            )
    negative = (
        await connection.execute(
            select(func.count())
            .select_from(ledger_accounts)
            .where(accounts.tracked.is_(True), accounts.balance < 0)
        )
    ).scalar_one()
    if negative:
        problems.append(f"negative: {negative} balance(s) below zero")
    return problems
