"""Gift card codes and serials: generating, normalizing, checking and hashing them.

A **code** is the secret a shopper types (SPEC §3). It has 16 symbols of Crockford
base32 (``0-9 A-Z`` without ``I L O U``), shown as ``7KQ4-M2ZP-X9CD-R3TW``. The first 15
symbols carry 75 bits from :mod:`secrets`; the 16th is a check symbol, so that a typo is
told apart from an unknown code without a database look-up.

The check symbol
----------------
Each symbol's index 0..31 in :data:`ALPHABET` is read as an element of the finite field
GF(2^5), built with the primitive polynomial x^5 + x^2 + 1. Addition in that field is XOR.
Let α be the primitive element (the polynomial ``x``, i.e. the integer 2). A code
x_0 .. x_15 is valid iff::

    Σ_{i=0}^{15} α^i · x_i = 0

so the check symbol is x_15 = α^-15 · Σ_{i<15} α^i · x_i (in characteristic 2, minus is
plus). Why this catches what SPEC §3 demands:

* α has order 31, so α^0 .. α^15 are sixteen *distinct, non-zero* field elements.
* A single substitution at position i changes the sum by α^i · δ with δ ≠ 0. A product of
  two non-zero field elements is never zero, so the sum is no longer zero: detected.
* Swapping two different neighbours x_i ≠ x_{i+1} changes the sum by
  α^i · (1 + α) · (x_i ⊕ x_{i+1}). Every factor is non-zero (1 + α ≠ 0 because α ≠ 1),
  so again the sum is non-zero: detected.

A plain "sum of symbols mod 32" would catch substitutions but no swaps; a weighted sum
mod 32 fails because 32 is not prime and weights like 2 or 16 lose information. A field
is what makes every weight invertible.

A random 16-symbol string passes the check with probability exactly 1/32, because for
any 15 symbols exactly one 16th symbol completes a valid code.

Speed: multiplying by α^i is precomputed at import into one 32-entry table per position
(and one table for α^-15), so checking or generating a code costs one table look-up and
one XOR per symbol. Generating 100,000 codes takes a fraction of a second.

A **serial** is the non-secret 12-digit number printed on a physical card for support
look-ups: 11 random digits (the first never 0, so spreadsheets do not drop it) and a Luhn
check digit, which catches every single-digit error.

The service never stores a full code: :func:`code_hash` gives the keyed HMAC-SHA-256 used
for look-ups and :func:`code_last4` the part that may be shown.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from giftcard.errors import ErrorCode, RedemptionError, validation_error

__all__ = [
    "ALPHABET",
    "CODE_GROUP_LENGTH",
    "CODE_INPUT_LENGTH_MAX",
    "CODE_LENGTH",
    "SERIAL_INPUT_LENGTH_MAX",
    "SERIAL_LENGTH",
    "check_code",
    "code_hash",
    "code_last4",
    "format_code",
    "generate_code",
    "generate_serial",
    "normalize_code",
    "normalize_serial",
]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U.
CODE_LENGTH = 16  # 15 random symbols (75 bits) and 1 check symbol.
CODE_RANDOM_LENGTH = CODE_LENGTH - 1
CODE_GROUP_LENGTH = 4  # Shown as four groups of four, e.g. 7KQ4-M2ZP-X9CD-R3TW.
# A formatted code with generous spacing is under 30 characters; anything past 64 is not
# a code someone typed, and refusing it first bounds the work an attacker can cause.
CODE_INPUT_LENGTH_MAX = 64
SERIAL_LENGTH = 12
SERIAL_INPUT_LENGTH_MAX = 64

_SYMBOL_BITS = 5
_RANDOM_BITS = _SYMBOL_BITS * CODE_RANDOM_LENGTH
SEED_BYTES = 32
# Keeps derived codes apart from anything else the secret key is used for.
_DERIVED_CODE_PURPOSE = b"giftcard derived code v1\x00"
_FIELD_SIZE = 1 << _SYMBOL_BITS  # 32 elements, one per symbol.
_FIELD_ORDER = _FIELD_SIZE - 1  # The multiplicative group has 31 elements.
_PRIMITIVE_POLYNOMIAL = 0b100101  # x^5 + x^2 + 1

# Separators a shopper may type or paste between groups: ASCII spacing, the hyphen-minus,
# the Unicode dashes and minus sign word processors and e-mail clients substitute for it,
# non-breaking and ideographic spaces (copied from HTML and East Asian keyboards), and
# invisible soft hyphens and zero-width spaces, which a shopper cannot even see to remove.
_IGNORED_CHARACTERS = (
    " \t\r\n-"
    "\u00a0"  # no-break space
    "\u00ad"  # soft hyphen
    "\u2007\u2009\u200a\u200b\u202f"  # figure, thin, hair, zero-width, narrow no-break space
    "\u2010\u2011\u2012\u2013\u2014\u2015"  # hyphen .. horizontal bar
    "\u2212"  # minus sign
    "\u3000"  # ideographic space
    "\ufe63\uff0d"  # small and fullwidth hyphen-minus
)

# Maps what people type to ALPHABET: ASCII lower case to upper case (never str.upper(),
# which would turn e.g. the dotless 'ı' into 'I' and 'ß' into 'SS'), the look-alikes
# Crockford base32 defines (O reads as 0, I and L as 1), and separators to nothing.
_NORMALIZATION = str.maketrans(
    {
        **{chr(c): chr(c).upper() for c in range(ord("a"), ord("z") + 1)},
        "O": "0",
        "o": "0",
        "I": "1",
        "i": "1",
        "L": "1",
        "l": "1",
        **dict.fromkeys(_IGNORED_CHARACTERS),
    }
)
_SERIAL_NORMALIZATION = str.maketrans(dict.fromkeys(_IGNORED_CHARACTERS))
_SYMBOL_VALUES = {symbol: value for value, symbol in enumerate(ALPHABET)}

_MALFORMED_SYMBOL = (
    "That is not a gift card code: a code has only the digits 0-9 and the letters A-Z "
    "(never U). Please copy it again from your card or email."
)
_MALFORMED_LENGTH = (
    "That is not a gift card code: a code has 16 letters and digits, in four groups of "
    "four. Please check that you copied all of it."
)
_MISTYPED = "Check the code — one character looks mistyped."


def _build_field_tables() -> tuple[list[int], list[int]]:
    """Powers of α (doubled in length so products need no modulo) and discrete logs."""
    exponentials = [0] * (2 * _FIELD_ORDER)
    logarithms = [0] * _FIELD_SIZE
    element = 1
    for power in range(_FIELD_ORDER):
        exponentials[power] = exponentials[power + _FIELD_ORDER] = element
        logarithms[element] = power
        element <<= 1
        if element & _FIELD_SIZE:
            element ^= _PRIMITIVE_POLYNOMIAL
    # If α had an order below 31 some element would repeat and the guarantees in the
    # module docstring would not hold; this check runs even under `python -O`.
    if element != 1 or len(set(exponentials[:_FIELD_ORDER])) != _FIELD_ORDER:
        raise RuntimeError("x^5 + x^2 + 1 does not generate GF(32); the check scheme is void")
    return exponentials, logarithms


_EXP, _LOG = _build_field_tables()


def _multiply_by_alpha_power(power: int) -> tuple[int, ...]:
    """The table v -> α^power · v for every field element v."""
    power %= _FIELD_ORDER
    return (0, *(_EXP[_LOG[value] + power] for value in range(1, _FIELD_SIZE)))


# _POSITION_TABLES[i][v] = α^i · v, the weighted contribution of value v at position i.
_POSITION_TABLES = tuple(_multiply_by_alpha_power(i) for i in range(CODE_LENGTH))
# The same, keyed by symbol, so checking a normalized string skips the ALPHABET look-up.
_POSITION_SYMBOL_TABLES = tuple(
    {symbol: table[value] for symbol, value in _SYMBOL_VALUES.items()} for table in _POSITION_TABLES
)
# _CHECK_SYMBOLS[s] is the check symbol completing a prefix whose weighted sum is s.
_CHECK_TABLE = _multiply_by_alpha_power(-CODE_RANDOM_LENGTH)
_CHECK_SYMBOLS = tuple(ALPHABET[_CHECK_TABLE[syndrome]] for syndrome in range(_FIELD_SIZE))
# Generation reads symbol i from bits 5i..5i+4 of one random integer; pairing each shift
# with its table up front keeps the per-code loop to a shift, a mask, a look-up and an XOR.
_RANDOM_POSITION_TABLES = tuple(
    zip(
        range(0, _SYMBOL_BITS * CODE_RANDOM_LENGTH, _SYMBOL_BITS),
        _POSITION_TABLES[:CODE_RANDOM_LENGTH],
        strict=True,
    )
)


def generate_code() -> str:
    """Return a new normalized code: 15 symbols from `secrets`, then the check symbol."""
    return _code_from_bits(secrets.randbits(_SYMBOL_BITS * CODE_RANDOM_LENGTH))


def new_seed() -> bytes:
    """32 random bytes from which :func:`derive_code` makes a code with the secret key."""
    return secrets.token_bytes(SEED_BYTES)


def derive_code(secret_key: bytes, seed: bytes) -> str:
    """The code kept as `seed` (from :func:`new_seed`): an e-gift's code, which must be
    shown again in a resent email yet never stored.

    Its 75 bits are HMAC-SHA-256 of the seed under the server's secret key: without the
    key, a seed says nothing about its code; with it, the same seed gives the same code.
    """
    if not secret_key:
        raise ValueError("derive_code needs a non-empty secret key")
    if len(seed) != SEED_BYTES:
        raise ValueError(f"derive_code needs a {SEED_BYTES}-byte seed")
    digest = hmac.new(secret_key, _DERIVED_CODE_PURPOSE + seed, hashlib.sha256).digest()
    random_bits = int.from_bytes(digest, "big") >> (len(digest) * 8 - _RANDOM_BITS)
    return _code_from_bits(random_bits)


def _code_from_bits(random_bits: int) -> str:
    symbols: list[str] = []
    syndrome = 0
    for shift, table in _RANDOM_POSITION_TABLES:
        value = (random_bits >> shift) & 0b11111
        symbols.append(ALPHABET[value])
        syndrome ^= table[value]
    symbols.append(_CHECK_SYMBOLS[syndrome])
    return "".join(symbols)


def format_code(code: str) -> str:
    """Show a normalized code as four dash-separated groups: ``7KQ4-M2ZP-X9CD-R3TW``."""
    if len(code) != CODE_LENGTH:
        raise ValueError(f"format_code needs a normalized {CODE_LENGTH}-symbol code")
    return "-".join(
        code[start : start + CODE_GROUP_LENGTH]
        for start in range(0, CODE_LENGTH, CODE_GROUP_LENGTH)
    )


def normalize_code(raw: str) -> str:
    """Read what a shopper typed as a code, forgiving case, separators and look-alikes.

    Raises `RedemptionError(CODE_MALFORMED)` when no code could look like this: a symbol
    outside the alphabet or a length other than 16 once separators are removed.
    """
    # Refuse oversized input before translating it, so its cost stays bounded.
    if not isinstance(raw, str) or len(raw) > CODE_INPUT_LENGTH_MAX:
        raise RedemptionError(ErrorCode.CODE_MALFORMED, _MALFORMED_LENGTH, param="code")
    code = raw.translate(_NORMALIZATION)
    # Symbols are judged before length: "this character can never be in a code" is the
    # more useful sentence when both are wrong.
    if not all(symbol in _SYMBOL_VALUES for symbol in code):
        raise RedemptionError(ErrorCode.CODE_MALFORMED, _MALFORMED_SYMBOL, param="code")
    if len(code) != CODE_LENGTH:
        raise RedemptionError(ErrorCode.CODE_MALFORMED, _MALFORMED_LENGTH, param="code")
    return code


def _syndrome(code: str) -> int:
    """Σ α^i · x_i over a normalized code; zero exactly when its check symbol fits."""
    syndrome = 0
    for table, symbol in zip(_POSITION_SYMBOL_TABLES, code, strict=True):
        syndrome ^= table[symbol]
    return syndrome


def check_code(raw: str) -> str:
    """Normalize `raw` and verify its check symbol; return the normalized code.

    Raises `RedemptionError(CODE_MALFORMED)` as :func:`normalize_code` does, and
    `RedemptionError(CODE_MISTYPED)` when the code is well formed but its check symbol
    does not match, which almost surely means a typo.
    """
    code = normalize_code(raw)
    if _syndrome(code) != 0:
        raise RedemptionError(ErrorCode.CODE_MISTYPED, _MISTYPED, param="code")
    return code


def code_hash(secret_key: bytes, code: str) -> bytes:
    """The 32-byte HMAC-SHA-256 of the normalized code: what the database stores.

    Any forgiving spelling of one code hashes the same, since it is normalized first.
    """
    # An empty key would make the hash a plain SHA-256 that anyone can recompute from a
    # guessed code; that is a configuration bug, never a caller's input.
    if not secret_key:
        raise ValueError("code_hash needs a non-empty secret key")
    normalized = normalize_code(code)
    return hmac.new(secret_key, normalized.encode("ascii"), hashlib.sha256).digest()


def code_last4(code: str) -> str:
    """The last four symbols of the normalized code: the only part shown after issue."""
    return normalize_code(code)[-4:]


def _luhn_check_digit(digits: str) -> str:
    """The digit that, appended to `digits`, makes the Luhn sum a multiple of ten."""
    total = 0
    # Walking from the right, the digit next to the (future) check digit is doubled first.
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def generate_serial() -> str:
    """Return a new 12-digit serial: 11 random digits, the first never 0, and a Luhn digit."""
    # One draw from [10^10, 10^11) is the same distribution as a non-zero first digit and
    # ten free digits, at a tenth of the cost of drawing the digits one by one.
    smallest = 10 ** (SERIAL_LENGTH - 2)
    payload = str(smallest + secrets.randbelow(9 * smallest))
    return payload + _luhn_check_digit(payload)


def normalize_serial(raw: str) -> str:
    """Read a typed serial: separators are ignored; 12 digits with a valid Luhn digit."""
    if not isinstance(raw, str) or len(raw) > SERIAL_INPUT_LENGTH_MAX:
        raise validation_error(
            f"A serial number has {SERIAL_LENGTH} digits, like 4821 0937 5568.", param="serial"
        )
    serial = raw.translate(_SERIAL_NORMALIZATION)
    # str.isdigit() would accept Arabic-Indic or fullwidth digits; only ASCII is printed.
    if len(serial) != SERIAL_LENGTH or not all("0" <= digit <= "9" for digit in serial):
        raise validation_error(
            f"A serial number has {SERIAL_LENGTH} digits, like 4821 0937 5568.", param="serial"
        )
    if _luhn_check_digit(serial[:-1]) != serial[-1]:
        raise validation_error(
            "Check the serial number — one digit looks mistyped.", param="serial"
        )
    return serial
