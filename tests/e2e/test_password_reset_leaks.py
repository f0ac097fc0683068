"""A password reset link's token is kept out of everything the server writes down: a
real server (SQLite, PostgreSQL) sends a link, the link is followed and used through the
pages, and then the server's whole log and a dump of the whole database are searched for
the token, as text and as hex."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import httpx
import pytest

from giftcard.account_mail import reset_token
from giftcard.config import sqlite_path
from tests.conftest import TEST_SECRET_KEY
from tests.e2e.server import base_env, running_server, sign_up_shopper
from tests.e2e.test_no_code_leaks import csrf_of, dump_database

pytestmark = pytest.mark.e2e

REQUEST_TIMEOUT_S = 30
NEW_PASSWORD = "a brand new passphrase"


async def reset_seeds(database_url: str) -> list[bytes]:
    query = "SELECT token_seed FROM password_resets ORDER BY id"
    path = sqlite_path(database_url)
    if path is not None:
        connection = sqlite3.connect(path)
        try:
            return [bytes(row[0]) for row in connection.execute(query).fetchall()]
        finally:
            connection.close()
    pg = await asyncpg.connect(database_url, timeout=10)
    try:
        return [bytes(row[0]) for row in await pg.fetch(query)]
    finally:
        await pg.close()


def spellings(token: str) -> set[str]:
    return {token, token.lower(), token.encode().hex()}


async def test_no_reset_token_in_the_server_log_or_the_database(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given a link asked for through the API and one through the page, each followed
    in a browser-like client and one used to set a new password, neither token appears
    in the server's log (at DEBUG) or the database dump, while the new password works."""
    env = base_env(server_database_url, GIFTCARD_LOG_LEVEL="DEBUG")
    log_path = tmp_path / "server.log"
    with running_server(env, log_path, workers=1) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as http:
            email = "reset-leaks@example.com"
            await sign_up_shopper(http, email)
            asked = await http.post("/v1/password-resets", json={"email": email})
            assert asked.status_code == 202, asked.text
            form = await http.get("/forgot-password")
            sent = await http.post(
                "/forgot-password", data={"csrf_token": csrf_of(form.text), "email": email}
            )
            assert sent.status_code == 303, sent.text
        tokens = [
            reset_token(TEST_SECRET_KEY, seed) for seed in await reset_seeds(server_database_url)
        ]
        assert len(tokens) == 2

        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=REQUEST_TIMEOUT_S
        ) as browser:
            stale = await browser.get("/password-reset", params={"token": tokens[0]})
            assert stale.headers["location"] == "/password-reset"
            assert (await browser.get("/password-reset")).status_code == 410
            landed = await browser.get("/password-reset", params={"token": tokens[1]})
            assert landed.headers["location"] == "/password-reset"
            form = await browser.get("/password-reset")
            assert form.status_code == 200, form.text
            changed = await browser.post(
                "/password-reset",
                data={
                    "csrf_token": csrf_of(form.text),
                    "password": NEW_PASSWORD,
                    "confirm_password": NEW_PASSWORD,
                },
            )
            assert changed.status_code == 303, changed.text
            session = await browser.post(
                "/v1/sessions", json={"email": email, "password": NEW_PASSWORD}
            )
            assert session.status_code == 201, session.text

    log = log_path.read_text(errors="replace")
    assert '"path": "/password-reset"' in log, "the server's request log was not captured"
    dump = dump_database(server_database_url, tmp_path / "dump.sql")
    assert "password_resets" in dump
    for token in tokens:
        for form in spellings(token):
            assert form not in log, "a reset token in the server log"
            assert form not in dump, "a reset token in the database dump"
