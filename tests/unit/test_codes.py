"""Unit tests for giftcard.codes: generating, normalizing, checking and hashing codes."""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giftcard import codes
from giftcard.codes import (
    ALPHABET,
    CODE_INPUT_LENGTH_MAX,
    CODE_LENGTH,
    SERIAL_LENGTH,
    check_code,
    code_hash,
    code_last4,
    format_code,
    generate_code,
    generate_serial,
    normalize_code,
    normalize_serial,
)
from giftcard.errors import ErrorCode, GiftcardError, RedemptionError

SAMPLE_SIZE = 200
KEY = b"k" * 32


def _reference_multiply(a: int, b: int) -> int:
    """GF(32) product by shift-and-add, independent of the module's tables."""
    product = 0
    for _ in range(5):
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a & 0b100000:
            a ^= 0b100101  # x^5 + x^2 + 1
    return product


def _reference_syndrome(code: str) -> int:
    """Σ α^i · x_i with α = 2, computed the slow way straight from the definition."""
    total = 0
    alpha_power = 1
    for symbol in code:
        total ^= _reference_multiply(alpha_power, ALPHABET.index(symbol))
        alpha_power = _reference_multiply(alpha_power, 2)
    return total


def _complete(prefix: str) -> str:
    """The one valid code starting with a 15-symbol prefix, found by trying all 32 ends."""
    (code,) = [prefix + end for end in ALPHABET if _reference_syndrome(prefix + end) == 0]
    return code


# Fixed codes at the edges of the alphabet, so the exhaustive test does not rest on luck.
FIXED_CODES = [
    _complete("0" * 15),
    _complete("Z" * 15),
    _complete("0123456789ABCDE"),
    _complete("FGHJKMNPQRSTVWX"),
    _complete("Z0Z0Z0Z0Z0Z0Z0Z"),
]


def _error_code(raw: str) -> ErrorCode | None:
    """The error check_code raises for `raw`, or None when it is accepted."""
    try:
        check_code(raw)
    except RedemptionError as error:
        refusal = error
    else:
        return None
    assert refusal.param == "code"
    return refusal.code


# --- generating -------------------------------------------------------------------------


def test_generated_codes_have_sixteen_symbols_and_pass_the_check() -> None:
    """Generated codes are 16 symbols from ALPHABET, pass check_code unchanged, and agree
    with the check defined from first principles."""
    for _ in range(1000):
        code = generate_code()
        assert len(code) == CODE_LENGTH
        assert set(code) <= set(ALPHABET)
        assert check_code(code) == code
        assert _reference_syndrome(code) == 0


def test_fixed_codes_satisfy_the_module_check() -> None:
    """Codes completed by the slow reference implementation pass the module's fast check."""
    for code in FIXED_CODES:
        assert check_code(code) == code
    assert FIXED_CODES[0] == "0" * 16  # The zero vector is trivially a codeword.


def test_exactly_one_check_symbol_completes_each_prefix() -> None:
    """For a random 15-symbol prefix exactly one of 32 endings is valid: a random code
    passes with probability exactly 1/32."""
    rng = random.Random(20240601)
    for _ in range(100):
        prefix = "".join(rng.choice(ALPHABET) for _ in range(CODE_LENGTH - 1))
        accepted = [end for end in ALPHABET if _error_code(prefix + end) is None]
        assert accepted == [_complete(prefix)[-1]]


def test_a_thousand_codes_are_distinct() -> None:
    """1000 generated codes are all different, as 75 random bits make near certain."""
    assert len({generate_code() for _ in range(1000)}) == 1000


def test_every_symbol_appears_at_every_random_position() -> None:
    """Across 2000 codes every symbol shows up at each of the 15 random positions, which a
    generator using too few bits per symbol would fail (chance of a false failure ~1e-25)."""
    generated = [generate_code() for _ in range(2000)]
    for position in range(CODE_LENGTH - 1):
        assert {code[position] for code in generated} == set(ALPHABET)


# --- formatting and normalizing ---------------------------------------------------------


def test_format_code_groups_four_by_four_and_normalize_reverses_it() -> None:
    """format_code shows four dash-separated groups that normalize_code reads back."""
    code = generate_code()
    formatted = format_code(code)
    assert formatted == f"{code[0:4]}-{code[4:8]}-{code[8:12]}-{code[12:16]}"
    assert normalize_code(formatted) == code
    assert check_code(formatted) == code


def test_format_code_refuses_a_code_of_the_wrong_length() -> None:
    """format_code is for normalized codes only and refuses anything else loudly."""
    with pytest.raises(ValueError, match="normalized"):
        format_code("ABC")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("abcd-efgh-jkmn-pqrs", "ABCDEFGHJKMNPQRS"),
        ("  ABCD EFGH\tJKMN PQRS  ", "ABCDEFGHJKMNPQRS"),
        ("ABCDEFGHJKMNPQRS\n", "ABCDEFGHJKMNPQRS"),
        ("ABCD\u2010EFGH\u2011JKMN\u2012PQRS", "ABCDEFGHJKMNPQRS"),
        ("ABCD\u2013EFGH\u2014JKMN\u2015PQRS", "ABCDEFGHJKMNPQRS"),
        ("ABCD\u2212EFGH\u00a0JKMN\u3000PQRS", "ABCDEFGHJKMNPQRS"),
        ("ABCD\u00adEFGH\u200bJKMN\uff0dPQRS", "ABCDEFGHJKMNPQRS"),
        ("OoIi-Ll00-1111-2222", "0011110011112222"),
        ("a-b-c-d-e-f-g-h-j-k-m-n-p-q-r-s", "ABCDEFGHJKMNPQRS"),
    ],
)
def test_normalize_code_forgives_case_separators_and_look_alikes(typed: str, expected: str) -> None:
    """Case, ASCII and Unicode spaces and dashes are ignored; O reads as 0, I and L as 1."""
    assert normalize_code(typed) == expected


def test_forgiving_spellings_of_a_valid_code_pass_the_check() -> None:
    """A valid code typed in lower case with Unicode dashes, and with O for 0, is accepted."""
    code = FIXED_CODES[0]  # All zeros, so every 0 may be typed as O.
    assert check_code("oooo\u2013OOOO\u2014oOoO 0000") == code
    generated = generate_code()
    assert check_code(format_code(generated).lower().replace("-", "\u2010")) == generated


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="only-spaces"),
        pytest.param("----", id="only-dashes"),
        pytest.param("ABCD-EFGH-JKMN", id="too-short"),
        pytest.param("ABCDEFGHJKMNPQR", id="one-short"),
        pytest.param("ABCDEFGHJKMNPQRST", id="one-long"),
        pytest.param("ABCD-EFGH-JKMN-PQRS-TVWX", id="too-long"),
        pytest.param("ABCD-EFGH-JKMN-PQRU", id="letter-U"),
        pytest.param("abcd-efgh-jkmn-pqru", id="letter-u"),
        pytest.param("ABCD-EFGH-JKMN-PQR🎁", id="emoji"),
        pytest.param("ABCD-EFGH-JKMN-PQR\x00", id="NUL"),
        pytest.param("ABCD-EFGH-JKMN-PQRÉ", id="accented"),
        pytest.param("ABCD-EFGH-JKMN-PQR\u0131", id="dotless-i"),
        pytest.param("ABCD-EFGH-JKMN-PQR\uff21", id="fullwidth-A"),
        pytest.param("ABCD-EFGH-JKMN-PQR\u0661", id="arabic-indic-1"),
        pytest.param("ABCD_EFGH_JKMN_PQRS", id="underscores"),
        pytest.param("ABCD.EFGH.JKMN.PQRS", id="dots"),
        pytest.param("0" * 65, id="65-chars"),
        pytest.param("-" * 48 + "0" * 16 + "-", id="65-chars-with-a-valid-code-inside"),
        pytest.param("0" * 10_000, id="10000-chars"),
    ],
)
def test_malformed_inputs_are_code_malformed(raw: str) -> None:
    """Wrong lengths and symbols no code can contain are refused as code_malformed."""
    with pytest.raises(RedemptionError) as caught:
        check_code(raw)
    assert caught.value.code is ErrorCode.CODE_MALFORMED
    assert caught.value.param == "code"
    assert caught.value.status == 422
    assert caught.value.detail  # A sentence for the shopper, not an empty string.


def test_the_input_length_limit_counts_separators() -> None:
    """64 characters of input are read, 65 refused before any work, separators included."""
    padded = "-" * (CODE_INPUT_LENGTH_MAX - CODE_LENGTH) + FIXED_CODES[1]
    assert len(padded) == CODE_INPUT_LENGTH_MAX
    assert check_code(padded) == FIXED_CODES[1]
    assert _error_code("-" + padded) is ErrorCode.CODE_MALFORMED


def test_malformed_message_does_not_echo_the_input() -> None:
    """The shopper-facing sentence never repeats what was typed, which may be most of a code."""
    raw = "ABCD-EFGH-JKMN-PQRU"
    with pytest.raises(RedemptionError) as caught:
        check_code(raw)
    assert "ABCD" not in caught.value.detail


# --- the exhaustive typo test -----------------------------------------------------------


def _assert_every_typo_is_caught(code: str) -> None:
    """Every single substitution and every swap of two different neighbours is mistyped."""
    for position in range(CODE_LENGTH):
        for other in ALPHABET:
            if other == code[position]:
                continue
            typo = code[:position] + other + code[position + 1 :]
            assert _error_code(typo) is ErrorCode.CODE_MISTYPED, (code, position, other)
    for position in range(CODE_LENGTH - 1):
        left, right = code[position], code[position + 1]
        if left == right:
            continue
        swapped = code[:position] + right + left + code[position + 2 :]
        assert _error_code(swapped) is ErrorCode.CODE_MISTYPED, (code, position)


def test_every_substitution_and_adjacent_swap_is_mistyped() -> None:
    """For 200 generated and 5 fixed codes, all 16 x 31 substitutions and every adjacent
    swap of different symbols are reported as code_mistyped, never accepted."""
    sample = [generate_code() for _ in range(SAMPLE_SIZE)] + FIXED_CODES
    for code in sample:
        _assert_every_typo_is_caught(code)


def test_the_mistyped_error_is_a_plain_sentence() -> None:
    """A mistyped code gets the 422 code_mistyped error with the agreed sentence."""
    code = FIXED_CODES[2]
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    with pytest.raises(RedemptionError) as caught:
        check_code(typo)
    assert caught.value.code is ErrorCode.CODE_MISTYPED
    assert caught.value.status == 422
    assert caught.value.detail == "Check the code — one character looks mistyped."


# --- hashing and display ----------------------------------------------------------------


def test_code_hash_is_32_bytes_and_depends_on_key_and_code() -> None:
    """code_hash is a 32-byte digest that changes with the key and with the code."""
    code = generate_code()
    digest = code_hash(KEY, code)
    assert isinstance(digest, bytes)
    assert len(digest) == 32
    assert code_hash(b"another key of some length", code) != digest
    assert code_hash(KEY, FIXED_CODES[0]) != code_hash(KEY, FIXED_CODES[1])
    assert code_hash(KEY, code) == digest  # Deterministic, so it can be looked up.


def test_code_hash_is_the_same_for_forgiving_spellings() -> None:
    """Every spelling a shopper may type of one code maps to the one stored hash."""
    code = FIXED_CODES[0]
    expected = code_hash(KEY, code)
    for spelling in ("oooo-oooo-oooo-oooo", "0000 0000 0000 0000", "OOOO\u20130000\u2014OoOo 0O0o"):
        assert code_hash(KEY, spelling) == expected


def test_code_hash_refuses_an_empty_key() -> None:
    """An empty key would make the hash guessable by anyone, so it is a loud error."""
    with pytest.raises(ValueError, match="secret key"):
        code_hash(b"", generate_code())


def test_code_last4_is_the_last_four_normalized_symbols() -> None:
    """code_last4 shows the last four symbols, whatever spelling it is given."""
    assert code_last4("abcd-efgh-jkmn-pqrs") == "PQRS"
    assert code_last4("0000-0000-0000-o1iL") == "0111"


# --- serials ----------------------------------------------------------------------------


def _luhn_valid(digits: str) -> bool:
    """The Luhn check written out independently of the module."""
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def test_generated_serials_are_twelve_luhn_valid_digits_never_starting_with_zero() -> None:
    """Serials are 12 ASCII digits, first digit 1-9, with a valid Luhn check digit."""
    serials = [generate_serial() for _ in range(2000)]
    for serial in serials:
        assert len(serial) == SERIAL_LENGTH
        assert set(serial) <= set(string.digits)
        assert serial[0] != "0"
        assert _luhn_valid(serial)
        assert normalize_serial(serial) == serial
    assert len(set(serials)) == len(serials)
    assert {serial[0] for serial in serials} == set("123456789")


def test_normalize_serial_ignores_spaces_and_dashes() -> None:
    """A serial typed in groups with spaces or dashes reads as its 12 digits."""
    assert normalize_serial("4821 0937 5568") == "482109375568"
    assert normalize_serial("4821-0937-5568") == "482109375568"
    assert normalize_serial(" 4821\u20130937\u00a05568 ") == "482109375568"


def test_every_single_digit_change_of_a_serial_is_refused() -> None:
    """Changing any one digit of a serial to any other digit fails its Luhn check."""
    for _ in range(50):
        serial = generate_serial()
        for position in range(SERIAL_LENGTH):
            for digit in string.digits:
                if digit == serial[position]:
                    continue
                typo = serial[:position] + digit + serial[position + 1 :]
                with pytest.raises(GiftcardError) as caught:
                    normalize_serial(typo)
                assert caught.value.code is ErrorCode.VALIDATION_ERROR
                assert caught.value.param == "serial"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "48210937556",
        "4821093755680",
        "48210937556X",
        "4821O9375568",
        "\u0664" + "82109375568",
        "１２３４５６７８９０１２",
        "4" * 65,
    ],
)
def test_malformed_serials_are_validation_errors(raw: str) -> None:
    """Wrong lengths, letters and non-ASCII digits are refused with param 'serial'."""
    with pytest.raises(GiftcardError) as caught:
        normalize_serial(raw)
    assert caught.value.code is ErrorCode.VALIDATION_ERROR
    assert caught.value.param == "serial"


# --- properties -------------------------------------------------------------------------


@given(st.text(alphabet=ALPHABET, min_size=CODE_LENGTH - 1, max_size=CODE_LENGTH - 1))
def test_format_check_round_trips_for_any_valid_code(prefix: str) -> None:
    """Every valid code, and a freshly generated one, survives format_code then check_code."""
    for code in (_complete(prefix), generate_code()):
        assert check_code(format_code(code)) == code
        assert normalize_code(format_code(code).lower()) == code


@given(st.text(alphabet=ALPHABET, min_size=CODE_LENGTH, max_size=CODE_LENGTH))
def test_random_sixteen_symbol_strings_are_valid_or_mistyped(raw: str) -> None:
    """A string of 16 alphabet symbols is never malformed: it is accepted exactly when the
    reference check holds, and otherwise it is mistyped."""
    outcome = _error_code(raw)
    if _reference_syndrome(raw) == 0:
        assert outcome is None
    else:
        assert outcome is ErrorCode.CODE_MISTYPED


@given(st.text(max_size=80))
def test_any_text_is_accepted_or_refused_with_a_code_error(raw: str) -> None:
    """Arbitrary text never crashes check_code: it returns a code or raises one of the two
    code errors."""
    outcome = _error_code(raw)
    assert outcome in {None, ErrorCode.CODE_MALFORMED, ErrorCode.CODE_MISTYPED}
    if outcome is None:
        code = check_code(raw)
        assert len(code) == CODE_LENGTH
        assert _reference_syndrome(code) == 0


def test_random_strings_are_accepted_about_one_time_in_32() -> None:
    """Of 32,000 seeded random 16-symbol strings about 1,000 pass, as the 1/32 analysis says."""
    rng = random.Random(7)
    accepted = sum(
        _error_code("".join(rng.choice(ALPHABET) for _ in range(CODE_LENGTH))) is None
        for _ in range(32_000)
    )
    assert 850 < accepted < 1150  # Binomial(32000, 1/32): mean 1000, sd ~31.


def test_module_exports_what_it_documents() -> None:
    """__all__ names only attributes that exist, so `from giftcard.codes import *` works."""
    for name in codes.__all__:
        assert hasattr(codes, name)
