"""Regions, currencies, and turning amounts from and into what people read and type.

Every amount in giftcard is an ``int`` in the currency's minor unit (cents for USD, yen
for JPY, which has none) next to its ISO 4217 currency code (SPEC §2). This module is the
only place that knows how many minor units a currency has, and the only place that
crosses between minor units and the major units people see:

* :func:`parse_amount` reads what a store's people type (``10,50 €`` in Germany,
  ``$1,234.56`` in the US, ``¥500`` in Japan) with Babel's number parsing, and refuses
  what could be read two ways in a sentence written in the store's own format.
* :func:`parse_major` reads the plain, locale-free form (``"25.00"``) used on the command
  line and in files.
* Both refuse an amount with more decimals than its currency has, never rounding it: a
  store that asked for 25.001 dollars made a mistake we must not hide.
* :func:`format_minor` shows an amount in a region's locale through Babel
  (``$25.00``, ``£25.00``, ``25,00 €``, ``¥2,500``).
* :func:`format_major_plain` writes the exact, locale-free form used in CSV files.

Floats never appear: ``0.1 + 0.2 != 0.3`` is fine for physics and wrong for money.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from babel.numbers import (
    NumberFormatError,
    format_currency,
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
    list_currencies,
    parse_decimal,
)

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
    "example_amount",
    "format_major_plain",
    "format_minor",
    "gift_amount_range",
    "parse_amount",
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


# --- amounts as a store's people write them ----------------------------------------------

# Signs people write beside an amount that Babel's symbols leave out: the fullwidth yen of
# Japanese keyboards and the "円" written after a number, and the "Rs" long used in India.
_MORE_CURRENCY_SIGNS: dict[str, tuple[str, ...]] = {
    "JPY": ("\uffe5", "\u5186"),
    "INR": ("Rs.", "Rs"),
}
# Spaces that may stand around an amount or group its digits: the ordinary one, the
# no-break space Babel puts before "€", and French's narrow no-break and thin spaces.
_SPACES = " \t\u00a0\u202f\u2009"
_SPACE_RUN = re.compile(f"[{_SPACES}]+")
# Hyphen-minus, the typographic minus, and the en dash phones autocorrect a minus into.
_MINUS_SIGNS = "-\u2212\u2013"
# A Japanese keyboard in fullwidth mode types these for digits, comma and point.
_FULLWIDTH = str.maketrans("０１２３４５６７８９，．", "0123456789,.")
_ASCII_DIGITS = "0123456789"
# India also writes amounts grouped in thousands (100,000 as well as 1,00,000); with the
# point as the decimal sign in both, the two groupings cannot mean different sums.
_ALSO_GROUPED_AS: dict[str, str] = {"IN": "en"}
# A three-digit fraction with nothing before it but up to three digits ("1,234") is the
# shape a thousands grouping has, so a refusal offers that reading too.
_GROUP_DIGITS = 3
# What hints and refusals show as an amount when they have no better one: with decimals
# that are not zero, so that the decimal sign shows (10,50 €), and ¥500 where there are none.
_EXAMPLE_MINOR = 1050
_EXAMPLE_MINOR_NO_DECIMALS = 500


def _derive_currency_signs() -> dict[str, frozenset[str]]:
    """Each sign that stands for one of our currencies (casefolded), with the currencies it
    may mean: ``$`` is the dollar of the US, Canada and Australia stores alike."""
    locales = sorted({each.locale for each in REGIONS.values()})
    signs: dict[str, set[str]] = {}
    for currency in CURRENCY_EXPONENTS:
        written = [currency, *_MORE_CURRENCY_SIGNS.get(currency, ())]
        written += [get_currency_symbol(currency, locale) for locale in locales]
        for sign in written:
            signs.setdefault(sign.casefold(), set()).add(currency)
    return {sign: frozenset(currencies) for sign, currencies in signs.items()}


_CURRENCY_SIGNS = _derive_currency_signs()
# Longest first, so that "US$" is taken whole rather than as "$" after "US".
_SIGNS_LONGEST_FIRST = sorted(_CURRENCY_SIGNS, key=len, reverse=True)
_ISO_CURRENCY_CODES = frozenset(code.casefold() for code in list_currencies())
_WORD = re.compile(r"[^\W\d_]+")


def _store_of(store: Region | str) -> Region:
    return store if isinstance(store, Region) else region(store)


def example_amount(region: Region | str, *, up_to: int | None = None) -> str:
    """An amount written the way a store writes money (``10,50 €``, ``$10.50``, ``¥500``),
    for the hints beside amount fields and the refusals of `parse_amount`; no more than
    `up_to` minor units when that is given and positive, so a hint never suggests more than
    the field accepts."""
    store = _store_of(region)
    amount_minor = _EXAMPLE_MINOR if store.exponent else _EXAMPLE_MINOR_NO_DECIMALS
    if up_to is not None and 0 < up_to < amount_minor:
        amount_minor = up_to
    return format_minor(amount_minor, store.currency, store.locale)


def _write_it_like(store: Region, readings: list[int]) -> str:
    """ "write it like 1.234,00 € or 1,23 €": the readings that are amounts, in the store's
    own format, or the store's example amount when none is."""
    shown = [
        format_minor(amount_minor, store.currency, store.locale)
        for amount_minor in dict.fromkeys(readings)
        if 0 < amount_minor <= AMOUNT_MINOR_MAX
    ] or [example_amount(store)]
    return "write it like " + " or ".join(shown)


def _split_sign(typed: str) -> tuple[str, str | None]:
    """The number and the currency sign written before or after it, if there is one."""
    for sign in _SIGNS_LONGEST_FIRST:
        if typed[: len(sign)].casefold() == sign:
            return typed[len(sign) :].strip(_SPACES), typed[: len(sign)]
        if typed[-len(sign) :].casefold() == sign:
            return typed[: -len(sign)].strip(_SPACES), typed[-len(sign) :]
    return typed, None


def _foreign_sign(store: Region, sign: str | None, number: str) -> str | None:
    """The sign of another currency written beside or inside the number, if any."""
    candidates = [sign] if sign is not None else []
    candidates += [char for char in number if unicodedata.category(char) == "Sc"]
    candidates += [
        word
        for word in _WORD.findall(number)
        if word.casefold() in _CURRENCY_SIGNS or word.casefold() in _ISO_CURRENCY_CODES
    ]
    for candidate in candidates:
        if store.currency not in _CURRENCY_SIGNS.get(candidate.casefold(), frozenset()):
            return candidate
    return None


def _read_number(number: str, store: Region) -> Decimal:
    """The number as the store's locale writes it, through Babel's strict parsing, which
    refuses a grouping in the wrong places ("10.50" in Germany) with its two readings.

    Raises `NumberFormatError` for anything but ASCII digits and the locale's decimal and
    grouping signs, so that exponents, NaN, underscores and other scripts' digits, all of
    which `Decimal` would read, never arrive there.
    """
    group = get_group_symbol(store.locale)
    decimal_sign = get_decimal_symbol(store.locale)
    # Spaces inside a number can only group its digits; where the comma is the decimal
    # sign, so can a point (people in France write 1.234,56 as well as 1 234,56).
    written = _SPACE_RUN.sub(group, number)
    if decimal_sign == ",":
        written = written.replace(".", group)
    if not any(char in _ASCII_DIGITS for char in written) or not set(written) <= set(
        _ASCII_DIGITS + group + decimal_sign
    ):
        raise NumberFormatError(f"{number!r} is not a number")
    try:
        return parse_decimal(written, store.locale, strict=True)
    except NumberFormatError:
        also = _ALSO_GROUPED_AS.get(store.code)
        if also is None:
            raise
        try:
            return parse_decimal(written, also, strict=True)
        except NumberFormatError:
            pass
        raise


def _digits(value: Decimal) -> tuple[int, int]:
    """A finite Decimal as (all its digits as one integer, its power of ten)."""
    sign, digits, power = value.as_tuple()
    if sign or not isinstance(power, int):
        raise ValueError(f"not a finite, non-negative amount: {value!r}")
    return int("".join(map(str, digits)) or "0"), power


def _exact_minor(value: Decimal, exponent: int) -> int | None:
    """`value` major units in minor units, or None when it has more decimals than that."""
    whole, power = _digits(value)
    if -power > exponent:
        return None
    scale: int = 10 ** (exponent + power)
    return whole * scale


def _cut_minor(value: Decimal, exponent: int) -> int:
    """`value` with the decimals beyond `exponent` left off, for an example only."""
    whole, power = _digits(value)
    if -power <= exponent:
        scale: int = 10 ** (exponent + power)
        return whole * scale
    cut: int = 10 ** (-power - exponent)
    return whole // cut


def _readings(number: str, store: Region) -> list[int]:
    """What `number` would be as an amount of the store, if it reads as one at all."""
    try:
        amount_minor = _exact_minor(_read_number(number, store), store.exponent)
    except NumberFormatError:
        return []
    return [amount_minor] if amount_minor is not None else []


def _too_many_decimals(number: str, value: Decimal, store: Region) -> str:
    """The refusal of an amount with more decimals than the store's currency has."""
    readings = []
    whole, _ = _digits(value)
    decimal_sign = get_decimal_symbol(store.locale)
    before, _, after = number.partition(decimal_sign)
    looks_grouped = (
        before.isascii()
        and before.isdigit()
        and len(before) <= _GROUP_DIGITS
        and after.isascii()
        and after.isdigit()
        and len(after) == _GROUP_DIGITS
    )
    if looks_grouped:
        readings.append(whole * 10**store.exponent)
    readings.append(_cut_minor(value, store.exponent))
    has = "no decimals" if store.exponent == 0 else f"{store.exponent} decimals"
    return f"{store.currency} has {has}: {_write_it_like(store, readings)}."


def parse_amount(
    text: str, region: Region | str, *, param: str = "amount", allow_zero: bool = False
) -> int:
    """Read an amount as the people of a store write it, into minor units.

    `region` is the store (a `Region` or its code). Accepted: the store's own digits,
    grouping and decimal sign, with its currency's sign or code before or after the
    number (``10,50``, ``10,50 €``, ``1.234,56`` and ``1 234,56`` in Germany and France;
    ``5``, ``$5.00``, ``$1,234.56`` in the US, Canada and Australia; ``¥500`` in Japan;
    ``₹1,00,000`` in India).

    Refused with a `validation_error` naming `param`, in a sentence that shows how the
    store writes the amount: nothing or no number, a negative amount, another currency's
    sign (``$5`` in Germany), a grouping in the wrong places (``10.50`` in Germany, which
    could be 1.050,00 € or 10,50 €), more decimals than the currency has (``1,234`` in
    Germany is 1.234 euros, not 1234, and is never rounded), zero (unless `allow_zero`),
    and more than `AMOUNT_MINOR_MAX`.
    """
    store = _store_of(region)
    like_this = _write_it_like(store, [])
    if not isinstance(text, str) or len(text) > AMOUNT_INPUT_LENGTH_MAX:
        raise validation_error(f"That is too long for an amount: {like_this}.", param=param)
    typed = text.translate(_FULLWIDTH).strip(_SPACES)
    if not typed:
        raise validation_error(f"Enter an amount: {like_this}.", param=param)
    if any(minus in typed for minus in _MINUS_SIGNS):
        raise validation_error(f"The amount must be more than zero: {like_this}.", param=param)
    # Spaces of any kind echo as plain ones: a pasted "1\u202f234" reads as it looks.
    shown = _echo(_SPACE_RUN.sub(" ", typed))
    number, sign = _split_sign(typed)
    foreign = _foreign_sign(store, sign, number)
    if foreign is not None:
        raise validation_error(
            f"The {store.store_name} takes {store.currency}, not {_echo(foreign)}: "
            f"{_write_it_like(store, _readings(number, store))}.",
            param=param,
        )
    try:
        value = _read_number(number, store)
    except NumberFormatError as error:
        readings = [_readings(suggestion, store) for suggestion in error.suggestions or ()]
        if not any(readings):
            raise validation_error(
                f"'{shown}' is not an amount: {like_this}.", param=param
            ) from None
        raise validation_error(
            f"'{shown}' is not how the {store.store_name} writes amounts: "
            f"{_write_it_like(store, [each for found in readings for each in found])}.",
            param=param,
        ) from None
    amount_minor = _exact_minor(value, store.exponent)
    if amount_minor is None:
        raise validation_error(_too_many_decimals(number, value, store), param=param)
    if amount_minor == 0 and not allow_zero:
        raise validation_error(f"The amount must be more than zero: {like_this}.", param=param)
    if amount_minor > AMOUNT_MINOR_MAX:
        largest = format_minor(AMOUNT_MINOR_MAX, store.currency, store.locale)
        raise validation_error(
            f"The amount is too large; the most accepted is {largest}.", param=param
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
    currency_exponent(currency)  # an unknown currency is refused as such
    return _formatted(amount_minor, currency, locale or _DEFAULT_LOCALES[currency])


# Babel takes about 16 us to format an amount, and a payment writes one into its journal
# entry's description; the amounts a store charges repeat.
@functools.lru_cache(maxsize=4096)
def _formatted(amount_minor: int, currency: str, locale: str) -> str:
    exponent = currency_exponent(currency)
    # scaleb shifts the decimal point exactly: Decimal(2500).scaleb(-2) is Decimal("25.00").
    amount_major = Decimal(amount_minor).scaleb(-exponent)
    return format_currency(amount_major, currency, locale=locale)


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
