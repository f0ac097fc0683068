"""No secret is left behind where an operator, a backup or a monitoring system can read it.

A real server (SQLite, PostgreSQL; two workers; log level DEBUG; emails written to a
folder) goes through what its users do: API keys and staff made with the CLI, cards
issued by the CLI and the API, shoppers signing up and logging in through the API and
the pages, redemptions through both, a password reset by its emailed link, e-gifts sent,
redeemed by their emailed link, staff logging in through the API and the
console and looking codes up, a log-out. Then every secret the run handled (full codes,
passwords, session tokens, reset links and their tokens, API keys) is searched for, in
every spelling a leak could take, in:

- the database: the SQLite file's own bytes (with its WAL) or `pg_dump`'s output;
- the server's whole log, and separately the paths its access log recorded;
- the headers of every email written (a gift's code belongs in its body, a reset link in
  the reset email's body, and both are checked to be there, so that the search works);
- `/metrics`, read at the end of the run.

tests/e2e/test_no_code_leaks.py covers codes typed in every shape (mistyped, lower case,
through the redeem link) and the idempotency table; test_password_reset_leaks.py the
reset token in both doors; this test covers every kind of secret together.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import email
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import httpx
import pytest

from giftcard.config import sqlite_path
from giftcard.web.security import SESSION_COOKIE, STAFF_COOKIE
from tests.e2e.server import Server, base_env, create_api_key, run_cli, running_server
from tests.e2e.test_no_code_leaks import csrf_of, dump_database, spellings

pytestmark = pytest.mark.e2e

REQUEST_TIMEOUT_S = 30
MAIL_TIMEOUT_S = 60
MAIL_POLL_S = 0.2
# Stored as a shopper's name, where it belongs: the database search must find it.
CANARY = f"canary-{uuid.uuid4().hex}"
LINK = re.compile(r"https?://[^\s\"'<>]+")


def password() -> str:
    """A password no other test uses, with spaces, so that its URL-encoded forms differ."""
    return f"sweep {uuid.uuid4().hex[:16]} passphrase"


@dataclass
class Secrets:
    """Every secret the run handled, by kind."""

    by_kind: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, *values: str) -> None:
        for value in values:
            assert value, f"an empty {kind}"
            self.by_kind.setdefault(kind, set()).add(value)

    def forms(self) -> dict[str, tuple[str, str]]:
        """Each lower-cased spelling a secret could take → (kind, secret)."""
        found: dict[str, tuple[str, str]] = {}
        for kind, values in self.by_kind.items():
            for value in values:
                shapes = spellings(value) if kind == "code" else {value}
                shapes |= {quote(value, safe=""), quote_plus(value), value.encode().hex()}
                shapes |= {base64.b64encode(value.encode()).decode().rstrip("=")}
                shapes |= {base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")}
                for shape in shapes:
                    found[shape.lower()] = (kind, value)
        return found

    def leaks(self, haystack: str | bytes) -> list[str]:
        """`kind: secret` for each secret found in `haystack`, compared case-insensitively."""
        if isinstance(haystack, bytes):
            haystack = haystack.decode("latin-1")
        lowered = haystack.lower()
        return sorted(
            {f"{kind}: {value}" for form, (kind, value) in self.forms().items() if form in lowered}
        )


def emails(folder: Path) -> list[EmailMessage]:
    messages = []
    for path in sorted(folder.glob("*.eml")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def raw_headers(folder: Path) -> list[str]:
    """Each email's header block as written, folded lines and encoded words included."""
    return [
        re.split(rb"\r?\n\r?\n", path.read_bytes(), maxsplit=1)[0].decode("latin-1")
        for path in sorted(folder.glob("*.eml"))
    ]


def body_text(message: EmailMessage) -> str:
    parts = [part.get_content() for part in message.walk() if part.get_content_maintype() == "text"]
    return "\n".join(str(part) for part in parts)


async def wait_for_email(
    folder: Path, to: str, subject_word: str, count: int = 1
) -> list[EmailMessage]:
    """The emails to `to` whose subject holds `subject_word`, once `count` of them exist."""
    deadline = time.monotonic() + MAIL_TIMEOUT_S
    while True:
        found = [
            message
            for message in emails(folder)
            if to in str(message["To"]) and subject_word.lower() in str(message["Subject"]).lower()
        ]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"no email to {to} about {subject_word!r} in time"
        await asyncio.sleep(MAIL_POLL_S)


def link_in(message: EmailMessage, path: str) -> str:
    links: list[str] = [
        link for link in LINK.findall(body_text(message)) if urlsplit(link).path.endswith(path)
    ]
    assert links, f"no {path} link in the email:\n{body_text(message)}"
    return links[0]


def database_bytes(database_url: str, out: Path) -> bytes:
    """The SQLite file and its WAL as stored, or PostgreSQL's dump."""
    path = sqlite_path(database_url)
    if path is None:
        return dump_database(database_url, out).encode()
    stored = b""
    for suffix in ("", "-wal", "-journal"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            stored += part.read_bytes()
    return stored + dump_database(database_url, out).encode()


def access_log_paths(log: str) -> list[str]:
    paths = []
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == "request":
                paths.append(str(entry["path"]))
    return paths


def browser(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S)


async def page_post(
    http: httpx.AsyncClient, form_path: str, path: str, data: dict[str, str]
) -> httpx.Response:
    """Fill in the form on `form_path` and post it to `path`, as a browser would."""
    form = await http.get(form_path)
    assert form.status_code == 200, form.text
    return await http.post(path, data={"csrf_token": csrf_of(form.text), **data})


async def run_everything(
    server: Server, env: dict[str, str], mail: Path, tmp_path: Path, found: Secrets
) -> str:
    """What users do, recording each secret; returns /metrics as read at the end."""
    keys = {role: create_api_key(env, role) for role in ("admin", "merchant", "support")}
    found.add(
        "api key", *(header["Authorization"].removeprefix("Bearer ") for header in keys.values())
    )
    staff = {role: (f"{role}-staff@store.example", password()) for role in ("support", "admin")}
    for role, (address, secret) in staff.items():
        made = run_cli(
            env, "staff", "create", "--email", address, "--role", role, stdin=secret + "\n"
        )
        assert made.returncode == 0, made.stdout + made.stderr
        found.add("password", secret)

    csv_path = tmp_path / "cards.csv"
    issued = run_cli(
        env,
        "cards",
        "issue",
        "--count",
        "2",
        "--amount",
        "25.00",
        "--region",
        "US",
        "--out",
        str(csv_path),
    )
    assert issued.returncode == 0, issued.stdout + issued.stderr
    with csv_path.open(newline="") as handle:
        cli_codes = [row["code"] for row in csv.DictReader(handle)]
    found.add("code", *cli_codes)

    async with browser(server) as api:
        cards = await api.post(
            "/v1/cards",
            json={"amount": 1500, "region": "US", "kind": "digital", "count": 3},
            headers={**keys["merchant"], "Idempotency-Key": "sweep-cards"},
        )
        assert cards.status_code == 201, cards.text
        api_codes = [card["code"] for card in cards.json()["data"]]
        found.add("code", *api_codes)

        # A shopper through the API: sign up, log in, redeem, ask for a reset link.
        ada = ("ada-sweep@example.com", password())
        found.add("password", ada[1])
        created = await api.post(
            "/v1/customers",
            json={"email": ada[0], "password": ada[1], "region": "US", "name": CANARY},
        )
        assert created.status_code == 201, created.text
        ada_id = created.json()["id"]
        session = await api.post("/v1/sessions", json={"email": ada[0], "password": ada[1]})
        assert session.status_code == 201, session.text
        ada_token = session.json()["token"]
        found.add("session token", ada_token)
        ada_auth = {"Authorization": f"Bearer {ada_token}"}
        redeemed = await api.post(
            "/v1/me/redemptions", json={"code": api_codes[0]}, headers=ada_auth
        )
        assert redeemed.status_code == 201, redeemed.text
        reset = await api.post("/v1/password-resets", json={"email": ada[0]})
        assert reset.status_code == 202, reset.text

        # An e-gift bought for Ada's friend.
        gift = await api.post(
            "/v1/gifts",
            json={
                "amount": 2000,
                "region": "US",
                "recipient_email": "bea-sweep@example.com",
                "recipient_name": "Bea",
                "sender_name": "Ada",
                "message": "Happy birthday",
                "purchaser_customer_id": ada_id,
            },
            headers={**keys["merchant"], "Idempotency-Key": "sweep-gift"},
        )
        assert gift.status_code == 201, gift.text
        gift_id = gift.json()["id"]

    # Ada follows the reset link in a browser and chooses a new password.
    (reset_email,) = await wait_for_email(mail, ada[0], "choose a new password")
    reset_link = link_in(reset_email, "/password-reset")
    found.add("reset link", reset_link)
    found.add("reset token", parse_qs(urlsplit(reset_link).query)["token"][0])
    new_password = password()
    found.add("password", new_password)
    async with browser(server) as page:
        landed = await page.get(urlsplit(reset_link).path + "?" + urlsplit(reset_link).query)
        assert landed.status_code in (302, 303), landed.text
        changed = await page_post(
            page,
            "/password-reset",
            "/password-reset",
            {"password": new_password, "confirm_password": new_password},
        )
        assert changed.status_code == 303, changed.text

    async with browser(server) as api:
        session = await api.post("/v1/sessions", json={"email": ada[0], "password": new_password})
        assert session.status_code == 201, session.text
        ada_token = session.json()["token"]
        found.add("session token", ada_token)
        ada_auth = {"Authorization": f"Bearer {ada_token}"}
        bought = await api.get("/v1/me/gifts", headers=ada_auth)
        assert bought.status_code == 200, bought.text

    gift_emails = await wait_for_email(mail, "bea-sweep@example.com", "sent you a")
    redeem_link = link_in(gift_emails[0], "/redeem")
    gift_code = parse_qs(urlsplit(redeem_link).query)["code"][0]
    found.add("code", gift_code)

    # Bea signs up in the pages, logs out and in again, and redeems the gift by its link
    # and a printed card through the form.
    bea = ("bea-sweep@example.com", password())
    found.add("password", bea[1])
    async with browser(server) as page:
        signed_up = await page_post(
            page, "/signup", "/signup", {"email": bea[0], "password": bea[1], "region": "US"}
        )
        assert signed_up.status_code == 303, signed_up.text
        found.add("session token", page.cookies[SESSION_COOKIE])
        await page_post(page, "/account/gift-cards", "/logout", {})
        logged_in = await page_post(page, "/login", "/login", {"email": bea[0], "password": bea[1]})
        assert logged_in.status_code == 303, logged_in.text
        found.add("session token", page.cookies[SESSION_COOKIE])
        by_link = await page.get(urlsplit(redeem_link).path + "?" + urlsplit(redeem_link).query)
        assert by_link.status_code in (200, 302, 303), by_link.text
        for code in (gift_code, cli_codes[0]):
            done = await page_post(
                page, "/account/gift-cards", "/account/gift-cards/redeem", {"code": code}
            )
            assert done.status_code in (200, 303), done.text

    # Staff: support through the API, admin through the console; the support key too.
    async with browser(server) as api:
        address, secret = staff["support"]
        session = await api.post("/v1/sessions", json={"email": address, "password": secret})
        assert session.status_code == 201, session.text
        staff_token = session.json()["token"]
        found.add("session token", staff_token)
        staff_auth = {"Authorization": f"Bearer {staff_token}"}
        for code in (api_codes[0], api_codes[1], gift_code):
            looked_up = await api.post(
                "/v1/support/lookups", json={"code": code}, headers=staff_auth
            )
            assert looked_up.status_code == 200, looked_up.text
        by_key = await api.post(
            "/v1/support/lookups", json={"code": cli_codes[1]}, headers=keys["support"]
        )
        assert by_key.status_code == 200, by_key.text
        gift_seen = await api.get(f"/v1/gifts/{gift_id}", headers=staff_auth)
        assert gift_seen.status_code == 200, gift_seen.text
        logged_out = await api.delete("/v1/sessions/current", headers=staff_auth)
        assert logged_out.status_code == 204, logged_out.text
    async with browser(server) as console:
        address, secret = staff["admin"]
        entered = await page_post(
            console, "/support/login", "/support/login", {"email": address, "password": secret}
        )
        assert entered.status_code == 303, entered.text
        found.add("session token", console.cookies[STAFF_COOKIE])
        looked_up = await page_post(console, "/support", "/support/lookup", {"query": api_codes[2]})
        assert looked_up.status_code == 303, looked_up.text
        metrics = await console.get("/metrics")
        assert metrics.status_code == 200, metrics.text
    return metrics.text


async def test_no_secret_in_the_database_logs_urls_email_headers_or_metrics(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given a run through every door that handles a secret, no full code, password,
    session token, reset link or token, or API key appears in the database, the server's
    log, the paths it logged, an email's headers or /metrics, while the gift's code and
    the reset link are where they belong: in their emails' bodies."""
    mail = tmp_path / "mail"
    env = base_env(server_database_url, GIFTCARD_LOG_LEVEL="DEBUG", GIFTCARD_MAIL_DIR=str(mail))
    log_path = tmp_path / "server.log"
    found = Secrets()
    with running_server(env, log_path, workers=2) as server:
        metrics = await run_everything(server, env, mail, tmp_path, found)

    assert set(found.by_kind) == {
        "api key",
        "password",
        "code",
        "session token",
        "reset link",
        "reset token",
    }
    log = log_path.read_text(errors="replace")
    paths = access_log_paths(log)
    # The links that carry a secret in their query string reached the server.
    assert {"/password-reset", "/redeem"} <= {path.split("?")[0] for path in paths}, paths
    assert "giftcard_http_request_duration_seconds" in metrics

    # Where the secrets belong, the search finds them: it is not blind.
    messages = emails(mail)
    bodies = "\n".join(body_text(message) for message in messages)
    assert {"code", "reset link", "reset token"} <= {
        line.split(":")[0] for line in found.leaks(bodies)
    }

    assert not found.leaks(log), "secrets in the server's log"
    assert not found.leaks("\n".join(paths)), "secrets in the paths the server logged"
    assert not found.leaks(metrics), "secrets in /metrics"
    for message, headers in zip(messages, raw_headers(mail), strict=True):
        decoded = "\n".join(f"{name}: {value}" for name, value in message.items())
        assert not found.leaks(headers + "\n" + decoded), (
            f"secrets in the headers of {message['Subject']}"
        )
    stored = database_bytes(server_database_url, tmp_path / "dump.sql")
    assert CANARY.encode() in stored, "the database search does not see what is stored"
    assert not found.leaks(stored), "secrets in the database"
