"""Public ids: an integer key behind a prefix naming what it is (`cus_12`, `txn_7`)."""

from __future__ import annotations

from giftcard.errors import ErrorCode, GiftcardError

CUSTOMER = "cus"
CARD = "card"
TRANSACTION = "txn"
STAFF = "stf"
PAYMENT = "pay"
REFUND = "re"
GIFT = "gift"
ADJUSTMENT = "adj"
AUDIT_ENTRY = "aud"
ID_DIGITS_MAX = 18


def format_id(prefix: str, value: int) -> str:
    return f"{prefix}_{value}"


def _number(prefix: str, text: str) -> int | None:
    """The N of `prefix_N`, or None when `text` is not such an id."""
    head, _, digits = text.partition("_")
    if head != prefix or not digits.isascii() or not digits.isdigit():
        return None
    if len(digits) > ID_DIGITS_MAX:
        return None
    return int(digits)


def parse_id(prefix: str, text: str, *, param: str = "id") -> int:
    """The integer behind `prefix_N`; anything else is an id that names nothing."""
    number = _number(prefix, text)
    if number is None:
        raise GiftcardError(
            ErrorCode.NOT_FOUND, f"No such {prefix} id: expected {prefix}_<number>.", param=param
        )
    return number


def parse_cursor(prefix: str, text: str | None) -> int | None:
    """A `starting_after` cursor: an id from a previous page, or None for the first."""
    if text is None:
        return None
    number = _number(prefix, text)
    if number is None:
        raise GiftcardError(
            ErrorCode.VALIDATION_ERROR,
            f"starting_after must be an id like {prefix}_123 from a previous page.",
            param="starting_after",
        )
    return number
