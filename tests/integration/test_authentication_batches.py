"""Who holds a bearer secret, asked by many requests at once: on PostgreSQL the lookups
that wait while one runs go together in the next statement (giftcard.db.batches), and
each request still gets exactly its own answer: its customer, its staff member, its API
key, or nobody for a secret logged out, expired, revoked or made up."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from giftcard import customers
from giftcard.clock import FrozenClock
from giftcard.customers import ApiKeyPrincipal, CustomerPrincipal, Role
from giftcard.db.tables import api_keys
from giftcard.services import Services
from tests.conftest import sent_statements

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

PASSWORD = "correct horse battery"


async def new_session(services: Services, name: str, *, ttl_s: int = 3600) -> customers.Session:
    email = f"{name}@example.com"
    await customers.sign_up(
        services.db, email=email, password=PASSWORD, region="US", name=None, clock=services.clock
    )
    return await customers.log_in(
        services.db, email=email, password=PASSWORD, ttl_s=ttl_s, clock=services.clock
    )


async def test_many_secrets_at_once_each_get_their_own_holder(
    services: Services, clock: FrozenClock, backend: str
) -> None:
    ada, bob = await new_session(services, "ada"), await new_session(services, "bob")
    logged_out = await new_session(services, "carl")
    await customers.log_out(services.db, logged_out.session_id, clock=services.clock)
    expiring = await new_session(services, "dora", ttl_s=60)
    merchant_id, merchant_key = await customers.create_api_key(
        services.db, role=Role.MERCHANT, name="till", clock=services.clock
    )
    revoked_id, revoked_key = await customers.create_api_key(
        services.db, role=Role.MERCHANT, name="old till", clock=services.clock
    )
    async with services.db.transaction() as connection:
        await connection.execute(
            update(api_keys)
            .where(api_keys.c.id == revoked_id)
            .values(revoked_at=services.clock.now())
        )
    clock.advance(timedelta(seconds=61))
    secrets = [ada.token, bob.token, logged_out.token, expiring.token, merchant_key]
    secrets += [revoked_key, "gcs_made-up", "gck_made-up", "nothing like a secret"]
    secrets *= 4

    with sent_statements(services.db) as sent:
        held = await asyncio.gather(
            *(customers.authenticate(services.db, s, clock=services.clock) for s in secrets)
        )

    expected = {
        ada.token: ("customer", ada.customer),
        bob.token: ("customer", bob.customer),
        merchant_key: ("api key", merchant_id),
    }
    for secret, principal in zip(secrets, held, strict=True):
        if isinstance(principal, CustomerPrincipal):
            assert expected[secret] == ("customer", principal.customer)
        elif isinstance(principal, ApiKeyPrincipal):
            assert expected[secret] == ("api key", principal.key_id)
        else:
            assert principal is None
            assert secret not in expected
    lookups = [s for s, _ in sent if "FROM sessions" in s or "FROM api_keys" in s]
    looked_up = len(secrets) // 9 * 8  # every secret but the one of no known kind
    if backend == "postgresql":
        assert len(lookups) < looked_up, "the lookups did not go together"
    else:
        assert len(lookups) == looked_up, "SQLite looks each one up alone"
