"""`ledger.post_many`: many journal transactions in one statement on PostgreSQL, each
exactly as `ledger.post` would have written it in their order, or none at all."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from giftcard import ledger, verify
from giftcard.db.tables import journal_transactions, ledger_accounts, postings
from giftcard.services import Services
from tests.conftest import sent_statements
from tests.integration.test_storage import adjustment, open_accounts


def move(source: int, target: int, amount: int) -> ledger.Entry:
    return adjustment(
        f"{amount} from {source} to {target}",
        [ledger.Posting(source, -amount), ledger.Posting(target, amount)],
    )


async def balances(services: Services, *accounts: int) -> list[int]:
    async with services.db.transaction(write=False) as connection:
        rows = await connection.execute(
            select(ledger_accounts.c.id, ledger_accounts.c.balance).where(
                ledger_accounts.c.id.in_(accounts)
            )
        )
        by_id = {row.id: int(row.balance) for row in rows}
    return [by_id[account] for account in accounts]


async def count(services: Services, table: object) -> int:
    async with services.db.transaction(write=False) as connection:
        return int((await connection.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_entries_are_posted_in_their_order_each_with_its_own_balances(
    services: Services,
) -> None:
    """Given accounts holding 10, 0 and 0, when four entries that touch them again and
    again are posted together, then each gets its own journal transaction (in their
    order), each posting records its account's balance right after it, and the balances
    and the books end as posting them one by one would leave them."""
    a, b, c = await open_accounts(services, 10, 0, 0)
    now = services.clock.now()
    async with services.db.transaction(write=False) as connection:
        issuance = await ledger.system_posting(connection, ledger.AccountKind.ISSUANCE, "USD", -1)
    entries = [
        move(a, b, 3),
        move(b, c, 2),
        move(a, c, 4),
        adjustment("one more", [issuance, ledger.Posting(b, 1)]),
    ]
    async with services.db.transaction() as connection:
        with sent_statements(services.db) as sent:
            posted = await ledger.post_many(connection, entries, now=now)
    if not services.db.is_sqlite:
        assert len(sent) == 1, sent
    assert [entry.balances_after for entry in posted] == [
        {a: 7, b: 3},
        {b: 1, c: 2},
        {a: 3, c: 6},
        {b: 2},
    ]
    ids = [entry.transaction_id for entry in posted]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert await balances(services, a, b, c) == [3, 2, 6]
    async with services.db.transaction(write=False) as connection:
        rows = (
            await connection.execute(
                select(
                    postings.c.transaction_id,
                    postings.c.account_id,
                    postings.c.amount,
                    postings.c.balance_after,
                )
                .where(postings.c.transaction_id.in_(ids))
                .order_by(postings.c.id)
            )
        ).all()
        descriptions = (
            await connection.execute(
                select(journal_transactions.c.description)
                .where(journal_transactions.c.id.in_(ids))
                .order_by(journal_transactions.c.id)
            )
        ).scalars()
        assert list(descriptions) == [entry.description for entry in entries]
    assert [tuple(row) for row in rows] == [
        (ids[0], a, -3, 7),
        (ids[0], b, 3, 3),
        (ids[1], b, -2, 1),
        (ids[1], c, 2, 2),
        (ids[2], a, -4, 3),
        (ids[2], c, 4, 6),
        (ids[3], issuance.account_id, -1, None),
        (ids[3], b, 1, 2),
    ]
    assert (await verify.verify(services.db)).problems == []


@pytest.mark.parametrize(
    ("amounts", "refused"),
    [
        # The second account ends where it began, but the first entry takes it below zero.
        ([(1, 0, 5), (0, 1, 5)], 1),
        # The second entry takes the first account below zero at the end.
        ([(0, 1, 5), (0, 1, 6)], 0),
    ],
)
async def test_a_batch_one_entry_of_which_cannot_pay_is_refused_whole(
    services: Services, amounts: list[tuple[int, int, int]], refused: int
) -> None:
    """Given accounts holding 10 and 0, when entries are posted together of which one
    could not be posted in its turn, then the batch is refused naming the account that
    could not pay, and nothing of it is left once its transaction is rolled back."""
    accounts = await open_accounts(services, 10, 0)
    entries_before = await count(services, journal_transactions)
    entries = [move(accounts[source], accounts[target], n) for source, target, n in amounts]
    with pytest.raises(ledger.InsufficientBalance) as refusal:
        async with services.db.transaction() as connection:
            await ledger.post_many(connection, entries, now=services.clock.now())
    assert refusal.value.account_id == accounts[refused]
    assert await balances(services, *accounts) == [10, 0]
    assert await count(services, journal_transactions) == entries_before


async def test_an_account_in_two_currencies_is_refused_before_anything_is_sent(
    services: Services,
) -> None:
    a, b = await open_accounts(services, 10, 0)
    euros = ledger.Entry(
        ledger.TransactionType.ADJUSTMENT,
        "EUR",
        "euros",
        "test",
        [ledger.Posting(a, -1), ledger.Posting(b, 1)],
    )
    async with services.db.transaction() as connection:
        with sent_statements(services.db) as sent, pytest.raises(ledger.LedgerInvariantError):
            await ledger.post_many(connection, [move(a, b, 1), euros], now=services.clock.now())
    assert sent == []
