"""One identity namespace (SPEC §1): an email belongs to one customer or one staff member,
compared case-insensitively. A stranger cannot sign up with a staff member's address and
so lock them out; `staff create` refuses a customer's address; a sign-up and a staff
creation of one address at the same moment end with exactly one owner."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import func, insert, select

from giftcard import customers
from giftcard.clock import FrozenClock
from giftcard.customers import Role, create_staff
from giftcard.db.engine import Database
from giftcard.db.migrate import alembic_config, upgrade
from giftcard.db.tables import customers as customers_table
from giftcard.db.tables import identities, ledger_accounts, staff
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.services import Services
from tests.conftest import _admin as admin
from tests.conftest import _with_database as with_database
from tests.conftest import assert_problem, sign_up
from tests.e2e.server import base_env, run_cli

PASSWORD = "correct horse battery"
STAFF_PASSWORD = "staff password 123"


def new_email(local: str = "admin") -> str:
    return f"{local}-{uuid.uuid4().hex[:8]}@store.example"


async def count(services: Services, table: Any, *where: Any) -> int:
    async with services.db.transaction(write=False) as connection:
        return int(
            (
                await connection.execute(select(func.count()).select_from(table).where(*where))
            ).scalar_one()
        )


async def log_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/sessions", json={"email": email, "password": password})


async def test_a_stranger_cannot_sign_up_with_a_staff_address_and_the_admin_still_logs_in(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an admin, a stranger signing up with the admin's address in any case or with
    spaces gets 409 email_taken, worded as for any taken address; no customer is made,
    and the admin's next log-in, in any case, opens a staff session."""
    admin = new_email()
    await create_staff(
        services.db, email=admin, password=STAFF_PASSWORD, role=Role.ADMIN, clock=services.clock
    )
    taken_by_customer = await sign_up(client)
    customer_taken = await client.post(
        "/v1/customers",
        json={"email": taken_by_customer.email, "password": PASSWORD, "region": "US"},
    )
    customers_before = await count(services, customers_table)

    for variant in (admin, admin.upper(), f"  {admin.capitalize()} "):
        refused = await client.post(
            "/v1/customers", json={"email": variant, "password": PASSWORD, "region": "US"}
        )
        body = assert_problem(refused, 409, "email_taken", param="email", why=variant)
        assert body["detail"] == customer_taken.json()["detail"]

    assert await count(services, customers_table) == customers_before
    for variant in (admin, admin.upper()):
        logged_in = await log_in(client, variant, STAFF_PASSWORD)
        assert logged_in.status_code == 201, logged_in.text
        assert logged_in.json()["staff"]["email"] == admin
        assert "customer" not in logged_in.json()
    wrong = await log_in(client, admin, PASSWORD)
    assert_problem(wrong, 401, "invalid_credentials")


async def test_the_web_sign_up_refuses_a_staff_address_too(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The sign-up page goes through the same use case: a staff address is taken there."""
    from tests.web import csrf_of, field_error

    admin = new_email()
    await create_staff(
        services.db, email=admin, password=STAFF_PASSWORD, role=Role.ADMIN, clock=services.clock
    )
    form = await client.get("/signup")
    refused = await client.post(
        "/signup",
        data={
            "csrf_token": csrf_of(form.text),
            "email": admin.upper(),
            "password": PASSWORD,
            "region": "US",
            "name": "",
        },
    )

    assert refused.status_code == 409
    assert field_error(refused.text, "email") == (
        "An account with this email already exists. Log in instead."
    )
    assert await count(services, customers_table) == 0


async def test_staff_create_refuses_a_customers_address_in_any_case(
    client: httpx.AsyncClient, services: Services
) -> None:
    """`customers.create_staff` with a customer's address, as typed or in another case,
    is email_taken with a message naming the customer account; no staff member is made
    and the customer still logs in as a customer."""
    shopper = await sign_up(client)

    for variant in (shopper.email, shopper.email.upper()):
        with pytest.raises(GiftcardError) as refused:
            await create_staff(
                services.db,
                email=variant,
                password=STAFF_PASSWORD,
                role=Role.SUPPORT,
                clock=services.clock,
            )
        assert refused.value.code is ErrorCode.EMAIL_TAKEN
        assert refused.value.param == "email"
        assert f"is the email of a customer account ({shopper.id})" in refused.value.detail

    assert await count(services, staff) == 0
    again = await log_in(client, shopper.email, PASSWORD)
    assert again.status_code == 201, again.text
    assert again.json()["customer"]["id"] == shopper.id


async def test_staff_create_refuses_another_staff_members_address(services: Services) -> None:
    email = new_email("ana")
    await create_staff(
        services.db, email=email, password=STAFF_PASSWORD, role=Role.SUPPORT, clock=services.clock
    )
    with pytest.raises(GiftcardError) as refused:
        await create_staff(
            services.db,
            email=email.upper(),
            password=STAFF_PASSWORD,
            role=Role.ADMIN,
            clock=services.clock,
        )
    assert refused.value.code is ErrorCode.EMAIL_TAKEN
    assert "There is a staff member with the email" in refused.value.detail
    assert await count(services, staff) == 1


async def test_the_staff_create_command_refuses_a_customers_address(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    """`giftcard staff create` with a customer's address exits non-zero with a clear
    message on standard error and creates nobody; with a fresh address it works."""
    shopper = await sign_up(client)
    env = base_env(database_url)

    refused = run_cli(
        env,
        "staff",
        "create",
        "--email",
        shopper.email.upper(),
        "--role",
        "admin",
        stdin=STAFF_PASSWORD + "\n",
    )

    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"is the email of a customer account ({shopper.id})" in message, message
    assert "Traceback" not in refused.stderr
    assert await count(services, staff) == 0

    created = run_cli(
        env, "staff", "create", "--email", new_email(), "--role", "admin", stdin=STAFF_PASSWORD
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert await count(services, staff) == 1


@pytest.fixture
def empty_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A new database without any table, for a test that migrates it step by step."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"giftcard_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server, f'CREATE DATABASE "{name}"'))
    yield with_database(server, name)
    asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def both_check_first(monkeypatch: pytest.MonkeyPatch, backend: str) -> asyncio.Event:
    """On PostgreSQL, hold each caller of `identity_of` until two have asked, so that a
    sign-up and a staff creation both find the address free before either writes it:
    only the database's unique key can then settle who gets it. (SQLite takes its write
    lock at BEGIN, so there the second caller cannot ask until the first committed.)"""
    both_asked = asyncio.Event()
    if not backend.startswith("postgresql"):
        both_asked.set()
        return both_asked
    original = customers.identity_of
    asked: list[str] = []

    async def held(connection: Any, email: str) -> customers.Identity | None:
        found = await original(connection, email)
        asked.append(email)
        if len(asked) >= 2:
            both_asked.set()
        await asyncio.wait_for(both_asked.wait(), timeout=30)
        return found

    monkeypatch.setattr(customers, "identity_of", held)
    return both_asked


async def test_a_sign_up_and_a_staff_create_of_one_address_at_once_leave_one_owner(
    client: httpx.AsyncClient, services: Services, both_check_first: asyncio.Event
) -> None:
    """A sign-up and a staff creation of the same address race: exactly one succeeds, the
    other is email_taken, and the address has one owner, who is the one that logs in."""
    email = new_email()

    signed_up, staffed = await asyncio.wait_for(
        asyncio.gather(
            client.post(
                "/v1/customers", json={"email": email, "password": PASSWORD, "region": "US"}
            ),
            create_staff(
                services.db,
                email=email.upper(),
                password=STAFF_PASSWORD,
                role=Role.ADMIN,
                clock=services.clock,
            ),
            return_exceptions=True,
        ),
        timeout=60,
    )

    assert both_check_first.is_set()
    assert isinstance(signed_up, httpx.Response)
    customer_won = signed_up.status_code == 201
    if customer_won:
        assert isinstance(staffed, GiftcardError), staffed
        assert staffed.code is ErrorCode.EMAIL_TAKEN
    else:
        assert_problem(signed_up, 409, "email_taken")
        assert isinstance(staffed, int), staffed
    assert await count(services, identities, identities.c.email == email) == 1
    assert await count(services, customers_table) + await count(services, staff) == 1
    session = await log_in(client, email, PASSWORD if customer_won else STAFF_PASSWORD)
    assert session.status_code == 201, session.text
    assert ("customer" if customer_won else "staff") in session.json()


async def test_the_migration_gives_a_shared_address_to_the_staff_member(
    empty_database_url: str,
) -> None:
    """A database from before the identity namespace, where a stranger had signed up with
    the admin's address: after `migrate`, the admin owns it and logs in; every other
    customer and staff member owns their own address."""
    url = empty_database_url
    db = Database(url, pool_size=1)
    clock = FrozenClock()
    try:
        async with db.transaction() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0003"))
        async with db.transaction() as connection:
            now = clock.now()
            for email in ("admin@store.example", "ada@example.com"):
                accounts = []
                for kind in ("customer_available", "customer_held"):
                    accounts.append(
                        (
                            await connection.execute(
                                insert(ledger_accounts)
                                .values(kind=kind, currency="USD", tracked=True, created_at=now)
                                .returning(ledger_accounts.c.id)
                            )
                        ).scalar_one()
                    )
                await connection.execute(
                    insert(customers_table).values(
                        email=email,
                        password_hash="x",
                        region="US",
                        currency="USD",
                        refund_preference="original_payment_method",
                        available_account_id=accounts[0],
                        held_account_id=accounts[1],
                        created_at=now,
                    )
                )
            for email in ("admin@store.example", "ana@store.example"):
                await connection.execute(
                    insert(staff).values(
                        email=email, password_hash="x", role="admin", created_at=now
                    )
                )

        await upgrade(url)

        async with db.transaction(write=False) as connection:
            owners = {
                row.email: (row.customer_id is not None, row.staff_id is not None)
                for row in await connection.execute(select(identities))
            }
    finally:
        await db.dispose()
    assert owners == {
        "admin@store.example": (False, True),
        "ada@example.com": (True, False),
        "ana@store.example": (False, True),
    }
