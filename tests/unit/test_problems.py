"""Each problem type says what README.md's table of error codes says: when it happens and
what to do, and the table has a row for every code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from giftcard.errors import ErrorCode

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
_HEADER = "| code | HTTP | when | what to do |"


def _readme_rows() -> dict[str, tuple[int, str, str]]:
    """The table's rows by code: status, when, what to do, without the backticks."""
    table = README.split(_HEADER, 1)[1].split("\n\n", 1)[0]
    rows: dict[str, tuple[int, str, str]] = {}
    for line in table.strip().splitlines()[1:]:
        cells = [cell.strip().replace("`", "") for cell in line.strip().strip("|").split(" | ")]
        code, status, when, what_to_do = cells
        rows[code] = (int(status), when, what_to_do)
    return rows


ROWS = _readme_rows()


def test_the_readme_table_has_a_row_for_every_code() -> None:
    assert _HEADER in README
    assert sorted(ROWS) == sorted(code.value for code in ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=[code.value for code in ErrorCode])
def test_each_problem_type_says_what_the_readme_says(code: ErrorCode) -> None:
    status, when, what_to_do = ROWS[code.value]

    assert (code.status, code.problem_when, code.problem_what_to_do) == (
        status,
        when,
        what_to_do,
    )
    assert re.fullmatch(r"[^|\n`]+", code.problem_when + code.problem_what_to_do)
