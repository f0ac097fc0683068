"""Checking every ledger invariant against the database (`giftcard verify`).

Each check is one query that returns the rows breaking it, so a failure names its
culprits: a journal transaction, a posting, an account, a card.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text

from giftcard import audit
from giftcard.db.engine import Database
from giftcard.money import format_minor

CULPRITS_PER_CHECK_MAX = 50

# (name, query returning one row per culprit, sentence with the row's fields)
_CHECKS: list[tuple[str, str, str]] = [
    (
        "transactions balance",
        """SELECT t.id, COALESCE(SUM(p.amount), 0) AS total, COUNT(p.id) AS n
           FROM journal_transactions t LEFT JOIN postings p ON p.transaction_id = t.id
           GROUP BY t.id HAVING COALESCE(SUM(p.amount), 0) <> 0 OR COUNT(p.id) < 2""",
        "journal transaction {id}: its {n} posting(s) sum to {total}, not 0",
    ),
    (
        "posting currencies",
        """SELECT p.id, p.transaction_id, p.currency, a.currency AS account_currency,
                  t.currency AS transaction_currency
           FROM postings p JOIN ledger_accounts a ON a.id = p.account_id
           JOIN journal_transactions t ON t.id = p.transaction_id
           WHERE p.currency <> a.currency OR p.currency <> t.currency""",
        "posting {id} (transaction {transaction_id}) is in {currency}, its account in "
        "{account_currency}, its transaction in {transaction_currency}",
    ),
    (
        "account balances",
        """SELECT a.id, a.kind, a.balance, COALESCE(SUM(p.amount), 0) AS posted
           FROM ledger_accounts a LEFT JOIN postings p ON p.account_id = a.id
           WHERE a.tracked GROUP BY a.id, a.kind, a.balance
           HAVING a.balance <> COALESCE(SUM(p.amount), 0)""",
        "account {id} ({kind}) holds {balance} but its postings sum to {posted}",
    ),
    (
        "non-negative balances",
        "SELECT id, kind, balance FROM ledger_accounts WHERE balance < 0",
        "account {id} ({kind}) is below zero: {balance}",
    ),
    (
        "balance after each posting",
        """SELECT id, transaction_id, account_id, balance_after, running FROM (
             SELECT p.id, p.transaction_id, p.account_id, p.balance_after,
                    SUM(p.amount) OVER (PARTITION BY p.account_id ORDER BY p.id) AS running
             FROM postings p JOIN ledger_accounts a ON a.id = p.account_id WHERE a.tracked
           ) s WHERE balance_after IS NULL OR balance_after <> running OR running < 0""",
        "posting {id} (transaction {transaction_id}, account {account_id}) records balance "
        "{balance_after} after it, but the postings up to it sum to {running}",
    ),
    (
        "card values",
        """SELECT c.id, c.serial, c.state, c.amount, a.balance, c.activated_at IS NOT NULL AS funded
           FROM cards c JOIN ledger_accounts a ON a.id = c.account_id
           WHERE NOT (
             (c.state IN ('redeemed', 'cancelled') AND a.balance = 0)
             OR (c.activated_at IS NULL AND a.balance = 0
                 AND c.state IN ('inactive', 'frozen'))
             OR (c.activated_at IS NOT NULL AND a.balance = c.amount
                 AND c.state IN ('active', 'frozen'))
           )""",
        "card {id} (serial {serial}) is {state} with face value {amount} but its account holds "
        "{balance}",
    ),
    (
        "redeemed once",
        """SELECT c.id, c.serial, COUNT(t.id) AS n
           FROM cards c LEFT JOIN journal_transactions t
             ON t.card_id = c.id AND t.type = 'redemption'
           GROUP BY c.id, c.serial, c.state
           HAVING COUNT(t.id) <> CASE WHEN c.state = 'redeemed' THEN 1 ELSE 0 END""",
        "card {id} (serial {serial}) has {n} redemption transaction(s)",
    ),
    (
        "redemption credited to its customer",
        """SELECT c.id, c.serial, c.redeemed_customer_id
           FROM cards c WHERE c.state = 'redeemed' AND NOT EXISTS (
             SELECT 1 FROM journal_transactions t
             JOIN postings p ON p.transaction_id = t.id
             JOIN customers u ON u.available_account_id = p.account_id
             WHERE t.card_id = c.id AND t.type = 'redemption'
               AND u.id = c.redeemed_customer_id AND p.amount = c.amount)""",
        "card {id} (serial {serial}) is redeemed by customer {redeemed_customer_id} but its "
        "redemption does not credit them its value",
    ),
    (
        "payment holds",
        """SELECT y.id, y.status, y.gift_card_amount, COALESCE(SUM(p.amount), 0) AS held
           FROM payments y JOIN customers u ON u.id = y.customer_id
           LEFT JOIN journal_transactions t ON t.payment_id = y.id
           LEFT JOIN postings p ON p.transaction_id = t.id AND p.account_id = u.held_account_id
           GROUP BY y.id, y.status, y.gift_card_amount
           HAVING COALESCE(SUM(p.amount), 0)
                  <> CASE WHEN y.status = 'authorized' THEN y.gift_card_amount ELSE 0 END""",
        "payment {id} is {status} with a balance part of {gift_card_amount} but holds {held}",
    ),
    (
        "payments received",
        """SELECT y.id, y.captured_gift_card_amount, y.refunded_gift_card_amount,
                  COALESCE(SUM(p.amount), 0) AS received
           FROM payments y
           LEFT JOIN journal_transactions t ON t.payment_id = y.id
           LEFT JOIN postings p ON p.transaction_id = t.id AND p.account_id IN (
             SELECT id FROM ledger_accounts WHERE kind = 'payments' AND NOT tracked)
           GROUP BY y.id, y.captured_gift_card_amount, y.refunded_gift_card_amount
           HAVING COALESCE(SUM(p.amount), 0)
                  <> y.captured_gift_card_amount - y.refunded_gift_card_amount""",
        "payment {id} captured {captured_gift_card_amount} from the balance and refunded "
        "{refunded_gift_card_amount} of it, but the store's account received {received}",
    ),
    (
        "refunds add up",
        """SELECT y.id, y.refunded_amount, y.refunded_gift_card_amount,
                  COALESCE(SUM(r.amount), 0) AS total, COALESCE(SUM(r.gift_card_amount), 0) AS gift
           FROM payments y LEFT JOIN refunds r ON r.payment_id = y.id
           GROUP BY y.id, y.refunded_amount, y.refunded_gift_card_amount
           HAVING COALESCE(SUM(r.amount), 0) <> y.refunded_amount
               OR COALESCE(SUM(r.gift_card_amount), 0) <> y.refunded_gift_card_amount""",
        "payment {id} records {refunded_amount} refunded ({refunded_gift_card_amount} of it "
        "to the balance's part) but its refunds add up to {total} ({gift})",
    ),
    (
        "customer accounts",
        """SELECT u.id, u.currency FROM customers u
           JOIN ledger_accounts av ON av.id = u.available_account_id
           JOIN ledger_accounts h ON h.id = u.held_account_id
           WHERE av.kind <> 'customer_available' OR h.kind <> 'customer_held'
              OR av.currency <> u.currency OR h.currency <> u.currency""",
        "customer {id}: balance accounts of the wrong kind or currency (customer in {currency})",
    ),
]


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> list[str]:
        lines = [
            "Checked {transactions} journal transactions, {postings} postings, "
            "{accounts} accounts, {cards} cards, {customers} customers, "
            "{payments} payments, {audit_entries} audit log entries.".format(**self.counts)
        ]
        for currency, sums in sorted(self.totals.items()):
            lines.append(
                f"  {currency}: unredeemed card value {format_minor(sums['cards'], currency)}, "
                f"customer balances {format_minor(sums['customers'], currency)}"
            )
        return lines


async def verify(db: Database) -> Report:
    report = Report()
    async with db.transaction(write=False) as connection:
        for name, query, sentence in _CHECKS:
            rows = (
                (await connection.execute(text(query)))
                .mappings()
                .fetchmany(CULPRITS_PER_CHECK_MAX + 1)
            )
            for row in rows[:CULPRITS_PER_CHECK_MAX]:
                report.problems.append(f"{name}: " + sentence.format(**row))
            if len(rows) > CULPRITS_PER_CHECK_MAX:
                report.problems.append(f"{name}: more culprits not listed")
        for table in (
            "journal_transactions",
            "postings",
            "ledger_accounts",
            "cards",
            "customers",
            "payments",
        ):
            count = (await connection.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()  # noqa: S608 - fixed names
            report.counts[table.removeprefix("journal_").replace("ledger_", "")] = int(count)
        chain = await audit.verify_chain(connection)
        report.counts["audit_entries"] = chain.entries
        if chain.problem is not None:
            report.problems.append("audit log chain: " + chain.problem)
        balances = await connection.execute(
            text(
                "SELECT currency, kind, SUM(balance) AS total FROM ledger_accounts "
                "WHERE tracked GROUP BY currency, kind"
            )
        )
        for currency, kind, total in balances:
            sums = report.totals.setdefault(currency, {"cards": 0, "customers": 0})
            sums["cards" if kind == "card" else "customers"] += int(total)
    return report
