"""Unit tests for giftcard.money: regions, parsing and formatting amounts, Money."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from babel.numbers import get_currency_precision
from hypothesis import given
from hypothesis import strategies as st

from giftcard import money
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.money import (
    AMOUNT_MINOR_MAX,
    CURRENCY_EXPONENTS,
    REGIONS,
    Money,
    Region,
    currency_exponent,
    format_major_plain,
    format_minor,
    parse_amount,
    parse_major,
    region,
)

NBSP = "\u00a0"  # Babel puts a no-break space between a euro amount and its sign.

EXPECTED_REGIONS = {
    "US": ("USD", 2, "en_US", "United States store"),
    "GB": ("GBP", 2, "en_GB", "United Kingdom store"),
    "DE": ("EUR", 2, "de_DE", "Germany store"),
    "FR": ("EUR", 2, "fr_FR", "France store"),
    "JP": ("JPY", 0, "en", "Japan store"),
    "CA": ("CAD", 2, "en_CA", "Canada store"),
    "AU": ("AUD", 2, "en_AU", "Australia store"),
    "IN": ("INR", 2, "en_IN", "India store"),
}


def _refused(call: Any, *args: Any, **kwargs: Any) -> GiftcardError:
    """Run `call`, which must raise a validation_error, and return that error."""
    with pytest.raises(GiftcardError) as caught:
        call(*args, **kwargs)
    assert caught.value.code is ErrorCode.VALIDATION_ERROR
    assert caught.value.status == 422
    assert caught.value.detail
    return caught.value


# --- regions and currencies -------------------------------------------------------------


def test_regions_are_exactly_the_eight_stores_of_the_spec() -> None:
    """REGIONS holds the eight SPEC regions, in order, with their currency, exponent,
    locale and store name."""
    assert list(REGIONS) == list(EXPECTED_REGIONS)
    for code, (currency, exponent, locale, store_name) in EXPECTED_REGIONS.items():
        assert REGIONS[code] == Region(code, currency, exponent, locale, store_name)


def test_currency_exponents_are_derived_from_regions() -> None:
    """CURRENCY_EXPONENTS has one entry per currency with the exponent its regions use."""
    assert CURRENCY_EXPONENTS == {
        "USD": 2,
        "GBP": 2,
        "EUR": 2,
        "JPY": 0,
        "CAD": 2,
        "AUD": 2,
        "INR": 2,
    }
    for each in REGIONS.values():
        assert currency_exponent(each.currency) == each.exponent


@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENTS))
def test_exponents_agree_with_babel(currency: str) -> None:
    """Our exponent equals Babel's CLDR precision, so we display the digits we parse."""
    assert get_currency_precision(currency) == CURRENCY_EXPONENTS[currency]


def test_region_lookup_ignores_case() -> None:
    """region() finds a region by its code in any case."""
    assert region("US") is REGIONS["US"]
    assert region("gb") is REGIONS["GB"]
    assert region("jP") is REGIONS["JP"]


@pytest.mark.parametrize("code", ["XX", "", "USA", " US", "ın", "E U", "x" * 1000])
def test_unknown_regions_are_refused_with_the_choices(code: str) -> None:
    """An unknown region is a validation_error on 'region' that lists the valid ones."""
    error = _refused(region, code)
    assert error.param == "region"
    assert "US, GB, DE, FR, JP, CA, AU, IN" in error.detail
    assert len(error.detail) < 200  # Huge input is not echoed back whole.


def test_unknown_region_message_names_the_input() -> None:
    """The message repeats the unknown region so the caller sees what was wrong."""
    assert _refused(region, "XX").detail == (
        "Unknown region 'XX'. Choose one of US, GB, DE, FR, JP, CA, AU, IN."
    )


@pytest.mark.parametrize("currency", ["XXX", "", "usd", "US", "BTC", "EURO"])
def test_unknown_currencies_are_refused(currency: str) -> None:
    """Unknown (and lower-case) currency codes are a validation_error on 'currency'."""
    assert _refused(currency_exponent, currency).param == "currency"


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "expected"),
    [
        ("25", "USD", 2500),
        ("25.00", "USD", 2500),
        ("25.5", "USD", 2550),
        ("25.05", "USD", 2505),
        ("0.01", "USD", 1),
        ("007", "USD", 700),
        (" 25.00 ", "USD", 2500),
        ("2500", "JPY", 2500),
        ("1", "JPY", 1),
        ("19.99", "EUR", 1999),
        ("10000000", "USD", AMOUNT_MINOR_MAX),
        ("10000000.00", "GBP", AMOUNT_MINOR_MAX),
        ("1000000000", "JPY", AMOUNT_MINOR_MAX),
    ],
)
def test_parse_major_reads_major_units_exactly(text: str, currency: str, expected: int) -> None:
    """Major-unit input becomes the exact integer of minor units."""
    assert parse_major(text, currency) == expected


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        pytest.param("25.001", "USD", id="three-decimals-usd"),
        pytest.param("25.000", "USD", id="three-decimals-even-if-zero"),
        pytest.param("0.005", "USD", id="half-cent"),
        pytest.param("25.5", "JPY", id="decimals-jpy"),
        pytest.param("2500.0", "JPY", id="zero-decimal-jpy"),
        pytest.param("-5", "USD", id="negative"),
        pytest.param("-0.01", "USD", id="negative-cent"),
        pytest.param("+5", "USD", id="plus-sign"),
        pytest.param("0", "USD", id="zero"),
        pytest.param("0.00", "USD", id="zero-with-decimals"),
        pytest.param("", "USD", id="empty"),
        pytest.param("   ", "USD", id="spaces"),
        pytest.param("1e3", "USD", id="exponent"),
        pytest.param("1E3", "USD", id="exponent-upper"),
        pytest.param(",", "USD", id="comma"),
        pytest.param("25,00", "EUR", id="decimal-comma"),
        pytest.param("1,000", "USD", id="thousands-comma"),
        pytest.param("1 000", "USD", id="thousands-space"),
        pytest.param("1_000", "USD", id="underscore"),
        pytest.param("1.000.00", "USD", id="two-points"),
        pytest.param(".5", "USD", id="no-whole-part"),
        pytest.param("5.", "USD", id="trailing-point"),
        pytest.param(".", "USD", id="point"),
        pytest.param("NaN", "USD", id="nan"),
        pytest.param("inf", "USD", id="inf"),
        pytest.param("Infinity", "USD", id="infinity"),
        pytest.param("$25", "USD", id="currency-sign"),
        pytest.param("25 USD", "USD", id="currency-code"),
        pytest.param("0x10", "USD", id="hex"),
        pytest.param("٢٥", "USD", id="arabic-indic-digits"),
        pytest.param("２５", "USD", id="fullwidth-digits"),
        pytest.param("25\x00", "USD", id="nul"),
        pytest.param("25\n5", "USD", id="newline-inside"),
        pytest.param("10000000.01", "USD", id="one-cent-over-max"),
        pytest.param("1000000001", "JPY", id="one-yen-over-max"),
        pytest.param("9" * 30, "USD", id="huge"),
        pytest.param("1" * 33, "JPY", id="too-long"),
    ],
)
def test_parse_major_refuses_bad_amounts(text: str, currency: str) -> None:
    """Anything but a positive, in-range amount with at most the currency's decimals is
    refused as a validation_error on the given param, never rounded."""
    assert _refused(parse_major, text, currency).param == "amount"
    assert _refused(parse_major, text, currency, param="face_value").param == "face_value"


def test_parse_major_explains_too_many_decimals() -> None:
    """The refusal of extra decimals says how many the currency allows."""
    assert "at most 2 decimal places" in _refused(parse_major, "25.001", "USD").detail
    assert "no decimal places" in _refused(parse_major, "25.5", "JPY").detail


def test_parse_major_refuses_an_unknown_currency() -> None:
    """Parsing into an unknown currency fails on 'currency', not on the amount."""
    assert _refused(parse_major, "25.00", "XXX").param == "currency"


@given(
    st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX), st.sampled_from(list(CURRENCY_EXPONENTS))
)
def test_parse_major_inverts_format_major_plain(amount_minor: int, currency: str) -> None:
    """Every accepted amount written by format_major_plain parses back to itself."""
    assert parse_major(format_major_plain(amount_minor, currency), currency) == amount_minor


# --- amounts as a store's people write them ----------------------------------------------

NNBSP = "\u202f"  # French groups thousands with a narrow no-break space.


@pytest.mark.parametrize(
    ("text", "code", "expected"),
    [
        # Germany and France: the comma is the decimal sign, the point or a space groups.
        ("10,50", "DE", 1050),
        ("10,50 €", "DE", 1050),
        ("10,50€", "DE", 1050),
        (f"10,50{NBSP}€", "DE", 1050),
        ("€ 10,50", "DE", 1050),
        ("10,50 EUR", "DE", 1050),
        ("10,5", "DE", 1050),
        ("10", "DE", 1000),
        ("1.234,56", "DE", 123_456),
        ("1.234", "DE", 123_400),  # a point between thousands groups: 1234, not 1.234
        ("1 234,56", "DE", 123_456),
        ("1.234.567,89 €", "DE", 123_456_789),
        ("10,50", "FR", 1050),
        ("1.234,56", "FR", 123_456),
        (f"1{NNBSP}234,56", "FR", 123_456),
        ("1 234,56 €", "FR", 123_456),
        (f"1{NBSP}234,56", "FR", 123_456),
        # The dollar stores, and pounds: the point is the decimal sign, the comma groups.
        ("$5.00", "US", 500),
        ("5", "US", 500),
        ("5.5", "US", 550),
        ("0.01", "US", 1),
        (" $1,234.56 ", "US", 123_456),
        ("1234.56", "US", 123_456),
        ("5 USD", "US", 500),
        ("usd 5", "US", 500),
        ("US$5", "US", 500),
        ("$1,234.56", "CA", 123_456),
        ("CA$5", "CA", 500),
        ("$1,234.56", "AU", 123_456),
        ("£5", "GB", 500),
        ("5 GBP", "GB", 500),
        # Japan: no decimals; the yen sign as Babel writes it, as a fullwidth keyboard
        # types it (digits too), and "円" after the number.
        ("¥500", "JP", 500),
        ("¥1,000,000", "JP", 1_000_000),
        ("500円", "JP", 500),
        ("￥５００", "JP", 500),
        # India: lakh grouping, and thousands grouping too.
        ("₹1,00,000", "IN", 10_000_000),
        ("₹100,000", "IN", 10_000_000),
        ("Rs. 500", "IN", 50_000),
        # The largest amount accepted, in each notation.
        ("10.000.000,00 €", "DE", AMOUNT_MINOR_MAX),
        ("$10,000,000", "US", AMOUNT_MINOR_MAX),
        ("¥1,000,000,000", "JP", AMOUNT_MINOR_MAX),
    ],
)
def test_parse_amount_reads_amounts_as_each_store_writes_them(
    text: str, code: str, expected: int
) -> None:
    """Each store's people write amounts their own way, with or without their currency's
    sign; each reads as the exact amount in minor units."""
    assert parse_amount(text, code) == expected
    assert parse_amount(text, REGIONS[code]) == expected


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        # The brief's own case: in Germany 1,234 is one point two three four euros.
        ("1,234", "DE", f"EUR has 2 decimals: write it like 1.234,00{NBSP}€ or 1,23{NBSP}€."),
        ("10,505", "DE", "EUR has 2 decimals: write it like 10.505,00"),
        ("12.345,678", "DE", f"EUR has 2 decimals: write it like 12.345,67{NBSP}€."),
        ("10,500", "FR", "EUR has 2 decimals"),
        ("1.234", "US", "USD has 2 decimals: write it like $1,234.00 or $1.23."),
        ("25.001", "GB", "GBP has 2 decimals"),
        ("¥500.5", "JP", "JPY has no decimals: write it like ¥500."),
        ("¥1.234", "JP", "JPY has no decimals: write it like ¥1,234 or ¥1."),
        # A grouping sign in the wrong place could be either reading: both are offered.
        (
            "10.50",
            "DE",
            f"'10.50' is not how the Germany store writes amounts: write it "
            f"like 1.050,00{NBSP}€ or 10,50{NBSP}€.",
        ),
        ("28.00", "FR", f"write it like 2{NNBSP}800,00{NBSP}€ or 28,00{NBSP}€."),
        (
            "10,50",
            "US",
            "is not how the United States store writes amounts: write it like $1,050.00 or $10.50.",
        ),
        ("10 50", "US", "is not how the United States store writes amounts"),
        # Another currency's sign names the store's.
        ("$5", "DE", f"The Germany store takes EUR, not $: write it like 5,00{NBSP}€."),
        ("5 €", "GB", "The United Kingdom store takes GBP, not €: write it like £5.00."),
        ("5 EUR", "US", "The United States store takes USD, not EUR"),
        ("US$5", "CA", "The Canada store takes CAD, not US$"),
        ("¥500", "IN", "The India store takes INR, not ¥"),
        ("5 CHF", "DE", "The Germany store takes EUR, not CHF"),
        # Negative, zero, empty, too large.
        ("-5", "US", "more than zero: write it like $10.50."),
        ("-5,00 €", "DE", f"more than zero: write it like 10,50{NBSP}€."),
        ("\u22125", "US", "more than zero"),
        ("$-5", "US", "more than zero"),
        ("0", "US", "more than zero"),
        ("0,00 €", "DE", "more than zero"),
        ("", "DE", f"Enter an amount: write it like 10,50{NBSP}€."),
        ("   ", "JP", "Enter an amount: write it like ¥500."),
        ("$10,000,000.01", "US", "too large; the most accepted is $10,000,000.00."),
        ("¥1,000,000,001", "JP", "too large"),
        # Not numbers at all, or numbers Decimal would read but people do not write.
        ("abc", "US", "'abc' is not an amount: write it like $10.50."),
        ("1e5", "US", "is not an amount"),
        ("NaN", "US", "is not an amount"),
        ("Infinity", "DE", "is not an amount"),
        ("1_000", "US", "is not an amount"),
        ("١٢", "US", "is not an amount"),  # Arabic-Indic digits
        ("5²", "US", "is not an amount"),
        ("$", "US", "is not an amount"),
        ("$5$", "US", "is not an amount"),
        (",", "DE", "is not an amount"),
        ("1,2,3", "DE", "is not an amount"),
        ("5" * 33, "US", "too long"),
    ],
)
def test_parse_amount_refuses_with_the_store_s_own_format(text: str, code: str, words: str) -> None:
    """What cannot be read as exactly one amount of the store is refused, never rounded,
    in a sentence that shows how that store writes an amount."""
    error = _refused(parse_amount, text, code)
    assert words in error.detail
    assert error.param == "amount"


def test_parse_amount_names_the_field_and_refuses_an_unknown_store() -> None:
    """A refusal names the field it was given; an unknown store is refused as a region."""
    assert _refused(parse_amount, "10.50", "DE", param="use_balance_amount").param == (
        "use_balance_amount"
    )
    assert _refused(parse_amount, "10,50", "XX").param == "region"


def test_parse_amount_reads_zero_only_when_asked() -> None:
    """Zero is refused unless the caller allows it (it has its own sentence for it)."""
    assert parse_amount("0,00 €", "DE", allow_zero=True) == 0
    assert _refused(parse_amount, "0,00 €", "DE").detail.startswith("The amount must be")


def test_parse_amount_refuses_what_is_not_text() -> None:
    """A non-string never reaches the number parser."""
    assert _refused(parse_amount, 10.5, "US").param == "amount"
    assert _refused(parse_amount, None, "US").param == "amount"


@pytest.mark.parametrize(
    ("code", "up_to", "expected"),
    [
        ("US", None, "$10.50"),
        ("DE", None, f"10,50{NBSP}€"),
        ("FR", 999_999, f"10,50{NBSP}€"),
        ("JP", None, "¥500"),
        ("IN", None, "₹10.50"),
        ("DE", 800, f"8,00{NBSP}€"),  # never more than the field accepts
        ("US", 0, "$10.50"),  # nothing to use: the format still shows
    ],
)
def test_example_amount_writes_the_store_s_notation(
    code: str, up_to: int | None, expected: str
) -> None:
    """The example beside an amount field is in the store's notation, with decimals that
    show its decimal sign, and no more than the field accepts; it reads back as itself."""
    shown = money.example_amount(code, up_to=up_to)
    assert shown == expected
    assert format_minor(
        parse_amount(shown, code), REGIONS[code].currency, REGIONS[code].locale
    ) == (expected)


@given(
    st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX),
    st.sampled_from(list(REGIONS.values())),
)
def test_parse_amount_reads_back_what_format_minor_shows(amount_minor: int, store: Region) -> None:
    """Whatever a store shows its people, copied into an amount field of that store,
    reads back as the same amount."""
    shown = format_minor(amount_minor, store.currency, store.locale)
    assert parse_amount(shown, store.code) == amount_minor
    # And without its currency's sign, which is how most people type it.
    bare = shown.replace("\u00a0", "").strip("$£€¥₹")
    assert parse_amount(bare, store.code) == amount_minor


# --- formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "currency", "locale", "expected"),
    [
        (2500, "USD", None, "$25.00"),
        (2500, "GBP", None, "£25.00"),
        (2500, "EUR", None, f"25,00{NBSP}€"),
        (2500, "JPY", None, "¥2,500"),
        (2500, "EUR", "fr_FR", f"25,00{NBSP}€"),
        (2500, "CAD", None, "$25.00"),
        (2500, "AUD", None, "$25.00"),
        (2500, "INR", None, "₹25.00"),
        (12_500_000, "INR", None, "₹1,25,000.00"),
        (123_456_789, "EUR", None, f"1.234.567,89{NBSP}€"),
        (1, "USD", None, "$0.01"),
        (0, "USD", None, "$0.00"),
        (-2500, "USD", None, "-$25.00"),
        (-2500, "EUR", None, f"-25,00{NBSP}€"),
        (-1, "JPY", None, "-¥1"),
        (2500, "USD", "en_GB", "US$25.00"),
    ],
)
def test_format_minor_shows_money_for_the_locale(
    amount_minor: int, currency: str, locale: str | None, expected: str
) -> None:
    """Amounts format as SPEC §2 shows, in each currency's first region's locale by
    default, with a minus sign when negative."""
    assert format_minor(amount_minor, currency, locale) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("US", "$1,234.56"),
        ("GB", "£1,234.56"),
        ("DE", f"1.234,56{NBSP}€"),
        ("FR", f"1\u202f234,56{NBSP}€"),  # French groups with a narrow no-break space.
        ("JP", "¥123,456"),
        ("CA", "$1,234.56"),
        ("AU", "$1,234.56"),
        ("IN", "₹1,234.56"),
    ],
)
def test_every_region_formats_in_its_own_locale(code: str, expected: str) -> None:
    """Each region's own locale shows its currency with its symbol, grouping and decimals."""
    each = REGIONS[code]
    assert format_minor(123_456, each.currency, each.locale) == expected


@pytest.mark.parametrize(
    ("amount_minor", "currency", "expected"),
    [
        (2500, "USD", "25.00"),
        (2505, "USD", "25.05"),
        (1, "USD", "0.01"),
        (0, "USD", "0.00"),
        (-2550, "EUR", "-25.50"),
        (-1, "GBP", "-0.01"),
        (2500, "JPY", "2500"),
        (-7, "JPY", "-7"),
        (AMOUNT_MINOR_MAX, "USD", "10000000.00"),
        (123_456_789_012_345_678_901, "INR", "1234567890123456789.01"),
    ],
)
def test_format_major_plain_is_exact(amount_minor: int, currency: str, expected: str) -> None:
    """The CSV form is the exact major amount, without symbol, grouping or rounding."""
    assert format_major_plain(amount_minor, currency) == expected


@pytest.mark.parametrize("bad", [25.0, Decimal("25"), True, "2500", None])
def test_formatting_refuses_anything_but_an_int(bad: Any) -> None:
    """Floats, Decimals, bools and strings are refused where minor units belong."""
    assert _refused(format_minor, bad, "USD").param == "amount"
    assert _refused(format_major_plain, bad, "USD").param == "amount"


# --- Money ------------------------------------------------------------------------------


def test_money_holds_an_int_and_a_known_currency() -> None:
    """A Money is a frozen value of an integer amount, possibly negative, and a currency."""
    price = Money(2500, "USD")
    assert (price.amount, price.currency) == (2500, "USD")
    assert Money(-100, "JPY").amount == -100
    assert Money(2500, "USD") == price
    with pytest.raises(dataclasses.FrozenInstanceError):
        price.amount = 1  # type: ignore[misc]


@pytest.mark.parametrize("amount", [25.0, True, False, Decimal("25"), "2500", None])
def test_money_refuses_a_non_int_amount(amount: Any) -> None:
    """Money refuses floats, bools, Decimals and strings as its amount."""
    assert _refused(Money, amount, "USD").param == "amount"


@pytest.mark.parametrize("currency", ["usd", "XXX", "", None])
def test_money_refuses_an_unknown_currency(currency: Any) -> None:
    """Money refuses a currency giftcard does not sell in."""
    assert _refused(Money, 2500, currency).param == "currency"


def test_module_exports_what_it_documents() -> None:
    """__all__ names only attributes that exist, so `from giftcard.money import *` works."""
    for name in money.__all__:
        assert hasattr(money, name)


def test_every_store_has_a_time_zone_its_pages_show_times_in() -> None:
    from zoneinfo import ZoneInfo

    from giftcard.money import REGIONS
    from giftcard.web.templating import STORE_TIME_ZONES

    assert STORE_TIME_ZONES.keys() == REGIONS.keys()
    for zone in STORE_TIME_ZONES.values():
        assert ZoneInfo(zone).key == zone
