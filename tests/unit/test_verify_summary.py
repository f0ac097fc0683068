"""`giftcard verify`'s summary shows each currency's sums as money, not minor units."""

from __future__ import annotations

from giftcard.verify import Report


def test_the_summary_formats_each_currency_as_money() -> None:
    report = Report(
        counts={
            "transactions": 3,
            "postings": 6,
            "accounts": 4,
            "cards": 2,
            "customers": 1,
            "payments": 0,
            "audit_entries": 5,
        },
        totals={
            "USD": {"cards": 2_505_000, "customers": 812_050},
            "JPY": {"cards": 500, "customers": 0},
            "EUR": {"cards": 2_505_000, "customers": 1},
        },
    )

    summary = report.summary()

    assert summary[1:] == [
        "  EUR: unredeemed card value 25.050,00\xa0€, customer balances 0,01\xa0€",
        "  JPY: unredeemed card value ¥500, customer balances ¥0",
        "  USD: unredeemed card value $25,050.00, customer balances $8,120.50",
    ]
