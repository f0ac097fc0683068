"""An operator manages who may call the service: `giftcard keys list|revoke` and
`giftcard staff list|disable`. A revoked key and a disabled staff member's sessions are
refused at their next request. Through the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import httpx
import pytest

from giftcard.customers import Role, create_api_key, create_staff
from giftcard.services import Services
from tests.e2e.server import base_env, run_cli

PASSWORD = "staff password 123"


async def test_a_revoked_key_is_refused_at_its_next_request(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    key_id, key = await create_api_key(
        services.db, role=Role.MERCHANT, name="web shop", clock=services.clock
    )
    other_id, other = await create_api_key(
        services.db, role=Role.SUPPORT, name=None, clock=services.clock
    )
    auth = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/v1/payments/pay_1", headers=auth)).status_code == 404
    env = base_env(database_url)

    listed = run_cli(env, "keys", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"{key[:12]}…" in listed.stdout
    assert key not in listed.stdout  # never the secret
    assert other not in listed.stdout
    assert "web shop" in listed.stdout

    revoked = run_cli(env, "keys", "revoke", str(key_id))

    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert f"Revoked API key {key_id} (merchant" in revoked.stdout
    refused = await client.get("/v1/payments/pay_1", headers=auth)
    assert refused.status_code == 401
    still = {"Authorization": f"Bearer {other}"}
    assert (await client.get("/v1/gifts/gift_1", headers=still)).status_code == 404
    assert "revoked" in run_cli(env, "keys", "list").stdout
    assert other_id != key_id


async def test_revoking_an_unknown_or_revoked_key_is_refused(
    services: Services, database_url: str
) -> None:
    key_id, _ = await create_api_key(services.db, role=Role.ADMIN, name=None, clock=services.clock)
    env = base_env(database_url)
    assert run_cli(env, "keys", "revoke", str(key_id)).returncode == 0

    again = run_cli(env, "keys", "revoke", str(key_id))
    unknown = run_cli(env, "keys", "revoke", "999999")
    malformed = run_cli(env, "keys", "revoke", "key-three")

    assert again.returncode == 1
    assert f"API key {key_id} was revoked already" in again.stdout + again.stderr
    assert unknown.returncode == 1
    assert "No API key 999999" in unknown.stdout + unknown.stderr
    assert malformed.returncode == 2


async def test_a_disabled_staff_member_is_logged_out_and_cannot_log_in(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    email = f"agent-{uuid.uuid4().hex[:8]}@store.example"
    keep = f"keep-{uuid.uuid4().hex[:8]}@store.example"
    for address in (email, keep):
        await create_staff(
            services.db, email=address, password=PASSWORD, role=Role.SUPPORT, clock=services.clock
        )
    session = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {session.json()['token']}"}
    env = base_env(database_url)

    disabled = run_cli(env, "staff", "disable", "--email", email.upper())

    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    assert f"Disabled {email} (support); 1 session(s) ended." in disabled.stdout
    assert (await client.delete("/v1/sessions/current", headers=auth)).status_code == 401
    again = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert again.status_code == 401
    other = await client.post("/v1/sessions", json={"email": keep, "password": PASSWORD})
    assert other.status_code == 201
    listed = run_cli(env, "staff", "list")
    assert listed.returncode == 0
    [line] = [line for line in listed.stdout.splitlines() if email in line]
    assert "disabled" in line
    [kept] = [line for line in listed.stdout.splitlines() if keep in line]
    assert "active" in kept


async def test_disabling_an_unknown_or_disabled_staff_member_is_refused(
    services: Services, database_url: str
) -> None:
    email = f"agent-{uuid.uuid4().hex[:8]}@store.example"
    await create_staff(
        services.db, email=email, password=PASSWORD, role=Role.ADMIN, clock=services.clock
    )
    env = base_env(database_url)
    assert run_cli(env, "staff", "disable", "--email", email).returncode == 0

    again = run_cli(env, "staff", "disable", "--email", email)
    unknown = run_cli(env, "staff", "disable", "--email", "nobody@store.example")

    assert again.returncode == 1
    assert f"{email} was disabled already" in again.stdout + again.stderr
    assert unknown.returncode == 1
    assert "No staff member has the email nobody@store.example" in unknown.stdout + unknown.stderr


@pytest.mark.parametrize(
    "command",
    [("keys", "list"), ("staff", "list"), ("keys", "revoke", "1"), ("verify",)],
)
def test_a_database_never_migrated_is_named_not_a_traceback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A command run before `giftcard migrate` says what to do, in one line, exit 1."""
    env = base_env(f"sqlite:///{tmp_path / 'new.db'}")

    result = run_cli(env, *command)

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "run `giftcard migrate` first" in result.stderr


def test_a_database_that_does_not_answer_is_named_not_a_traceback() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        env = base_env(f"postgresql://postgres@127.0.0.1:{port}/giftcard")

        result = run_cli(env, "keys", "list")

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "could not reach the database" in result.stderr
