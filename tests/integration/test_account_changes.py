"""Changing the email or password through the API, on SQLite and PostgreSQL: the
current password is needed (and guessing it counts as failed log-ins), the identity
moves with the email in one transaction, the old address is told without learning the
new one in full, a new password ends every other session, and bad input changes
nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from giftcard import ids
from giftcard.customers import Role, create_staff, mask_email
from giftcard.db.tables import customers, identities, outbox_messages, password_resets
from giftcard.mail.compose import compose
from giftcard.mail.messages import OutboxMessage, handler_for
from giftcard.mail.outbox import MessageKind
from giftcard.services import Services
from tests.conftest import Shopper, assert_problem, sign_up

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


def new_email() -> str:
    return f"moved-{uuid.uuid4().hex[:10]}@example.net"


async def rows(services: Services, table: Any, *where: Any) -> list[Any]:
    async with services.db.transaction(write=False) as connection:
        return list((await connection.execute(select(table).where(*where))).all())


async def messages(services: Services, kind: MessageKind) -> list[OutboxMessage]:
    found = await rows(services, outbox_messages, outbox_messages.c.kind == kind.value)
    return [OutboxMessage.from_row(row) for row in found]


async def rendered_text(services: Services, message: OutboxMessage) -> tuple[str, str]:
    async with services.db.transaction(write=False) as connection:
        content = await handler_for(message.kind).render(connection, message, services.settings)
    email = compose(message, content, sender=services.settings.mail_from, date=datetime.now(UTC))
    text, html = email.get_body(("plain",)), email.get_body(("html",))
    assert text is not None
    assert html is not None
    return " ".join(str(text.get_content()).split()), str(html.get_content())


async def log_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/sessions", json={"email": email, "password": password})


async def change_password(
    client: httpx.AsyncClient, shopper: Shopper, current: str, new: str
) -> httpx.Response:
    return await client.post(
        "/v1/me/password",
        json={"current_password": current, "new_password": new},
        headers=shopper.auth,
    )


async def change_email(
    client: httpx.AsyncClient, shopper: Shopper, email: str, current: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/v1/me/email",
        json={"email": email, "current_password": current},
        headers=shopper.auth,
    )


async def snapshot(services: Services) -> tuple[list[Any], ...]:
    """What a refused change must leave as it was."""
    return (
        await rows(services, customers),
        await rows(services, identities),
        await rows(services, outbox_messages),
        await rows(services, password_resets),
    )


# --- the password ---------------------------------------------------------------------


async def test_a_new_password_ends_every_other_session_and_keeps_this_one(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a shopper logged in on two devices and a reset link not used yet, changing
    the password on one: 204; that session goes on, the other ends; the new password
    logs in, the old does not; the link stops working; the account's address is told."""
    shopper = await sign_up(client)
    other = await log_in(client, shopper.email, PASSWORD)
    await client.post("/v1/password-resets", json={"email": shopper.email})

    changed = await change_password(client, shopper, PASSWORD, NEW_PASSWORD)

    assert changed.status_code == 204, changed.text
    assert (await client.get("/v1/me", headers=shopper.auth)).status_code == 200
    other_auth = {"Authorization": f"Bearer {other.json()['token']}"}
    assert (await client.get("/v1/me", headers=other_auth)).status_code == 401
    assert (await log_in(client, shopper.email, PASSWORD)).status_code == 401
    assert (await log_in(client, shopper.email, NEW_PASSWORD)).status_code == 201
    assert all(row.used_at is not None for row in await rows(services, password_resets))
    [notice] = await messages(services, MessageKind.PASSWORD_CHANGED)
    assert notice.recipient == shopper.email
    text, _ = await rendered_text(services, notice)
    assert "on the account's settings page" in text
    assert "Every other device that was logged in has been logged out" in text


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"current_password": "wrong password", "new_password": NEW_PASSWORD}, 401,
         "invalid_credentials", "current_password"),
        ({"current_password": PASSWORD, "new_password": "short"}, 422, "validation_error",
         "new_password"),
        ({"current_password": PASSWORD, "new_password": "x" * 257}, 422, "validation_error",
         "new_password"),
        ({"current_password": "x" * 257, "new_password": NEW_PASSWORD}, 422,
         "validation_error", "current_password"),
        ({"new_password": NEW_PASSWORD}, 422, "validation_error", "current_password"),
        ({"current_password": PASSWORD, "new_password": 12345678}, 422, "validation_error",
         "new_password"),
    ],
)  # fmt: skip
async def test_a_refused_password_change_changes_nothing(
    client: httpx.AsyncClient,
    services: Services,
    body: dict[str, Any],
    status: int,
    code: str,
    param: str,
) -> None:
    """A wrong current password, a weak, overlong or missing one: refused with the field
    named; no row changes, no email is queued, and the old password still logs in."""
    shopper = await sign_up(client)
    before = await snapshot(services)

    refused = await client.post("/v1/me/password", json=body, headers=shopper.auth)

    assert_problem(refused, status, code, param=param)
    assert await snapshot(services) == before
    assert (await log_in(client, shopper.email, PASSWORD)).status_code == 201


async def test_guessing_the_current_password_is_limited_like_log_ins(
    client: httpx.AsyncClient,
) -> None:
    """Ten wrong current passwords (the log-in limit for an email from one address);
    the eleventh attempt, even with the right password, is 429."""
    shopper = await sign_up(client)
    for attempt in range(10):
        wrong = await change_password(client, shopper, f"guess number {attempt}", NEW_PASSWORD)
        assert wrong.status_code == 401

    locked = await change_password(client, shopper, PASSWORD, NEW_PASSWORD)

    assert_problem(locked, 429, "too_many_attempts")


async def test_only_a_customer_session_may_change_a_password(
    client: httpx.AsyncClient, services: Services
) -> None:
    from tests.conftest import api_key

    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert_problem(await client.post("/v1/me/password", json=body), 401, "unauthorized")
    admin = await api_key(services)
    assert_problem(await client.post("/v1/me/password", json=body, headers=admin), 403, "forbidden")


# --- the email ------------------------------------------------------------------------


async def test_a_new_email_moves_the_identity_and_tells_the_old_address(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Changing the email: 200 with the new address (normalized); it logs in, the old
    one does not; `identities` names the new one for this customer; sessions go on;
    the old address gets a notice showing the new one masked, never in full."""
    shopper = await sign_up(client)
    email = new_email()
    await client.post("/v1/password-resets", json={"email": shopper.email})

    changed = await change_email(client, shopper, f"  {email.upper()} ")

    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == email
    assert (await client.get("/v1/me", headers=shopper.auth)).json()["email"] == email
    assert (await log_in(client, email, PASSWORD)).status_code == 201
    assert (await log_in(client, shopper.email, PASSWORD)).status_code == 401
    owned = await rows(
        services, identities, identities.c.customer_id == ids.parse_id(ids.CUSTOMER, shopper.id)
    )
    assert [row.email for row in owned] == [email]
    # A reset link sent to the old address no longer works.
    assert all(row.used_at is not None for row in await rows(services, password_resets))
    assert len(await rows(services, password_resets)) == 1
    [notice] = await messages(services, MessageKind.EMAIL_CHANGED)
    assert notice.recipient == shopper.email
    text, html = await rendered_text(services, notice)
    assert mask_email(email) in text
    assert mask_email(email) in html
    assert email not in text
    assert email not in html
    assert email.split("@")[0] not in text + html
    # The old address can be signed up with again: it is nobody's now.
    again = await client.post(
        "/v1/customers", json={"email": shopper.email, "password": PASSWORD, "region": "US"}
    )
    assert again.status_code == 201, again.text


async def test_an_address_someone_has_is_email_taken(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Another customer's address, or a staff member's, in any case: 409 email_taken
    beside `email`, worded alike, and nothing changes."""
    shopper, other = await sign_up(client), await sign_up(client)
    staff_email = f"staff-{uuid.uuid4().hex[:8]}@store.example"
    await create_staff(
        services.db, email=staff_email, password=PASSWORD, role=Role.SUPPORT, clock=services.clock
    )
    before = await snapshot(services)

    taken = await change_email(client, shopper, other.email.upper())
    staff_taken = await change_email(client, shopper, staff_email)

    body = assert_problem(taken, 409, "email_taken", param="email")
    assert assert_problem(staff_taken, 409, "email_taken", param="email") == body
    assert await snapshot(services) == before


@pytest.mark.parametrize(
    ("email", "current", "status", "code", "param"),
    [
        ("not an address", PASSWORD, 422, "validation_error", "email"),
        ("a" * 250 + "@example.com", PASSWORD, 422, "validation_error", "email"),
        ("new\u202e@example.com", PASSWORD, 422, "validation_error", "email"),
        ("fresh@example.org", "wrong password", 401, "invalid_credentials", "current_password"),
        ("fresh@example.org", "", 422, "validation_error", "current_password"),
        ("SAME", PASSWORD, 422, "validation_error", "email"),
    ],
)
async def test_a_refused_email_change_changes_nothing(
    client: httpx.AsyncClient,
    services: Services,
    email: str,
    current: str,
    status: int,
    code: str,
    param: str,
) -> None:
    """A malformed, overlong or unchanged address, or a wrong or missing current
    password: refused with the field named, nothing changed, no email queued."""
    shopper = await sign_up(client)
    before = await snapshot(services)

    refused = await change_email(
        client, shopper, shopper.email if email == "SAME" else email, current
    )

    assert_problem(refused, status, code, param=param)
    assert await snapshot(services) == before


async def test_two_customers_taking_one_new_address_at_once_end_with_one_owner(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Two customers changing to the same new address at the same moment: one gets it,
    the other email_taken; `identities` has one owner for it."""
    from tests.conftest import burst

    first, second = await sign_up(client), await sign_up(client)
    email = new_email()

    answers = await burst(change_email(client, first, email), change_email(client, second, email))

    assert sorted(answer.status_code for answer in answers) == [200, 409], [
        answer.text for answer in answers
    ]
    owners = await rows(services, identities, identities.c.email == email)
    assert len(owners) == 1
    [customer] = await rows(services, customers, customers.c.email == email)
    assert customer.id == owners[0].customer_id


async def test_a_customer_left_without_an_identity_gets_one_with_a_new_email(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A customer whose address went to a staff member when identities came in
    (migration 0004) has no identity and cannot log in; a new email (changed from a
    session they still hold) is theirs, and logs in."""
    from sqlalchemy import delete

    shopper = await sign_up(client)
    async with services.db.transaction() as connection:
        await connection.execute(
            delete(identities).where(
                identities.c.customer_id == ids.parse_id(ids.CUSTOMER, shopper.id)
            )
        )
    email = new_email()

    changed = await change_email(client, shopper, email)

    assert changed.status_code == 200, changed.text
    owned = await rows(
        services, identities, identities.c.customer_id == ids.parse_id(ids.CUSTOMER, shopper.id)
    )
    assert [row.email for row in owned] == [email]
    assert (await log_in(client, email, PASSWORD)).status_code == 201
