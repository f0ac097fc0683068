"""Public ids: an integer key behind a prefix naming what it is (`cus_12`, `txn_7`)."""

from __future__ import annotations

from giftcard.errors import ErrorCode, GiftcardError

CUSTOMER = "cus"
CARD = "card"
TRANSACTION = "txn"
STAFF = "stf"
ID_DIGITS_MAX = 18


def format_id(prefix: str, value: int) -> str:
    return f"{prefix}_{value}"


def parse_id(prefix: str, text: str, *, param: str = "id") -> int:
    """The integer behind `prefix_N`; anything else is an id that names nothing."""
    head, _, digits = text.partition("_")
    if (
        head != prefix
        or not digits.isascii()
        or not digits.isdigit()
        or len(digits) > ID_DIGITS_MAX
    ):
        raise GiftcardError(
            ErrorCode.NOT_FOUND, f"No such {prefix} id: expected {prefix}_<number>.", param=param
        )
    return int(digits)


def parse_cursor(prefix: str, text: str | None) -> int | None:
    if text is None:
        return None
    head, _, digits = text.partition("_")
    if (
        head != prefix
        or not digits.isascii()
        or not digits.isdigit()
        or len(digits) > ID_DIGITS_MAX
    ):
        raise GiftcardError(
            ErrorCode.VALIDATION_ERROR,
            f"starting_after must be an id like {prefix}_123 from a previous page.",
            param="starting_after",
        )
    return int(digits)
