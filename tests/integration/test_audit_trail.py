"""The rest of the audit trail, on SQLite and PostgreSQL: cards issued and activated and
e-gifts bought by API keys and admin staff, and access managed from the command line,
each leave exactly one entry written with the action; a refused action leaves none; no
code, key or password is ever in the log; and `giftcard verify` holds after."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from giftcard import codes, ids
from giftcard.db.tables import audit_log, cards
from giftcard.db.tables import gifts as gifts_table
from giftcard.demo.seed import DEMO_CARD_AMOUNTS, seed_database
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import (
    TEST_SECRET_KEY,
    api_key,
    assert_problem,
    issue,
    staff_member,
)
from tests.e2e.server import base_env, run_cli

PASSWORD = "staff password 123"
NEW_PASSWORD = "another staff password 456"
GIFT = {
    "amount": 2500,
    "region": "US",
    "recipient_email": "ada.lovelace@example.com",
    "recipient_name": "Ada",
    "sender_name": "Alex",
}


async def entries(services: Services, action: str | None = None) -> list[Any]:
    async with services.db.transaction(write=False) as connection:
        query = select(audit_log).order_by(audit_log.c.id)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        return list((await connection.execute(query)).all())


async def log_text(services: Services) -> str:
    """Every value of every entry, as one text to search."""
    return "\n".join(
        " ".join("" if value is None else str(value) for value in row)
        for row in await entries(services)
    )


def detail(row: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(row.detail)
    return value


async def assert_holds(services: Services) -> None:
    report = await verify(services.db)
    assert report.problems == []


def assert_never_in(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        compact = secret.replace("-", "")
        assert compact not in text


# -- issuing and activating cards ---------------------------------------------------------


async def test_issuing_cards_leaves_one_entry_per_request_without_codes(
    client: httpx.AsyncClient, services: Services
) -> None:
    merchant = await api_key(services, "merchant")
    response = await client.post(
        "/v1/cards",
        json={"amount": 2500, "region": "GB", "kind": "digital", "count": 3},
        headers=merchant,
    )
    assert response.status_code == 201, response.text
    issued = response.json()["data"]

    [entry] = await entries(services)
    assert entry.action == "card.issue"
    assert entry.actor.startswith("api_key:")
    assert entry.actor_role == "merchant"
    assert entry.outcome == "ok"
    assert entry.target == issued[0]["id"]
    assert entry.request_id == response.headers["Request-Id"]
    assert detail(entry) == {
        "count": 3,
        "amount": 2500,
        "currency": "GBP",
        "region": "GB",
        "kind": "digital",
        "first_card": issued[0]["id"],
        "last_card": issued[-1]["id"],
    }
    assert_never_in(await log_text(services), *(card["code"] for card in issued))
    await assert_holds(services)


async def test_an_admin_staff_member_issuing_and_activating_is_named_in_the_log(
    client: httpx.AsyncClient, services: Services
) -> None:
    admin = await staff_member(client, services, "admin")
    [physical] = await issue(client, admin.auth, kind="physical")
    activated = await client.post(
        "/v1/cards/activate", json={"serial": physical["serial"]}, headers=admin.auth
    )
    assert activated.status_code == 200, activated.text

    issued, activation = await entries(services)
    staff_number = ids.parse_id(ids.STAFF, admin.id)
    assert (issued.action, issued.actor, issued.actor_role) == (
        "card.issue",
        f"staff:{staff_number}",
        "admin",
    )
    assert detail(issued)["kind"] == "physical"
    assert activation.action == "card.activate"
    assert (activation.actor, activation.actor_role) == (f"staff:{staff_number}", "admin")
    assert activation.target == physical["id"]
    assert activation.request_id == activated.headers["Request-Id"]
    assert detail(activation) == {"amount": 2500, "currency": "USD"}
    assert_never_in(await log_text(services), physical["code"])
    await assert_holds(services)


async def test_a_refused_issue_or_activation_leaves_no_entry(
    client: httpx.AsyncClient, services: Services
) -> None:
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    bad_amount = await client.post(
        "/v1/cards", json={"amount": 0, "region": "US", "kind": "digital"}, headers=merchant
    )
    assert bad_amount.status_code == 422
    wrong_currency = await client.post(
        "/v1/cards",
        json={"amount": 100, "region": "US", "kind": "digital", "currency": "EUR"},
        headers=merchant,
    )
    assert_problem(wrong_currency, 409, "currency_mismatch", param="currency")
    not_allowed = await client.post(
        "/v1/cards", json={"amount": 100, "region": "US", "kind": "digital"}, headers=support
    )
    assert_problem(not_allowed, 403, "forbidden")
    unknown = await client.post(
        "/v1/cards/activate", json={"serial": "0000 0000 0000 0000"}, headers=merchant
    )
    assert unknown.status_code in (404, 422)
    [digital] = await issue(client, merchant)
    already = await client.post(
        "/v1/cards/activate", json={"serial": digital["serial"]}, headers=merchant
    )
    assert already.status_code == 409

    assert [row.action for row in await entries(services)] == ["card.issue"]
    await assert_holds(services)


async def test_a_replayed_issue_is_not_recorded_again(
    client: httpx.AsyncClient, services: Services
) -> None:
    merchant = {**await api_key(services, "merchant"), "Idempotency-Key": "issue-once-1"}
    body = {"amount": 2500, "region": "US", "kind": "digital", "count": 2}
    first = await client.post("/v1/cards", json=body, headers=merchant)
    again = await client.post("/v1/cards", json=body, headers=merchant)
    assert (first.status_code, again.status_code) == (201, 201)
    assert len(await entries(services, "card.issue")) == 1


# -- e-gifts ----------------------------------------------------------------------------


async def test_a_gift_bought_leaves_one_entry_with_the_address_masked(
    client: httpx.AsyncClient, services: Services
) -> None:
    merchant = await api_key(services, "merchant")
    response = await client.post("/v1/gifts", json=GIFT, headers=merchant)
    assert response.status_code == 201, response.text
    gift = response.json()

    [entry] = await entries(services)
    assert entry.action == "gift.create"
    assert entry.actor_role == "merchant"
    assert entry.target == gift["id"]
    assert entry.request_id == response.headers["Request-Id"]
    async with services.db.transaction(write=False) as connection:
        row = (
            await connection.execute(
                select(gifts_table.c.code_seed, gifts_table.c.card_id).where(
                    gifts_table.c.id == ids.parse_id(ids.GIFT, gift["id"])
                )
            )
        ).one()
    assert detail(entry) == {
        "amount": 2500,
        "currency": "USD",
        "recipient": "a•••@example.com",
        "card": ids.format_id(ids.CARD, row.card_id),
    }
    text = await log_text(services)
    assert "ada.lovelace" not in text
    assert_never_in(text, codes.derive_code(TEST_SECRET_KEY, row.code_seed))
    await assert_holds(services)


async def test_a_refused_gift_leaves_no_entry(
    client: httpx.AsyncClient, services: Services
) -> None:
    merchant = await api_key(services, "merchant")
    bad_address = await client.post(
        "/v1/gifts", json={**GIFT, "recipient_email": "not an address"}, headers=merchant
    )
    assert bad_address.status_code == 422
    no_buyer = await client.post(
        "/v1/gifts",
        json={**GIFT, "purchaser_customer_id": ids.format_id(ids.CUSTOMER, 999)},
        headers=merchant,
    )
    assert_problem(no_buyer, 404, "not_found", param="purchaser_customer_id")
    assert await entries(services) == []
    async with services.db.transaction(write=False) as connection:
        assert (await connection.execute(select(cards.c.id))).all() == []


# -- access managed from the command line -------------------------------------------------


def cli(database_url: str, *args: str, stdin: str = "") -> str:
    result = run_cli(base_env(database_url), *args, stdin=stdin)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def cli_refused(database_url: str, *args: str, stdin: str = "") -> None:
    result = run_cli(base_env(database_url), *args, stdin=stdin)
    assert result.returncode != 0, result.stdout + result.stderr


def operator(row: Any) -> tuple[str, str, str | None]:
    return row.actor, row.actor_role, row.request_id


async def test_an_operator_managing_access_is_in_the_log_without_keys_or_passwords(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    created = cli(database_url, "keys", "create", "--role", "merchant", "--name", "web shop")
    key = created.strip().splitlines()[-1].strip()
    key_id = int(created.split("Created API key ")[1].split()[0])
    cli(database_url, "keys", "revoke", str(key_id))
    email = "ana@staff.example.com"
    made = cli(
        database_url,
        "staff",
        "create",
        "--email",
        email,
        "--role",
        "support",
        stdin=PASSWORD + "\n",
    )
    staff_id = int(made.split("Created staff member ")[1].split()[0])
    session = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert session.status_code == 201, session.text
    cli(database_url, "staff", "password", "--email", email, stdin=NEW_PASSWORD + "\n")
    cli(database_url, "staff", "disable", "--email", email)

    rows = await entries(services)
    assert [row.action for row in rows] == [
        "api_key.create",
        "api_key.revoke",
        "staff.create",
        "staff.password",
        "staff.disable",
    ]
    assert {operator(row) for row in rows} == {("cli", "operator", None)}
    assert {row.outcome for row in rows} == {"ok"}
    key_created, key_revoked, staff_created, password_set, disabled = rows
    assert key_created.target == key_revoked.target == f"api_key:{key_id}"
    assert detail(key_created) == {"role": "merchant", "name": "web shop"}
    assert detail(key_revoked) == {"role": "merchant", "name": "web shop"}
    assert (
        staff_created.target
        == password_set.target
        == disabled.target
        == ids.format_id(ids.STAFF, staff_id)
    )
    assert detail(staff_created) == {"role": "support"}
    # The session opened above ended with the new password; none was left to disable.
    assert detail(password_set) == {"sessions_ended": 1}
    assert detail(disabled) == {"role": "support", "sessions_ended": 0}
    text = await log_text(services)
    assert key not in text
    assert key[12:] not in text
    assert PASSWORD not in text
    assert NEW_PASSWORD not in text
    assert email not in text
    await assert_holds(services)


async def test_refused_operator_actions_leave_no_entry(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    cli_refused(database_url, "keys", "revoke", "999")
    cli_refused(
        database_url,
        "staff",
        "create",
        "--email",
        "bad",
        "--role",
        "support",
        stdin=PASSWORD + "\n",
    )
    cli_refused(
        database_url,
        "staff",
        "create",
        "--email",
        "ana@staff.example.com",
        "--role",
        "support",
        stdin="short\n",
    )
    cli_refused(database_url, "staff", "disable", "--email", "nobody@staff.example.com")
    cli_refused(
        database_url,
        "staff",
        "password",
        "--email",
        "nobody@staff.example.com",
        stdin=NEW_PASSWORD + "\n",
    )
    assert await entries(services) == []


async def test_cards_issued_from_the_command_line_are_one_entry_per_batch(
    services: Services, database_url: str, tmp_path: Any
) -> None:
    out = tmp_path / "cards.csv"
    cli(
        database_url,
        "cards",
        "issue",
        "--count",
        "25",
        "--amount",
        "10.00",
        "--region",
        "DE",
        "--physical",
        "--out",
        str(out),
    )
    [entry] = await entries(services)
    assert (entry.action, *operator(entry)) == ("card.issue", "cli", "operator", None)
    async with services.db.transaction(write=False) as connection:
        numbers = (await connection.execute(select(cards.c.id).order_by(cards.c.id))).scalars()
        card_ids = [ids.format_id(ids.CARD, number) for number in numbers]
    assert entry.target == card_ids[0]
    assert detail(entry) == {
        "count": 25,
        "amount": 1000,
        "currency": "EUR",
        "region": "DE",
        "kind": "physical",
        "first_card": card_ids[0],
        "last_card": card_ids[-1],
    }
    written = out.read_text()
    issued_codes = [line.split(",")[1] for line in written.splitlines()[1:]]
    assert len(issued_codes) == 25
    assert_never_in(await log_text(services), *issued_codes)
    await assert_holds(services)


@pytest.mark.parametrize("role", ["admin", "merchant"])
async def test_the_store_reading_back_what_it_made_is_not_recorded(
    client: httpx.AsyncClient, services: Services, role: str
) -> None:
    """Reads by the store's own keys are not audited (giftcard.audit says why)."""
    key = await api_key(services, role)
    [card] = await issue(client, key)
    gift = await client.post("/v1/gifts", json=GIFT, headers=key)
    assert (await client.get(f"/v1/cards/{card['id']}", headers=key)).status_code == 200
    assert (await client.get(f"/v1/gifts/{gift.json()['id']}", headers=key)).status_code == 200
    assert [row.action for row in await entries(services)] == ["card.issue", "gift.create"]


async def test_the_demo_records_what_it_creates_as_the_operator_once(
    services: Services,
) -> None:
    """`serve --demo` is started by the operator: its staff member and API key are
    recorded when first made, and each start's cards; never the key or a password."""
    secret_key = services.settings.secret_key
    first = await seed_database(services.db, secret_key, clock=services.clock)
    await seed_database(services.db, secret_key, clock=services.clock)

    rows = await entries(services)
    batches = len(DEMO_CARD_AMOUNTS) + 1
    assert [row.action for row in rows] == [
        "staff.create",
        "api_key.create",
        *["card.issue"] * batches,
        *["card.issue"] * batches,
    ]
    assert {operator(row) for row in rows} == {("cli", "operator", None)}
    text = await log_text(services)
    assert first.api_key not in text
    assert first.staff_password is not None
    assert first.staff_password not in text
    await assert_holds(services)
