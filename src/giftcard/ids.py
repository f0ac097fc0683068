"""Public ids: a row's integer key, enciphered, behind a prefix naming what it is
(`cus_0q5x3v9c2kd8m`, `txn_…`).

Sequential ids (`cus_2`, `pay_5`) tell anyone who sees two of them how many customers and
payments a store has, and invite guessing the next. Here the key is enciphered with a
keyed permutation of 64-bit blocks: a Feistel network of BLAKE2b rounds, keyed from the
server's secret key, with a key of its own for each prefix (so `cus_…` and `pay_…` of the
same number look unrelated). Only the server can order two ids or read the number behind
one; decoding is exact, so a listing still pages by the key it hides. Nothing is stored:
every existing row has its id the moment the server runs, with no column, index or look-up.

The block holds a key below 2**48 under 16 zero bits; an id whose deciphered top bits are
not zero was never issued (a guess passes that check once in 65,536 tries, and then must
still name a row). The secret key is bound to the database already (the code hashes depend
on it), so ids are as stable as the data they name.

Audit entries (`aud_N`) keep their numbers: they are positions in the staff's log, whose
count is the point.

`use_secret` sets the process's key; the app's services and the CLI call it once with the
server's secret key.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

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
_NOUNS = {
    CUSTOMER: "customer",
    CARD: "card",
    TRANSACTION: "transaction",
    STAFF: "staff member",
    PAYMENT: "payment",
    REFUND: "refund",
    GIFT: "gift",
    ADJUSTMENT: "adjustment",
    AUDIT_ENTRY: "audit entry",
}
# Numbered in the open: see the module's note.
SEQUENTIAL = frozenset({AUDIT_ENTRY})
ENCIPHERED = frozenset({CUSTOMER, CARD, TRANSACTION, STAFF, PAYMENT, REFUND, GIFT, ADJUSTMENT})
ID_DIGITS_MAX = 18

# Crockford's base32, lower case: no i, l, o or u to misread.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_VALUES = {symbol: index for index, symbol in enumerate(ALPHABET)}
BODY_LENGTH = 13  # 65 bits of base32 hold the 64-bit block
KEY_BITS = 48
KEY_MAX = (1 << KEY_BITS) - 1
_HALF_BITS = 32
_HALF_MASK = (1 << _HALF_BITS) - 1
_ROUNDS = 6
_KEY_LABEL = b"giftcard public ids v1:"

_secret: bytes | None = None


def use_secret(secret_key: bytes) -> None:
    """Encipher this process's ids under `secret_key` (the server's GIFTCARD_SECRET_KEY)."""
    global _secret
    _secret = secret_key


def _round_keys(prefix: str) -> tuple[hashlib.blake2b, ...]:
    if _secret is None:
        raise RuntimeError("public ids need the server's secret key: call ids.use_secret first")
    return _keys(_secret, prefix)


@lru_cache(maxsize=64)
def _keys(secret: bytes, prefix: str) -> tuple[hashlib.blake2b, ...]:
    """Each round's keyed BLAKE2b with its key already absorbed: a round copies it
    rather than keying a new one, which would compress the key's block every time."""
    base = hmac.digest(secret, _KEY_LABEL + prefix.encode(), "sha256")
    return tuple(
        hashlib.blake2b(key=hmac.digest(base, bytes([index]), "sha256")[:32], digest_size=4)
        for index in range(_ROUNDS)
    )


def _mix(keyed: hashlib.blake2b, half: int) -> int:
    state = keyed.copy()
    state.update(half.to_bytes(4, "big"))
    return int.from_bytes(state.digest(), "big")


def _encipher(prefix: str, block: int) -> int:
    left, right = block >> _HALF_BITS, block & _HALF_MASK
    for key in _round_keys(prefix):
        left, right = right, left ^ _mix(key, right)
    return (left << _HALF_BITS) | right


def _decipher(prefix: str, block: int) -> int:
    left, right = block >> _HALF_BITS, block & _HALF_MASK
    for key in reversed(_round_keys(prefix)):
        left, right = right ^ _mix(key, left), left
    return (left << _HALF_BITS) | right


def format_id(prefix: str, value: int) -> str:
    """The public id of row `value`: `prefix_` and 13 base32 symbols."""
    if prefix in SEQUENTIAL:
        return f"{prefix}_{value}"
    if _secret is None:
        _round_keys(prefix)  # says what is missing
    return _format(_secret, prefix, value)


# Pages and lists name the same rows again and again.
@lru_cache(maxsize=65_536)
def _format(secret: bytes | None, prefix: str, value: int) -> str:
    if not 0 <= value <= KEY_MAX:
        raise ValueError(f"{prefix} key {value} is out of range")
    block = _encipher(prefix, value)
    symbols = []
    for _ in range(BODY_LENGTH):
        block, symbol = divmod(block, 32)
        symbols.append(ALPHABET[symbol])
    return f"{prefix}_{''.join(reversed(symbols))}"


def _number(prefix: str, text: str) -> int | None:
    """The key behind `text`, or None when it is not an id of this kind."""
    head, _, body = text.partition("_")
    if head != prefix:
        return None
    if prefix in SEQUENTIAL:
        if not body.isascii() or not body.isdigit() or len(body) > ID_DIGITS_MAX:
            return None
        return int(body)
    if len(body) != BODY_LENGTH:
        return None
    block = 0
    for symbol in body.lower():
        value = _VALUES.get(symbol)
        if value is None:
            return None
        block = block * 32 + value
    if block >> 64:
        return None
    number = _decipher(prefix, block)
    return number if number <= KEY_MAX else None


def parse_id(prefix: str, text: str, *, param: str = "id") -> int:
    """The key behind a public id; anything else is an id that names nothing."""
    number = _number(prefix, text)
    if number is None:
        raise GiftcardError(
            ErrorCode.NOT_FOUND,
            f"No such {_NOUNS[prefix]}: its id is {_shape(prefix)}.",
            param=param,
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
            f"starting_after must be the id of {_with_article(_NOUNS[prefix])} from a "
            "previous page "
            f"({_shape(prefix)}).",
            param="starting_after",
        )
    return number


def read(prefix: str, text: str) -> int | None:
    """The key behind `text` when it is an id of this kind, as written now or as
    written before ids were enciphered (audit entries recorded then still name rows so);
    otherwise None."""
    number = _number(prefix, text)
    return number if number is not None else legacy_number(prefix, text)


def spellings(text: str) -> tuple[str, ...]:
    """The ways a stored text may name what `text` names: an enciphered id and the
    sequential one it replaced, or `text` alone when it is neither."""
    head, _, _ = text.partition("_")
    if head in ENCIPHERED:
        number = read(head, text)
        if number is not None and number <= KEY_MAX:
            return (format_id(head, number), f"{head}_{number}")
    return (text,)


def legacy_number(prefix: str, text: str) -> int | None:
    """The N of a sequential `prefix_N` as ids were written before they were enciphered
    (audit entries recorded then still name rows so), or None."""
    head, _, digits = text.partition("_")
    if head != prefix or not digits.isascii() or not digits.isdigit():
        return None
    if len(digits) > ID_DIGITS_MAX:
        return None
    return int(digits)


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _shape(prefix: str) -> str:
    if prefix in SEQUENTIAL:
        return f"{prefix}_ and a number"
    return f"{prefix}_ and {BODY_LENGTH} letters and digits"
