"""Sign-up and log-in do the same expensive work whether or not the account exists, so
their timing does not tell an attacker which emails have accounts. (Timing itself is
measured by benchmarks, not here: these tests count the password hashing each request
does, which is what dominates its time.)"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from giftcard import passwords
from giftcard.customers import Role, create_staff
from giftcard.services import Services
from tests.conftest import sign_up


class CountingHasher:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hashes = 0
        self.verifies = 0

    def hash(self, password: str) -> str:
        self.hashes += 1
        return str(self.inner.hash(password))

    def verify(self, password_hash: str, password: str) -> bool:
        self.verifies += 1
        return bool(self.inner.verify(password_hash, password))


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    counting = CountingHasher(passwords._hasher)
    monkeypatch.setattr(passwords, "_hasher", counting)
    return counting


async def test_log_in_verifies_a_hash_for_unknown_emails_too(
    client: httpx.AsyncClient, hasher: CountingHasher
) -> None:
    shopper = await sign_up(client)
    hasher.verifies = 0
    known = await client.post(
        "/v1/sessions", json={"email": shopper.email, "password": "wrong password"}
    )
    after_known = hasher.verifies
    unknown = await client.post(
        "/v1/sessions", json={"email": "nobody@example.com", "password": "wrong password"}
    )
    assert known.status_code == unknown.status_code == 401
    assert known.json() == unknown.json()
    assert after_known == 1
    assert hasher.verifies - after_known == 1


async def test_sign_up_hashes_the_password_even_when_the_email_is_taken(
    client: httpx.AsyncClient, hasher: CountingHasher
) -> None:
    shopper = await sign_up(client)
    hasher.hashes = 0
    taken = await client.post(
        "/v1/customers",
        json={"email": shopper.email, "password": "another password", "region": "US"},
    )
    assert taken.status_code == 409
    assert taken.json()["code"] == "email_taken"
    assert hasher.hashes == 1


async def test_staff_addresses_cost_the_same_work_to_sign_up_with_and_to_log_in_to(
    client: httpx.AsyncClient, services: Services, hasher: CountingHasher
) -> None:
    """A staff member's address is taken for sign-up and found for log-in with the same
    hashing as a customer's, so neither tells a stranger which addresses are staff."""
    email = f"staff-{uuid.uuid4().hex[:8]}@store.example"
    await create_staff(
        services.db, email=email, password="staff password 1", role=Role.ADMIN, clock=services.clock
    )
    hasher.hashes = hasher.verifies = 0

    taken = await client.post(
        "/v1/customers", json={"email": email, "password": "another password", "region": "US"}
    )
    wrong = await client.post("/v1/sessions", json={"email": email, "password": "wrong password"})

    assert taken.status_code == 409
    assert wrong.status_code == 401
    assert hasher.hashes == 1
    assert hasher.verifies == 1
