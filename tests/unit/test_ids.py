"""Public ids: enciphered keys that read back exactly, tell no counts and name nothing when
guessed, tampered with or taken from another installation."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giftcard import ids
from giftcard.errors import ErrorCode, GiftcardError
from tests.conftest import TEST_SECRET_KEY

ENCIPHERED = sorted(ids.ENCIPHERED)
SHAPE = re.compile(r"[a-z]{2,4}_[0-9a-hjkmnp-tv-z]{13}")


@pytest.fixture(autouse=True)
def test_key() -> Iterator[None]:
    ids.use_secret(TEST_SECRET_KEY)
    yield
    ids.use_secret(TEST_SECRET_KEY)


@given(prefix=st.sampled_from(ENCIPHERED), number=st.integers(0, ids.KEY_MAX))
def test_an_id_reads_back_as_its_key(prefix: str, number: int) -> None:
    public = ids.format_id(prefix, number)
    assert SHAPE.fullmatch(public)
    assert public.startswith(prefix + "_")
    assert ids.parse_id(prefix, public) == number
    assert ids.parse_cursor(prefix, public) == number
    assert ids.parse_id(prefix, public.upper().replace(prefix.upper(), prefix, 1)) == number


@pytest.mark.parametrize(
    ("prefix", "number", "public"),
    [
        ("cus", 1, "cus_dsz9yn5r9vqtf"),
        ("txn", ids.KEY_MAX, "txn_4z94anh476b3h"),
        ("pay", 123456789, "pay_678hb2v9vvw66"),
        ("card", 0, "card_d5trfncgx1317"),
    ],
)
def test_an_installation_s_ids_never_change(prefix: str, number: int, public: str) -> None:
    """Known answers under a fixed key: the ids already given out (in receipts, in
    stores' databases) must name the same rows after any change to how they are made."""
    ids.use_secret(b"a fixed secret key for known answers, 36+ bytes long")
    assert ids.format_id(prefix, number) == public
    assert ids.parse_id(prefix, public) == number


def test_ids_of_rows_made_one_after_another_tell_no_order_or_count() -> None:
    """Keys 1..2000 give ids spread over the whole space, in no order: neither the
    sorting of two ids nor their size says which row came first or how many there are."""
    keys = range(1, 2001)
    public = [ids.format_id(ids.CUSTOMER, key) for key in keys]
    assert len(set(public)) == len(public)
    in_order = sum(a < b for a, b in itertools.pairwise(public))
    assert 900 < in_order < 1100, f"{in_order} of 1999 neighbours sort in key order"
    first_symbols = {body[0] for body in (p.removeprefix("cus_") for p in public)}
    assert len(first_symbols) == 16  # the top bits take every value, small keys or not
    assert not any(str(key) in p for key, p in zip(keys, public, strict=True) if key > 99)


def test_each_kind_of_row_has_ids_of_its_own() -> None:
    same_key = {ids.format_id(prefix, 7).partition("_")[2] for prefix in ENCIPHERED}
    assert len(same_key) == len(ENCIPHERED)
    payment = ids.format_id(ids.PAYMENT, 7)
    with pytest.raises(GiftcardError) as refused:
        ids.parse_id(ids.CUSTOMER, "cus_" + payment.partition("_")[2])
    assert refused.value.code == ErrorCode.NOT_FOUND


def test_another_installation_reads_different_ids() -> None:
    ours = ids.format_id(ids.CARD, 12)
    ids.use_secret(b"another installation's secret key 0123456789")
    theirs = ids.format_id(ids.CARD, 12)
    assert theirs != ours
    assert ids.read(ids.CARD, ours) != 12


def test_a_changed_symbol_names_nothing() -> None:
    """Every one-symbol change of an id deciphers to a block whose check bits are not
    zero (a guess passes once in 65,536), so it names no row."""
    public = ids.format_id(ids.PAYMENT, 41)
    body = public.removeprefix("pay_")
    accepted = []
    for index, symbol in enumerate(body):
        for other in ids.ALPHABET.replace(symbol, ""):
            changed = "pay_" + body[:index] + other + body[index + 1 :]
            if ids.read(ids.PAYMENT, changed) is not None:
                accepted.append(changed)
    assert accepted == []


@pytest.mark.parametrize(
    "text",
    ["pay_1", "pay_", "pay", "", "pay_0123456789abc_", "pay_0123456789abcd", "pay_il0u5678901ab",
     "cus_" + "0" * 13, "pay_zzzzzzzzzzzzz", "pay_" + "é" * 13, "pay_٠١٢٣٤٥٦٧٨٩٠١٢"],
)  # fmt: skip
def test_anything_else_is_not_found_or_an_invalid_cursor(text: str) -> None:
    with pytest.raises(GiftcardError) as not_found:
        ids.parse_id(ids.PAYMENT, text, param="payment_id")
    assert not_found.value.code == ErrorCode.NOT_FOUND
    assert not_found.value.param == "payment_id"
    with pytest.raises(GiftcardError) as bad_cursor:
        ids.parse_cursor(ids.PAYMENT, text)
    assert bad_cursor.value.code == ErrorCode.VALIDATION_ERROR
    assert bad_cursor.value.param == "starting_after"


def test_audit_entries_keep_their_numbers() -> None:
    assert ids.format_id(ids.AUDIT_ENTRY, 42) == "aud_42"
    assert ids.parse_cursor(ids.AUDIT_ENTRY, "aud_42") == 42


def test_stored_texts_from_before_ids_were_enciphered_still_read() -> None:
    """Audit entries recorded with `card_12` are found by the card's id of today, and
    the other way round; nothing else gains a second spelling."""
    today = ids.format_id(ids.CARD, 12)
    assert set(ids.spellings(today)) == {today, "card_12"}
    assert set(ids.spellings("card_12")) == {today, "card_12"}
    assert ids.read(ids.CARD, "card_12") == 12
    assert ids.spellings("lookup words") == ("lookup words",)
    assert ids.spellings("aud_3") == ("aud_3",)
    with pytest.raises(GiftcardError):
        ids.parse_id(ids.CARD, "card_12")


def test_without_the_secret_key_no_id_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "_secret", None)
    with pytest.raises(RuntimeError, match="secret key"):
        ids.format_id(ids.CUSTOMER, 1)
