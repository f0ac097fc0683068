"""Password resets over the API (SPEC §6), on SQLite and PostgreSQL: `POST
/v1/password-resets` answers 202 alike for every address and does the same work; the
link's token is derived, stored only as a keyed hash, works once, for one hour, only the
newest one; using it changes the password, ends every session and tells the account's
address. The emails are rendered by their handlers and composed as the sender does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from giftcard import account_mail, ids
from giftcard.clock import FrozenClock
from giftcard.customers import Role, create_staff
from giftcard.db.tables import metadata, outbox_messages, password_resets
from giftcard.mail.compose import compose
from giftcard.mail.messages import NotToBeSent, OutboxMessage, handler_for
from giftcard.mail.outbox import MessageKind
from giftcard.services import Services
from tests.conftest import TEST_SECRET_KEY, Shopper, assert_problem, burst, sign_up

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


def new_email() -> str:
    return f"reset-{uuid.uuid4().hex[:10]}@example.com"


async def ask(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/v1/password-resets", json={"email": email})


async def confirm(client: httpx.AsyncClient, token: str, password: str) -> httpx.Response:
    return await client.post(
        "/v1/password-resets/confirm", json={"token": token, "password": password}
    )


async def rows(services: Services, table: Any, *where: Any) -> list[Any]:
    async with services.db.transaction(write=False) as connection:
        return list((await connection.execute(select(table).where(*where))).all())


async def messages(services: Services, kind: MessageKind) -> list[OutboxMessage]:
    found = await rows(services, outbox_messages, outbox_messages.c.kind == kind.value)
    return [OutboxMessage.from_row(row) for row in found]


async def newest_token(services: Services, shopper: Shopper) -> str:
    """The token of the shopper's newest link, derived as the sender derives it."""
    found = await rows(
        services,
        password_resets,
        password_resets.c.customer_id == ids.parse_id(ids.CUSTOMER, shopper.id),
    )
    newest = max(found, key=lambda row: row.id)
    return account_mail.reset_token(TEST_SECRET_KEY, newest.token_seed)


async def render(services: Services, message: OutboxMessage) -> EmailMessage:
    """The email for `message`, as the sender makes it: the kind's handler, then compose."""
    async with services.db.transaction(write=False) as connection:
        content = await handler_for(message.kind).render(connection, message, services.settings)
    return compose(message, content, sender=services.settings.mail_from, date=datetime.now(UTC))


def parts(email: EmailMessage) -> tuple[str, str]:
    text = email.get_body(("plain",))
    html = email.get_body(("html",))
    assert text is not None
    assert html is not None
    # Words only, whitespace squeezed: the text part is wrapped for reading.
    return " ".join(str(text.get_content()).split()), str(html.get_content())


async def log_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/sessions", json={"email": email, "password": password})


# --- asking -------------------------------------------------------------------------------


async def test_known_unknown_and_staff_addresses_get_the_same_202(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a customer, an unknown address and a staff member's, each asking gets 202
    with byte-identical bodies; only the customer gets a reset row and an outbox message
    (kind password_reset, ref_id the reset, to their address), in one transaction."""
    shopper = await sign_up(client)
    staff_email = f"staff-{uuid.uuid4().hex[:8]}@store.example"
    await create_staff(
        services.db, email=staff_email, password=PASSWORD, role=Role.SUPPORT, clock=services.clock
    )

    known = await ask(client, shopper.email.upper())
    unknown = await ask(client, new_email())
    staff = await ask(client, staff_email)

    assert known.status_code == unknown.status_code == staff.status_code == 202
    assert known.content == unknown.content == staff.content
    assert known.json()["status"] == "accepted"
    assert known.headers["cache-control"] == "no-store"
    resets = await rows(services, password_resets)
    assert [row.customer_id for row in resets] == [ids.parse_id(ids.CUSTOMER, shopper.id)]
    assert resets[0].expires_at == services.clock.now() + timedelta(hours=1)
    sent = await messages(services, MessageKind.PASSWORD_RESET)
    assert [(m.recipient, m.ref_id) for m in sent] == [(shopper.email, resets[0].id)]


@pytest.fixture
def statements(services: Services) -> Iterator[list[str]]:
    """Every SQL statement the services' engine runs while the test goes on."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


async def test_asking_runs_the_same_statements_with_or_without_an_account(
    client: httpx.AsyncClient, services: Services, statements: list[str]
) -> None:
    """The database work of a request tells nothing either: for a customer's address and
    for an unknown one the same statements run, in the same order (without an account
    they find no row to write)."""
    shopper = await sign_up(client)
    await ask(client, new_email())  # the first request warms what is cached
    statements.clear()
    assert (await ask(client, shopper.email)).status_code == 202
    for_customer = list(statements)
    statements.clear()
    assert (await ask(client, new_email())).status_code == 202
    for_nobody = list(statements)

    assert for_customer == for_nobody
    assert any("INSERT INTO outbox_messages" in statement for statement in for_customer)
    assert len(await messages(services, MessageKind.PASSWORD_RESET)) == 1


async def test_the_email_links_to_the_reset_page_and_says_to_ignore_it_if_not_asked(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The reset email, rendered by its handler and composed as the sender does, has a
    text and an HTML part, each with the link `{public_url}/password-reset?token=…`
    whose token's keyed hash is the one stored, its validity, and "ignore this"."""
    shopper = await sign_up(client)
    await ask(client, shopper.email)
    [message] = await messages(services, MessageKind.PASSWORD_RESET)

    email = await render(services, message)
    text, html = parts(email)

    token = await newest_token(services, shopper)
    link = f"{services.settings.public_url}/password-reset?token={token}"
    assert link in text
    assert f'href="{link}"' in html
    assert "If you didn't ask, ignore this email" in " ".join(html.split())
    assert email["To"] == shopper.email
    assert email["Message-ID"] == message.message_id
    assert "If you didn't ask, ignore this email" in text
    assert "one hour" in text
    [reset] = await rows(services, password_resets)
    assert reset.token_hash == account_mail.token_hash(TEST_SECRET_KEY, token)


async def test_the_token_is_in_no_row_of_any_table(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Stored hashed: after asking (and rendering the email), no column of any table
    holds the token, as text or as bytes."""
    shopper = await sign_up(client)
    await ask(client, shopper.email)
    [message] = await messages(services, MessageKind.PASSWORD_RESET)
    await render(services, message)
    token = await newest_token(services, shopper)

    dump = []
    for table in metadata.sorted_tables:
        for row in await rows(services, table):
            for value in row:
                if isinstance(value, bytes | memoryview):
                    raw = bytes(value)
                    dump += [raw.hex(), raw.decode("latin-1")]
                else:
                    dump.append(str(value))
    everything = "\n".join(dump)
    assert shopper.email in everything, "the dump is not what it claims to be"
    assert token not in everything
    assert token.encode().hex() not in everything


# --- using the link -------------------------------------------------------------------


async def test_the_link_changes_the_password_once_and_ends_every_session(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a shopper logged in twice, using the link: 204; both sessions are ended;
    the new password logs in and the old one does not; the link is refused the second
    time; the "password changed" notice goes to the account's address."""
    shopper = await sign_up(client)
    second = await log_in(client, shopper.email, PASSWORD)
    await ask(client, shopper.email)
    token = await newest_token(services, shopper)

    used = await confirm(client, token, NEW_PASSWORD)

    assert used.status_code == 204, used.text
    for auth in (shopper.auth, {"Authorization": f"Bearer {second.json()['token']}"}):
        assert (await client.get("/v1/me", headers=auth)).status_code == 401
    assert (await log_in(client, shopper.email, PASSWORD)).status_code == 401
    assert (await log_in(client, shopper.email, NEW_PASSWORD)).status_code == 201
    assert_problem(await confirm(client, token, "yet another password"), 409, "invalid_state",
                   param="token")  # fmt: skip
    assert (await log_in(client, shopper.email, NEW_PASSWORD)).status_code == 201
    [notice] = await messages(services, MessageKind.PASSWORD_CHANGED)
    assert notice.recipient == shopper.email
    text, html = parts(await render(services, notice))
    assert "was changed" in text
    assert "Every device that was logged in has been logged out" in text
    assert "/forgot-password" in html


async def test_two_uses_of_one_link_at_once_change_the_password_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Two tabs racing with one link: exactly one request changes the password, the
    other is refused with invalid_state, and the password is the winner's."""
    shopper = await sign_up(client)
    await ask(client, shopper.email)
    token = await newest_token(services, shopper)

    answers = await burst(
        confirm(client, token, "first tab's password"),
        confirm(client, token, "second tab's password"),
    )

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [204, 409], [answer.text for answer in answers]
    winner = "first tab's password" if answers[0].status_code == 204 else "second tab's password"
    loser = "second tab's password" if winner.startswith("first") else "first tab's password"
    assert (await log_in(client, shopper.email, winner)).status_code == 201
    assert (await log_in(client, shopper.email, loser)).status_code == 401
    assert len(await messages(services, MessageKind.PASSWORD_CHANGED)) == 1


async def test_a_link_works_for_one_hour(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """A link used 59 minutes after it was asked for works; one used an hour and a
    second after is refused, and its email is no longer sent."""
    early, late = await sign_up(client), await sign_up(client)
    await ask(client, early.email)
    early_token = await newest_token(services, early)
    clock.advance(timedelta(minutes=59))
    assert (await confirm(client, early_token, NEW_PASSWORD)).status_code == 204

    await ask(client, late.email)
    late_token = await newest_token(services, late)
    clock.advance(timedelta(hours=1, seconds=1))
    refused = await confirm(client, late_token, NEW_PASSWORD)

    assert_problem(refused, 409, "invalid_state", param="token")
    assert (await log_in(client, late.email, PASSWORD)).status_code == 201


async def test_only_the_newest_link_works(client: httpx.AsyncClient, services: Services) -> None:
    """Asking twice: the first link is refused (and its email, if not sent yet, is not
    sent); the second works."""
    shopper = await sign_up(client)
    await ask(client, shopper.email)
    first = await newest_token(services, shopper)
    await ask(client, shopper.email)
    second = await newest_token(services, shopper)
    first_message, second_message = sorted(
        await messages(services, MessageKind.PASSWORD_RESET), key=lambda m: m.id
    )

    with pytest.raises(NotToBeSent):
        await render(services, first_message)
    assert second in parts(await render(services, second_message))[0]
    assert_problem(await confirm(client, first, NEW_PASSWORD), 409, "invalid_state")
    assert (await confirm(client, second, NEW_PASSWORD)).status_code == 204
    with pytest.raises(NotToBeSent):
        await render(services, second_message)


async def test_an_email_not_sent_within_the_hour_is_not_sent(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """A reset whose hour is over by the time the sender gets to it is given up."""
    shopper = await sign_up(client)
    clock.advance(timedelta(hours=-2))
    await ask(client, shopper.email)
    [message] = await messages(services, MessageKind.PASSWORD_RESET)

    with pytest.raises(NotToBeSent, match="expired"):
        await render(services, message)


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"email": "not an address"}, "email"),
        ({"email": "a" * 250 + "@example.com"}, "email"),
        ({"email": 12}, "email"),
        ({}, "email"),
        ({"email": "ok@example.com", "extra": 1}, "extra"),
    ],
)
async def test_asking_with_bad_input_is_422_and_writes_nothing(
    client: httpx.AsyncClient, services: Services, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/password-resets", json=body)

    assert_problem(response, 422, "validation_error", param=param)
    assert await rows(services, outbox_messages) == []


@pytest.mark.parametrize(
    ("token", "password", "status", "code", "param"),
    [
        ("use-the-real-one", "short", 422, "validation_error", "password"),
        ("use-the-real-one", "x" * 257, 422, "validation_error", "password"),
        ("not a token", NEW_PASSWORD, 409, "invalid_state", "token"),
        ("A" * 43, NEW_PASSWORD, 409, "invalid_state", "token"),
        ("A" * 129, NEW_PASSWORD, 422, "validation_error", "token"),
        ("", NEW_PASSWORD, 422, "validation_error", "token"),
    ],
)
async def test_confirming_with_bad_input_changes_nothing(
    client: httpx.AsyncClient,
    services: Services,
    token: str,
    password: str,
    status: int,
    code: str,
    param: str,
) -> None:
    """A weak or overlong password, or a token that is no token, is refused with its
    field named; the password stays, the sessions go on and the real link still works."""
    shopper = await sign_up(client)
    await ask(client, shopper.email)
    real = await newest_token(services, shopper)

    refused = await confirm(client, real if token == "use-the-real-one" else token, password)

    assert_problem(refused, status, code, param=param)
    assert (await client.get("/v1/me", headers=shopper.auth)).status_code == 200
    assert (await log_in(client, shopper.email, PASSWORD)).status_code == 201
    assert (await confirm(client, real, NEW_PASSWORD)).status_code == 204


async def test_asking_too_often_for_one_address_is_limited_alike_with_or_without_account(
    client: httpx.AsyncClient,
) -> None:
    """Five links an hour per email (the default): the sixth is 429 with Retry-After,
    for a customer's address and an unknown one alike."""
    shopper = await sign_up(client)
    for email in (shopper.email, new_email()):
        for _ in range(5):
            assert (await ask(client, email)).status_code == 202
        refused = await ask(client, email)
        assert_problem(refused, 429, "too_many_attempts")
        assert int(refused.headers["retry-after"]) > 0


async def test_the_reset_email_is_queued_as_enqueue_queues_any_message(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The request writes its outbox row with an `INSERT … SELECT` of its own (so that
    it can write nothing without an account): the row is the one `enqueue` would write,
    column for column, but for its id and Message-ID. A column added to the outbox and
    filled by `enqueue` fails here until the reset's insert fills it too."""
    from giftcard.mail.outbox import enqueue

    shopper = await sign_up(client)
    await ask(client, shopper.email)
    [queued] = await rows(services, outbox_messages)

    async with services.db.transaction() as connection:
        twin_id = await enqueue(
            connection,
            kind=MessageKind.PASSWORD_RESET,
            recipient=queued.recipient,
            ref_id=queued.ref_id,
            now=queued.created_at,
        )
    [twin] = await rows(services, outbox_messages, outbox_messages.c.id == twin_id)

    different = {"id", "message_id"}
    assert {k: v for k, v in queued._mapping.items() if k not in different} == {
        k: v for k, v in twin._mapping.items() if k not in different
    }
    assert queued.message_id != twin.message_id


async def test_a_made_up_token_costs_no_password_hashing(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The confirm endpoint takes no credentials, so a token that cannot be used is
    refused before the new password is hashed: nobody makes the server spend Argon2
    time on made-up tokens."""
    from giftcard import passwords

    hashed: list[str] = []
    real_hasher = passwords._hasher

    class Counting:
        def hash(self, password: str) -> str:
            hashed.append(password)
            return str(real_hasher.hash(password))

    monkeypatch.setattr(passwords, "_hasher", Counting())

    refused = await confirm(client, "A" * 43, NEW_PASSWORD)

    assert_problem(refused, 409, "invalid_state", param="token")
    assert hashed == []
