"""Staff passwords are not reset by email: an operator sets one with `giftcard staff
password`, which ends every session the staff member had. On SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import httpx

from giftcard.customers import Role, create_staff
from giftcard.services import Services
from tests.e2e.server import base_env, run_cli

PASSWORD = "staff password 123"
NEW_PASSWORD = "a new staff password"


async def test_an_operator_sets_a_staff_password_and_their_sessions_end(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    email = f"staff-{uuid.uuid4().hex[:8]}@store.example"
    await create_staff(
        services.db, email=email, password=PASSWORD, role=Role.SUPPORT, clock=services.clock
    )
    session = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {session.json()['token']}"}
    env = base_env(database_url)

    result = run_cli(env, "staff", "password", "--email", email.upper(), stdin=NEW_PASSWORD + "\n")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 session(s) ended" in result.stdout
    assert (await client.delete("/v1/sessions/current", headers=auth)).status_code == 401
    old = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post("/v1/sessions", json={"email": email, "password": NEW_PASSWORD})
    assert new.status_code == 201


async def test_an_unknown_staff_address_or_a_weak_password_is_refused(
    services: Services, database_url: str
) -> None:
    env = base_env(database_url)
    unknown = run_cli(
        env, "staff", "password", "--email", "nobody@store.example", stdin=NEW_PASSWORD + "\n"
    )
    assert unknown.returncode == 1
    assert "No staff member has the email nobody@store.example" in unknown.stdout + unknown.stderr
    weak = run_cli(env, "staff", "password", "--email", "x@store.example", stdin="short\n")
    assert weak.returncode == 1
    assert "8 to 256 characters" in weak.stdout + weak.stderr
