"""The ledger refuses, before writing anything, any entry that would break double entry."""

from __future__ import annotations

import pytest

from giftcard.errors import LedgerInvariantError
from giftcard.ledger import Entry, Posting, TransactionType, check_entry


def entry(*postings: Posting) -> Entry:
    return Entry(TransactionType.ADJUSTMENT, "USD", "test", "test", list(postings))


def test_balanced_entry_passes() -> None:
    check_entry(entry(Posting(1, -500), Posting(2, 300), Posting(3, 200)))


@pytest.mark.parametrize(
    "postings",
    [
        (Posting(1, -500), Posting(2, 499)),  # does not sum to zero
        (Posting(1, 0), Posting(2, 0)),  # zero amounts
        (Posting(1, 500),),  # a single posting
        (Posting(1, -500), Posting(1, 500)),  # one account twice
        (Posting(1, -2.5), Posting(2, 2.5)),  # floats never hold money
        (Posting(1, True), Posting(2, -1)),  # a bool is not an amount
    ],
)
def test_unbalanced_or_malformed_entries_are_refused(postings: tuple[Posting, ...]) -> None:
    with pytest.raises(LedgerInvariantError):
        check_entry(entry(*postings))
