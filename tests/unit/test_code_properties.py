"""Properties of code checking over any valid code (SPEC §3): `test_codes.py` tries every
typo of a few hundred codes; here hypothesis picks the code among all 32^15 valid ones,
the typo, and how the shopper typed it.

A valid code is built from any 15 symbols and the one check symbol that completes them
(found with the reference check of `test_codes.py`, independent of the module's tables).
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from giftcard.codes import ALPHABET, CODE_LENGTH, check_code, format_code
from giftcard.errors import ErrorCode
from tests.unit.test_codes import _complete, _error_code

prefixes = st.text(alphabet=ALPHABET, min_size=CODE_LENGTH - 1, max_size=CODE_LENGTH - 1)
valid_codes = prefixes.map(_complete)
# How a shopper may type a code: in groups or not, in any case, with spaces or dashes.
spellings = st.sampled_from(
    [
        lambda code: code,
        format_code,
        lambda code: format_code(code).lower(),
        lambda code: format_code(code).replace("-", " "),
        lambda code: " ".join(code),
    ]
)


@given(valid_codes, st.integers(0, CODE_LENGTH - 1), st.integers(1, len(ALPHABET) - 1), spellings)
def test_any_single_substitution_of_any_valid_code_is_mistyped(
    code: str, position: int, shift: int, spell: Callable[[str], str]
) -> None:
    """Replacing any one symbol of any valid code by any other symbol, however the code
    is typed, is told as mistyped: never accepted, never taken for an unknown code."""
    other = ALPHABET[(ALPHABET.index(code[position]) + shift) % len(ALPHABET)]
    typo = code[:position] + other + code[position + 1 :]

    assert check_code(spell(code)) == code
    assert _error_code(spell(typo)) is ErrorCode.CODE_MISTYPED, (code, typo)


@given(valid_codes, st.integers(0, CODE_LENGTH - 2), spellings)
def test_any_adjacent_swap_of_any_valid_code_is_mistyped(
    code: str, position: int, spell: Callable[[str], str]
) -> None:
    """Swapping two different neighbouring symbols of any valid code, however it is
    typed, is told as mistyped (swapping equal ones changes nothing and is the code)."""
    swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]

    if swapped == code:
        assert check_code(spell(swapped)) == code
    else:
        assert _error_code(spell(swapped)) is ErrorCode.CODE_MISTYPED, (code, swapped)


@given(valid_codes, st.integers(0, CODE_LENGTH - 1))
def test_look_alike_letters_read_as_the_digits_they_resemble(code: str, position: int) -> None:
    """Typing O for 0 and I or L for 1 is not a typo: the code is the same code."""
    look_alikes = {"0": "oO", "1": "iIlL"}
    for letter in look_alikes.get(code[position], ""):
        typed = code[:position] + letter + code[position + 1 :]
        assert check_code(typed) == code
