"""The service never stores or logs a full code after issuing it (SPEC §3).

A real server (SQLite, PostgreSQL) issues codes through the CLI and the API, redeems some,
refuses others (mistyped, other store, already redeemed), follows a gift email's redeem
link through signing up in the web pages, and
then the whole database dump and the server's whole log are searched for every code in
every spelling a leak could take: normalized, with dashes, lower case, and as hex bytes.
"""

from __future__ import annotations

import csv
import re
import sqlite3
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest

from giftcard.codes import ALPHABET, format_code, normalize_code
from giftcard.config import sqlite_path
from tests.e2e.server import CLI_TIMEOUT_S, base_env, create_api_key, run_cli, running_server

pytestmark = pytest.mark.e2e

REQUEST_TIMEOUT_S = 30


def spellings(code: str) -> set[str]:
    """Every form in which `code` could end up in a dump or a log."""
    normalized = normalize_code(code)
    forms = {normalized, format_code(normalized)}
    forms |= {form.lower() for form in forms}
    forms |= {form.encode().hex() for form in list(forms)}
    return forms


def mistyped(code: str, position: int) -> str:
    normalized = normalize_code(code)
    replacement = ALPHABET[(ALPHABET.index(normalized[position]) + 7) % len(ALPHABET)]
    return normalized[:position] + replacement + normalized[position + 1 :]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def leaks(text: str, codes: list[str]) -> list[str]:
    haystack = text.lower()
    return sorted({code for code in codes for form in spellings(code) if form.lower() in haystack})


def dump_database(database_url: str, out: Path) -> str:
    path = sqlite_path(database_url)
    if path is not None:
        connection = sqlite3.connect(path)
        try:
            return "\n".join(connection.iterdump())
        finally:
            connection.close()
    result = subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", "--file", str(out), database_url],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out.read_text()


async def idempotency_rows(database_url: str) -> list[tuple[object, ...]]:
    query = "SELECT * FROM idempotency_keys"
    path = sqlite_path(database_url)
    if path is not None:
        connection = sqlite3.connect(path)
        try:
            return list(connection.execute(query).fetchall())
        finally:
            connection.close()
    pg = await asyncpg.connect(database_url, timeout=10)
    try:
        return [tuple(row.values()) for row in await pg.fetch(query)]
    finally:
        await pg.close()


def as_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return raw.hex() + " " + raw.decode("latin-1")
    return str(value)


async def test_no_code_in_database_dump_or_server_log(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given codes issued by CLI and API and a mix of redemptions and refusals, no code
    (nor a mistyped variant of one) appears in the database dump, the idempotency table
    or the server's log, while the CSV holds the CLI's codes (the search works)."""
    env = base_env(server_database_url, GIFTCARD_LOG_LEVEL="DEBUG")
    csv_path = tmp_path / "cards.csv"
    log_path = tmp_path / "server.log"
    typed: list[str] = []
    with running_server(env, log_path) as server:
        issued = run_cli(
            env, "cards", "issue", "--count", "4", "--amount", "25.00", "--region", "US",
            "--out", str(csv_path),
        )  # fmt: skip
        assert issued.returncode == 0, issued.stdout + issued.stderr
        with csv_path.open(newline="") as handle:
            cli_codes = [row["code"] for row in csv.DictReader(handle)]
        assert len(cli_codes) == 4
        assert not leaks(issued.stdout + issued.stderr, cli_codes)
        admin = create_api_key(env)

        async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as http:

            async def post(path: str, body: object, **headers: str) -> httpx.Response:
                return await http.post(path, json=body, headers={**admin, **headers})

            api_cards = await post(
                "/v1/cards",
                {"amount": 1000, "region": "US", "kind": "digital", "count": 4},
                **{"Idempotency-Key": "issue-batch-1"},
            )
            assert api_cards.status_code == 201, api_cards.text
            replay = await post(
                "/v1/cards",
                {"amount": 1000, "region": "US", "kind": "digital", "count": 4},
                **{"Idempotency-Key": "issue-batch-1"},
            )
            assert replay.status_code == 201, replay.text
            physical = await post(
                "/v1/cards", {"amount": 500, "region": "US", "kind": "physical", "count": 2}
            )
            british = await post("/v1/cards", {"amount": 900, "region": "GB", "kind": "digital"})
            assert physical.status_code == british.status_code == 201
            activated = await post(
                "/v1/cards/activate", {"serial": physical.json()["data"][0]["serial"]}
            )
            assert activated.status_code == 200, activated.text
            api_codes = [card["code"] for card in api_cards.json()["data"]]
            physical_codes = [card["code"] for card in physical.json()["data"]]
            british_code = british.json()["data"][0]["code"]
            account = {"email": "leaks@example.com", "password": "correct horse battery"}
            assert (await http.post("/v1/customers", json={**account, "region": "US"})).is_success
            token = (await http.post("/v1/sessions", json=account)).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}

            async def redeem(code: str, key: str | None = None) -> httpx.Response:
                typed.append(code)
                headers = {**auth, **({"Idempotency-Key": key} if key else {})}
                return await http.post("/v1/me/redemptions", json={"code": code}, headers=headers)

            expected = [
                (cli_codes[0], 201),
                (cli_codes[1].lower().replace("-", " "), 201),
                (api_codes[0], 201),
                (physical_codes[0], 201),
                (cli_codes[0], 409),  # already redeemed
                (physical_codes[1], 409),  # not activated
                (british_code, 409),  # another store
                (mistyped(cli_codes[2], 3), 422),
                (mistyped(api_codes[1], 15), 422),
                (mistyped(api_codes[2], 8).lower(), 422),
            ]
            for number, (code, status) in enumerate(expected):
                response = await redeem(code, key=f"redeem-{number}")
                assert response.status_code == status, (code, response.text)
            with_key = await redeem(api_codes[3], key="redeem-last")
            assert with_key.status_code == 201
            assert (await redeem(api_codes[3], key="redeem-last")).status_code == 201
            # A redeem link from an email carries the code in its query string.
            await http.get("/redeem", params={"code": api_codes[1]})

        # The same link in a browser that is not logged in: log-in page, sign up, the
        # code filled in, redeemed through the page; then a mistyped code on the page.
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=REQUEST_TIMEOUT_S, follow_redirects=True
        ) as browser:
            landed = await browser.get("/redeem", params={"code": cli_codes[3].lower()})
            assert landed.url.path == "/login", landed.url
            assert not leaks(str(landed.url), cli_codes)
            signup_page = await browser.get("/signup")
            account_page = await browser.post(
                "/signup",
                data={
                    "csrf_token": csrf_of(signup_page.text),
                    "email": "link@example.com",
                    "password": "correct horse battery",
                    "region": "US",
                },
            )
            assert account_page.url.path == "/account/gift-cards", account_page.text
            assert format_code(normalize_code(cli_codes[3])).lower() in account_page.text.lower()
            redeemed = await browser.post(
                "/account/gift-cards/redeem",
                data={"csrf_token": csrf_of(account_page.text), "code": cli_codes[3].lower()},
            )
            assert "was added to your balance" in redeemed.text, redeemed.text
            typo = mistyped(api_codes[2], 11)
            typed += [cli_codes[3].lower(), typo]
            refused = await browser.post(
                "/account/gift-cards/redeem",
                data={"csrf_token": csrf_of(redeemed.text), "code": typo},
            )
            assert refused.status_code == 422
            assert "one character looks mistyped" in refused.text

    all_codes = cli_codes + api_codes + physical_codes + [british_code] + typed
    assert leaks(csv_path.read_text(), cli_codes) == sorted(set(cli_codes))

    log = log_path.read_text(errors="replace")
    assert "/v1/me/redemptions" in log, "the server's request log was not captured"
    assert not leaks(log, all_codes), "codes in the server log"

    dump = dump_database(server_database_url, tmp_path / "dump.sql")
    assert "idempotency_keys" in dump
    assert not leaks(dump, all_codes), "codes in the database dump"

    rows = await idempotency_rows(server_database_url)
    # Every keyed request left a row but the three mistyped codes: refused for their
    # shape before any key is claimed, they are refused the same way on a retry.
    assert len(rows) >= len(expected) - 3 + 2
    stored = "\n".join(as_text(value) for row in rows for value in row)
    assert not leaks(stored, all_codes), "codes in idempotency_keys"
