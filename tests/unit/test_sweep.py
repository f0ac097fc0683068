"""The suite's secret sweep (tests/sweep.py) finds each shape of secret, and only those."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from giftcard.codes import format_code, generate_code
from giftcard.demo.seed import DATA_HEADING
from tests import sweep


def test_it_finds_a_code_in_every_spelling_a_log_or_database_would_hold() -> None:
    code = generate_code()
    for text in (
        f"path=/v1/cards/{code}",
        f'"{format_code(code)}"',
        f"lower {format_code(code).lower()} case",
    ):
        assert [kind for kind, _ in sweep.secrets_in(text)] == ["gift card code"], text


def test_it_finds_tokens_keys_reset_links_and_passwords() -> None:
    token = "gcs_" + "a1B2-_" * 7 + "z"
    key = "gck_" + "Q" * 43
    text = (
        f"Authorization: Bearer {token}; key={key}; "
        f"/password-reset?token={'x' * 43} password=correct+horse+battery"
    )
    assert sorted(kind for kind, _ in sweep.secrets_in(text)) == [
        "API key",
        "password",
        "password reset token",
        "session token",
    ]


def test_it_leaves_what_only_looks_like_a_secret() -> None:
    code = generate_code()
    mistyped = code[:-1] + ("0" if code[-1] != "0" else "1")
    text = (
        f"{mistyped} req_{'ab' * 12} cus_7K4Q2MXR9TBVE gck_Qx3aB9 {code}EXTRA "
        f"{'0f' * 16} last4 {code[-4:]} GC-7K4Q-2M"
    )
    assert list(sweep.secrets_in(text)) == []


def test_excerpts_never_hold_the_secret(tmp_path: Path) -> None:
    code = generate_code()
    (tmp_path / "server.log").write_text(f'{{"message": "request", "path": "/x/{code}"}}\n')
    (tmp_path / "a.eml").write_text(f"Subject: {code}\n\nbody\n")
    (tmp_path / "b.eml").write_text(f"Subject: hello\n\nthe code {code} belongs here\n")
    findings = sweep._search_files(tmp_path)
    for path in tmp_path.iterdir():
        path.unlink()  # the suite's own sweep must not find these planted ones
    assert sorted(f.where for f in findings) == ["headers of a.eml", "server.log"]
    assert all(code not in f.excerpt and f.excerpt.startswith(code[:4]) for f in findings)


def test_every_log_record_is_searched_with_its_extra_fields() -> None:
    search = sweep._LogSearch()
    logger = logging.getLogger("giftcard.test-sweep")
    logger.addHandler(search)
    logger.propagate = False  # the suite's own sweep must not find this planted one
    try:
        logger.warning("request", extra={"path": "/v1/me/" + format_code(generate_code())})
    finally:
        logger.removeHandler(search)
        logger.propagate = True
    assert [f.kind for f in search.findings] == ["gift card code"]


def test_a_database_is_searched_value_by_value(tmp_path: Path) -> None:
    """A code in a column is found; a serial beside a code's last four symbols, which
    run together in the file's bytes, is not a code."""
    code = generate_code()
    leaking = tmp_path / "leaking.db"
    clean = tmp_path / "clean.db"
    for path, note in ((leaking, f"customer typed {code}"), (clean, "nothing")):
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE cards (serial TEXT, last4 TEXT, note TEXT)")
            connection.execute(
                "INSERT INTO cards VALUES (?, ?, ?)", ("923890668562", code[-4:], note)
            )
        connection.close()
    try:
        found = sweep._search_database(leaking, tmp_path)
        assert [(f.where, f.kind) for f in found] == [("leaking.db, table cards", "gift card code")]
        assert sweep._search_database(clean, tmp_path) == []
    finally:
        leaking.unlink()
        clean.unlink()


def test_the_demo_welcome_is_left_out_of_a_transcript_and_nothing_else() -> None:
    code = format_code(generate_code())
    later = format_code(generate_code())
    transcript = [
        "INFO starting",
        DATA_HEADING,
        f"  code      {code}  $25.00",
        "Serving on http://127.0.0.1:8000/",
        f"INFO request path=/v1/{later}",
    ]
    searched = sweep._without_welcome(transcript)
    assert code not in searched
    assert later in searched
