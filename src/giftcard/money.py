"""Regions, currencies, and turning amounts from and into what people read and type.

Every amount in giftcard is an ``int`` in the currency's minor unit (cents for USD, yen
for JPY, which has none) next to its ISO 4217 currency code (SPEC §2). This module is the
only place that knows how many minor units a currency has, and the only place that
crosses between minor units and the major units people see:

* :func:`parse_major` reads human input (``"25.00"``) into minor units with integer
  string arithmetic. An amount with more decimals than its currency has is refused,
  never rounded: a store that asked for 25.001 dollars made a mistake we must not hide.
* :func:`format_minor` shows an amount in a region's locale through Babel
  (``$25.00``, ``£25.00``, ``25,00 €``, ``¥2,500``).
* :func:`format_major_plain` writes the exact, locale-free form used in CSV files.

Floats never appear: ``0.1 + 0.2 != 0.3`` is fine for physics and wrong for money.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from babel.numbers import format_currency

from giftcard.errors import validation_error

__all__ = [
    "AMOUNT_INPUT_LENGTH_MAX",
    "AMOUNT_MINOR_MAX",
    "CURRENCY_EXPONENTS",
    "GIFT_AMOUNT_RANGES",
    "REGIONS",
    "Money",
    "Region",
    "check_gift_amount",
    "currency_exponent",
    "format_major_plain",
    "format_minor",
    "gift_amount_range",
    "parse_major",
    "region",
]

# The largest single amount accepted anywhere, in minor units (ten million dollars, or
# one billion yen). Far above any gift card, far below where a sum of many could overflow
# a 64-bit database column.
AMOUNT_MINOR_MAX = 1_000_000_000
# "1000000000.00" is 13 characters; input far longer than that is refused before parsing.
AMOUNT_INPUT_LENGTH_MAX = 32
# What an echoed user input is cut to inside an error sentence.
_ECHO_LENGTH_MAX = 20


@dataclass(frozen=True)
class Region:
    """A store: its currency, the currency's exponent, and how to show money to its people.

    `exponent` is the number of decimal places of the major unit: an amount of 2500 minor
    units is 25.00 when it is 2 and 2500 when it is 0.
    """

    code: str
    currency: str
    exponent: int
    locale: str
    store_name: str


# The order matters: the first region using a currency names its default locale.
REGIONS: dict[str, Region] = {
    region.code: region
    for region in (
        Region("US", "USD", 2, "en_US", "United States store"),
        Region("GB", "GBP", 2, "en_GB", "United Kingdom store"),
        Region("DE", "EUR", 2, "de_DE", "Germany store"),
        Region("FR", "EUR", 2, "fr_FR", "France store"),
        # Plain "en" rather than "ja_JP": Japanese locales show the fullwidth "￥2,500",
        # while SPEC §2 shows "¥2,500".
        Region("JP", "JPY", 0, "en", "Japan store"),
        Region("CA", "CAD", 2, "en_CA", "Canada store"),
        Region("AU", "AUD", 2, "en_AU", "Australia store"),
        Region("IN", "INR", 2, "en_IN", "India store"),
    )
}


# What one e-gift card may be worth, per currency, in minor units: from a token present
# to what a store is willing to send by email (a larger sum is a bank transfer, or fraud).
GIFT_AMOUNT_RANGES: dict[str, tuple[int, int]] = {
    "USD": (100, 200_000),
    "GBP": (100, 200_000),
    "EUR": (100, 200_000),
    "JPY": (100, 200_000),
    "CAD": (100, 200_000),
    "AUD": (100, 200_000),
    "INR": (10_000, 20_000_000),
}


def _derive_currency_tables() -> tuple[dict[str, int], dict[str, str]]:
    """Each currency's exponent and default locale, refusing regions that disagree."""
    exponents: dict[str, int] = {}
    locales: dict[str, str] = {}
    for each in REGIONS.values():
        # Two stores with one currency but different exponents would make the same
        # integer mean two different sums; fail at import rather than in a ledger.
        if exponents.setdefault(each.currency, each.exponent) != each.exponent:
            raise RuntimeError(f"regions disagree on the exponent of {each.currency}")
        locales.setdefault(each.currency, each.locale)
    return exponents, locales


CURRENCY_EXPONENTS, _DEFAULT_LOCALES = _derive_currency_tables()
if GIFT_AMOUNT_RANGES.keys() != CURRENCY_EXPONENTS.keys():
    raise RuntimeError("every currency sold in needs an e-gift amount range")

# ASCII digits only (a bare \d would accept Arabic-Indic and fullwidth digits), at least
# one before the point, and at least one after it when there is a point.
_MAJOR_AMOUNT = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?", re.ASCII)
_REGION_LIST = ", ".join(REGIONS)
_CURRENCY_LIST = ", ".join(CURRENCY_EXPONENTS)


def _echo(text: str) -> str:
    """A short, printable rendering of user input for an error sentence."""
    shortened = text if len(text) <= _ECHO_LENGTH_MAX else text[:_ECHO_LENGTH_MAX] + "…"
    return shortened if shortened.isprintable() else repr(shortened)


def region(code: str) -> Region:
    """The region for a code like ``"US"`` or ``"us"``."""
    # isascii() first: str.upper() maps the dotless "ı" to "I", so "ın" would be India.
    if isinstance(code, str) and code.isascii():
        found = REGIONS.get(code.upper())
        if found is not None:
            return found
    shown = _echo(code) if isinstance(code, str) else type(code).__name__
    raise validation_error(
        f"Unknown region '{shown}'. Choose one of {_REGION_LIST}.", param="region"
    )


def gift_amount_range(store: Region) -> tuple[int, int]:
    """The smallest and the largest e-gift card of `store`, in minor units."""
    return GIFT_AMOUNT_RANGES[store.currency]


def check_gift_amount(amount_minor: int, store: Region, *, param: str = "amount") -> None:
    """Refuse an e-gift amount outside `store`'s range, in a sentence written the way that
    store writes money (``$1.00``, ``1,00 €``, ``¥100``)."""
    _require_int(amount_minor, param)
    smallest, largest = gift_amount_range(store)
    if not smallest <= amount_minor <= largest:
        low = format_minor(smallest, store.currency, store.locale)
        high = format_minor(largest, store.currency, store.locale)
        raise validation_error(
            f"A gift card of the {store.store_name} is worth from {low} to {high}.", param=param
        )


def currency_exponent(currency: str) -> int:
    """How many decimal places `currency` has, for the currencies giftcard sells in.

    Currency codes are matched exactly, in upper case as ISO 4217 writes them, so that
    one currency is never stored under two spellings.
    """
    exponent = CURRENCY_EXPONENTS.get(currency) if isinstance(currency, str) else None
    if exponent is None:
        shown = _echo(currency) if isinstance(currency, str) else type(currency).__name__
        raise validation_error(
            f"Unknown currency '{shown}'. Choose one of {_CURRENCY_LIST}.", param="currency"
        )
    return exponent


def parse_major(text: str, currency: str, *, param: str = "amount") -> int:
    """Read a positive amount in major units (``"25.00"``) as minor units (``2500``).

    Refused with a `validation_error` naming `param`: anything but ASCII digits with at
    most one decimal point (signs, exponents, thousands separators, NaN), zero, more
    decimals than `currency` has, and amounts above `AMOUNT_MINOR_MAX`. Nothing is
    ever rounded.
    """
    exponent = currency_exponent(currency)
    if not isinstance(text, str) or len(text) > AMOUNT_INPUT_LENGTH_MAX:
        raise validation_error("Write the amount as a number, like 25.00.", param=param)
    # Leading and trailing spaces are harmless in a form field; everything inside is not.
    stripped = text.strip(" \t")
    match = _MAJOR_AMOUNT.fullmatch(stripped)
    if match is None:
        raise validation_error(
            f"'{_echo(text)}' is not an amount. Write it with digits and at most one "
            "decimal point, like 25.00.",
            param=param,
        )
    fraction = match["fraction"] or ""
    if len(fraction) > exponent:
        allowed = "no decimal places" if exponent == 0 else f"at most {exponent} decimal places"
        raise validation_error(
            f"{currency} amounts have {allowed}; '{_echo(text)}' has {len(fraction)}.",
            param=param,
        )
    # Integer arithmetic on the digit strings: "25.5" in USD is 25 * 100 + 50.
    minor_per_major: int = 10**exponent
    amount_minor = int(match["whole"]) * minor_per_major + int(fraction.ljust(exponent, "0") or "0")
    if amount_minor <= 0:
        raise validation_error("The amount must be more than zero.", param=param)
    if amount_minor > AMOUNT_MINOR_MAX:
        largest = format_major_plain(AMOUNT_MINOR_MAX, currency)
        raise validation_error(
            f"The amount is too large; the most accepted is {largest} {currency}.", param=param
        )
    return amount_minor


def _require_int(amount_minor: int, param: str) -> None:
    """Refuse floats, Decimals and bools where a count of minor units belongs."""
    # bool is a subclass of int, and True as "1 cent" is always a bug upstream.
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        raise validation_error(
            f"The amount must be a whole number of minor units, not {type(amount_minor).__name__}.",
            param=param,
        )


def format_minor(amount_minor: int, currency: str, locale: str | None = None) -> str:
    """Show an amount for people: ``$25.00``, ``£25.00``, ``25,00 €``, ``¥2,500``.

    `locale` defaults to that of the first region using `currency`. Negative amounts
    (refunds, adjustments) carry a minus sign. Babel separates the euro sign with a
    no-break space, so that it never wraps onto a line of its own.
    """
    _require_int(amount_minor, "amount")
    exponent = currency_exponent(currency)
    # scaleb shifts the decimal point exactly: Decimal(2500).scaleb(-2) is Decimal("25.00").
    amount_major = Decimal(amount_minor).scaleb(-exponent)
    return format_currency(amount_major, currency, locale=locale or _DEFAULT_LOCALES[currency])


def format_major_plain(amount_minor: int, currency: str) -> str:
    """The exact amount in major units without symbol or grouping: ``25.00``, ``2500``."""
    _require_int(amount_minor, "amount")
    exponent = currency_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    minor_per_major: int = 10**exponent
    whole, fraction = divmod(abs(amount_minor), minor_per_major)
    if exponent == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{exponent}d}"


@dataclass(frozen=True)
class Money:
    """An amount in minor units with its currency; signed, since refunds run backwards."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        # Checked on construction so that a float or an unknown currency never travels
        # further than the line that made it.
        _require_int(self.amount, "amount")
        currency_exponent(self.currency)
