"""`GET /problems/{code}`, where every problem's `type` points, says what README.md's
table of error codes says: the code's status, when it happens and what to do."""

from __future__ import annotations

import httpx

from giftcard.errors import ErrorCode
from tests.conftest import assert_problem
from tests.unit.test_problems import ROWS


async def test_each_problem_type_says_what_the_readme_says(client: httpx.AsyncClient) -> None:
    for code in ErrorCode:
        status, when, what_to_do = ROWS[code.value]

        response = await client.get(f"/problems/{code.value}")

        assert response.status_code == 200, response.text
        assert response.json() == {
            "code": code.value,
            "title": code.problem_title,
            "status": status,
            "when": when,
            "what_to_do": what_to_do,
        }


async def test_an_unknown_problem_type_is_not_found(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/problems/no_such_code"), 404, "not_found")
