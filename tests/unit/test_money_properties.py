"""Properties of reading amounts in every store's notation (SPEC §2): `test_money.py`
reads back whatever `format_minor` shows, with and without the currency's sign, and
tries fixed examples of each refusal; here hypothesis picks the amount and the store for
the ways people type amounts that no formatter writes, and for the refusals.
"""

from __future__ import annotations

import pytest
from babel.numbers import get_decimal_symbol
from hypothesis import given
from hypothesis import strategies as st

from giftcard.errors import ErrorCode, GiftcardError
from giftcard.money import (
    AMOUNT_MINOR_MAX,
    REGIONS,
    Region,
    format_major_plain,
    format_minor,
    parse_amount,
)

amounts = st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX)
stores = st.sampled_from(list(REGIONS.values()))


def typed_plainly(amount_minor: int, store: Region) -> str:
    """The amount as people type it in that store: no grouping, the store's decimal sign."""
    return format_major_plain(amount_minor, store.currency).replace(
        ".", get_decimal_symbol(store.locale)
    )


def refusal(text: str, store: Region) -> GiftcardError:
    with pytest.raises(GiftcardError) as caught:
        parse_amount(text, store.code)
    assert caught.value.code is ErrorCode.VALIDATION_ERROR
    assert caught.value.param == "amount"
    return caught.value


@given(amounts, stores, st.sampled_from(["", " {code}", "{code} ", "{code}"]))
def test_an_amount_typed_without_grouping_reads_exactly(
    amount_minor: int, store: Region, currency_code: str
) -> None:
    """Any amount of any store, typed with the store's decimal sign and no grouping,
    with or without the currency's ISO code before or after it, reads as itself."""
    code = currency_code.format(code=store.currency)
    number = typed_plainly(amount_minor, store)
    text = number + code if code.startswith(" ") else code + number

    assert parse_amount(text, store.code) == amount_minor


@given(amounts, stores, st.integers(min_value=1, max_value=9))
def test_one_decimal_more_than_the_currency_has_is_refused_never_rounded(
    amount_minor: int, store: Region, digit: int
) -> None:
    """Any amount of any store with one more decimal than its currency has (a digit
    that is not zero) is refused, however close it is to an amount: never rounded."""
    decimal_sign = get_decimal_symbol(store.locale)
    number = typed_plainly(amount_minor, store)
    text = number + (str(digit) if store.exponent else decimal_sign + str(digit))

    error = refusal(text, store)

    assert "decimals" in error.detail, error.detail


@given(amounts, stores)
def test_a_negative_amount_is_refused_in_every_notation(amount_minor: int, store: Region) -> None:
    """Any amount of any store, shown with a minus sign, is refused as not more than zero."""
    shown = format_minor(-amount_minor, store.currency, store.locale)

    assert "more than zero" in refusal(shown, store).detail


@given(st.integers(min_value=AMOUNT_MINOR_MAX + 1, max_value=AMOUNT_MINOR_MAX * 1000), stores)
def test_an_amount_over_the_largest_is_refused_in_every_notation(
    amount_minor: int, store: Region
) -> None:
    """Any amount over the largest accepted, as the store shows it, is refused as too
    large, naming the largest."""
    shown = format_minor(amount_minor, store.currency, store.locale)
    largest = format_minor(AMOUNT_MINOR_MAX, store.currency, store.locale)

    assert largest in refusal(shown, store).detail
