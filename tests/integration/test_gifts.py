"""E-gift cards over HTTP, on SQLite and PostgreSQL: buying one (a funded active card, the
gift and its outbox message in one transaction), every bad input refused with nothing
created, idempotent retries, who may see and resend a gift, the same code in a resent
email, the redeemed status, the email itself (both parts, escaping, the grouped code, the
link, the amount as each store writes it) and paging through /v1/me/gifts."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select, update

from giftcard import codes, gifts, ids
from giftcard.clock import FrozenClock
from giftcard.customers import Role, create_staff
from giftcard.db.tables import (
    audit_log,
    card_events,
    cards,
    idempotency_keys,
    ledger_accounts,
    outbox_messages,
)
from giftcard.db.tables import gifts as gifts_table
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.mail import outbox
from giftcard.mail.compose import HeaderRefused, compose
from giftcard.mail.messages import NotToBeSent, OutboxMessage, handler_for
from giftcard.mail.outbox import MessageKind
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import TEST_SECRET_KEY, Shopper, api_key, assert_problem, sign_up

CODE = re.compile(r"[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}")
GIFT = {
    "amount": 2500,
    "region": "US",
    "recipient_email": "sam@example.com",
    "recipient_name": "Sam",
    "sender_name": "Alex",
    "message": "Happy birthday!",
}


async def buy(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/gifts", json={**GIFT, **fields}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def counts(services: Services) -> tuple[int, int, int]:
    """How many cards, gifts and outbox messages exist."""
    async with services.db.transaction(write=False) as connection:
        found = []
        for table in (cards, gifts_table, outbox_messages):
            query = select(func.count()).select_from(table)
            found.append(int((await connection.execute(query)).scalar_one()))
    return found[0], found[1], found[2]


async def messages_of(services: Services, gift_id: str) -> list[OutboxMessage]:
    number = ids.parse_id(ids.GIFT, gift_id)
    async with services.db.transaction(write=False) as connection:
        rows = (
            await connection.execute(
                select(outbox_messages)
                .where(outbox_messages.c.kind == "gift", outbox_messages.c.ref_id == number)
                .order_by(outbox_messages.c.id)
            )
        ).all()
    return [OutboxMessage.from_row(row) for row in rows]


async def render_email(services: Services, message: OutboxMessage) -> email.message.EmailMessage:
    """The email the sender would send for `message`, parsed back from its bytes."""
    handler = handler_for(message.kind)
    async with services.db.transaction(write=False) as connection:
        content = await handler.render(connection, message, services.settings)
    composed = compose(
        message, content, sender=services.settings.mail_from, date=services.clock.now()
    )
    parsed = email.message_from_bytes(composed.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def parts(message: email.message.EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


async def mark_delivered(services: Services, message: OutboxMessage) -> None:
    """What the sender does once a message was accepted by the mail server."""
    handler = handler_for(message.kind)
    async with services.db.transaction() as connection:
        await connection.execute(
            update(outbox_messages)
            .where(outbox_messages.c.id == message.id)
            .values(status="sent", sent_at=services.clock.now())
        )
        await handler.sent(connection, message, services.clock.now())


async def staff_token(client: httpx.AsyncClient, services: Services, role: Role) -> dict[str, str]:
    address = f"{role.value}-{id(client)}@staff.example.com"
    await create_staff(
        services.db, email=address, password="staff password 1", role=role, clock=services.clock
    )
    session = await client.post(
        "/v1/sessions", json={"email": address, "password": "staff password 1"}
    )
    assert session.status_code == 201, session.text
    return {"Authorization": f"Bearer {session.json()['token']}"}


async def redeem(client: httpx.AsyncClient, shopper: Shopper, code: str) -> httpx.Response:
    return await client.post("/v1/me/redemptions", json={"code": code}, headers=shopper.auth)


# --- buying -------------------------------------------------------------------------


async def test_a_gift_is_an_active_funded_card_with_its_email_queued(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a merchant key, when it buys a gift, then 201 names the gift and its card
    (never a code), the card is active and funded with the amount, and one gift email
    waits in the outbox for now."""
    merchant = await api_key(services, "merchant")
    buyer = await sign_up(client)

    gift = await buy(client, merchant, purchaser_customer_id=buyer.id)

    assert re.fullmatch(r"gift_[0-9a-z]{13}", gift["id"])
    assert gift["status"] == "scheduled"
    assert gift["card"]["last4"]
    assert gift["card"]["serial"]
    assert gift["amount"] == 2500
    assert gift["currency"] == "USD"
    assert gift["purchaser_customer_id"] == buyer.id
    assert "code" not in gift
    assert "code" not in gift["card"]
    async with services.db.transaction(write=False) as connection:
        card = (
            await connection.execute(select(cards).where(cards.c.serial == gift["card"]["serial"]))
        ).one()
        account = (
            await connection.execute(
                select(ledger_accounts).where(ledger_accounts.c.id == card.account_id)
            )
        ).one()
    assert card.state == "active"
    assert card.kind == "digital"
    assert account.balance == 2500
    [message] = await messages_of(services, gift["id"])
    assert message.recipient == "sam@example.com"
    assert await counts(services) == (1, 1, 1)


async def test_the_code_in_the_email_redeems_the_gift_and_the_gift_reads_redeemed(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a sent gift, when the recipient redeems the code from its email, then the
    balance holds the amount and the gift's status is redeemed; a resend is then
    refused with invalid_state and queues nothing."""
    merchant = await api_key(services, "merchant")
    gift = await buy(client, merchant)
    [message] = await messages_of(services, gift["id"])
    text, _ = parts(await render_email(services, message))
    code = re.search(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}", text)
    assert code is not None
    await mark_delivered(services, message)
    recipient = await sign_up(client)

    redeemed = await redeem(client, recipient, code.group(0))

    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["amount"] == 2500
    read = await client.get(f"/v1/gifts/{gift['id']}", headers=merchant)
    assert read.json()["status"] == "redeemed"
    support = await api_key(services, "support")
    again = await client.post(f"/v1/gifts/{gift['id']}/resend", headers=support)
    assert_problem(again, 409, "invalid_state")
    assert len(await messages_of(services, gift["id"])) == 1
    assert (await verify(services.db)).problems == []


async def test_a_failure_after_the_card_was_written_leaves_neither_card_nor_gift(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the outbox refusing to take the message (after the card and the gift rows
    were inserted in the transaction), when a gift is bought, then the request fails and
    no card, gift, card account or message is left: no card without its email."""
    merchant = await api_key(services, "merchant")

    async def broken(*_: Any, **__: Any) -> int:
        raise GiftcardError(ErrorCode.SERVICE_UNAVAILABLE, "The outbox is unavailable.")

    monkeypatch.setattr(outbox, "enqueue", broken)
    response = await client.post("/v1/gifts", json=GIFT, headers=merchant)

    assert_problem(response, 503, "service_unavailable")
    assert await counts(services) == (0, 0, 0)
    async with services.db.transaction(write=False) as connection:
        events = (await connection.execute(select(func.count()).select_from(card_events))).one()
    assert events[0] == 0


async def test_a_scheduled_gift_waits_in_the_outbox_until_its_time(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a deliver_at in another time zone two days ahead, then the gift keeps it
    (as the same instant) and its message is due only then."""
    merchant = await api_key(services, "merchant")
    tokyo = (
        (clock.now() + timedelta(days=2)).replace(microsecond=0).astimezone(ZoneInfo("Asia/Tokyo"))
    )

    gift = await buy(client, merchant, deliver_at=tokyo.isoformat())

    assert datetime.fromisoformat(gift["deliver_at"]) == tokyo
    async with services.db.transaction(write=False) as connection:
        due = (await connection.execute(select(outbox_messages.c.next_attempt_at))).scalar_one()
    assert due == tokyo


async def test_an_idempotent_retry_buys_one_gift(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an Idempotency-Key, when the same purchase is sent twice, then the second
    answer is the first one replayed and one card, gift and email exist; the same key
    with another body is idempotency_key_reused. The gift's code is written nowhere in
    the database, the stored answer included."""
    merchant = await api_key(services, "merchant")
    headers = {**merchant, "Idempotency-Key": "gift-order-1001"}

    first = await client.post("/v1/gifts", json=GIFT, headers=headers)
    second = await client.post("/v1/gifts", json=GIFT, headers=headers)
    other = await client.post("/v1/gifts", json={**GIFT, "amount": 5000}, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.json() == first.json()
    assert_problem(other, 409, "idempotency_key_reused")
    assert await counts(services) == (1, 1, 1)
    [message] = await messages_of(services, first.json()["id"])
    code = CODE.search(parts(await render_email(services, message))[0])
    assert code is not None
    assert not await stored_anywhere(services, code.group(0))


async def stored_anywhere(services: Services, code: str) -> list[str]:
    """Where the code (with or without its dashes) is written in the database."""
    forms = {code, code.replace("-", "")}
    found = []
    async with services.db.transaction(write=False) as connection:
        for table in (gifts_table, outbox_messages, cards, card_events, idempotency_keys):
            for row in (await connection.execute(select(table))).all():
                text = " ".join(str(value) for value in row)
                found += [f"{table.name}: {text}" for form in forms if form in text]
    return found


# --- bad input ----------------------------------------------------------------------

BAD_INPUT = [
    ({"recipient_email": "not an address"}, 422, "validation_error", "recipient_email"),
    ({"recipient_email": "sam@"}, 422, "validation_error", "recipient_email"),
    (
        {"recipient_email": "sam@example.com\r\nBcc: x@example.com"},
        422,
        "validation_error",
        "recipient_email",
    ),
    ({"recipient_name": "Sam\nBcc: x@example.com"}, 422, "validation_error", "recipient_name"),
    ({"recipient_name": "x" * 201}, 422, "validation_error", "recipient_name"),
    ({"sender_name": "Alex\r\nBcc: x@example.com"}, 422, "validation_error", "sender_name"),
    ({"sender_name": "Alex\u2028Bcc"}, 422, "validation_error", "sender_name"),
    ({"sender_name": "   "}, 422, "validation_error", "sender_name"),
    ({"sender_name": ""}, 422, "validation_error", "sender_name"),
    ({"sender_name": None}, 422, "validation_error", "sender_name"),
    ({"message": "x" * 1001}, 422, "validation_error", "message"),
    ({"message": "nul \x00 inside"}, 422, "validation_error", "message"),
    ({"deliver_at": "2026-13-01T09:00:00Z"}, 422, "validation_error", "deliver_at"),
    ({"deliver_at": "tomorrow"}, 422, "validation_error", "deliver_at"),
    ({"deliver_at": "PAST"}, 422, "validation_error", "deliver_at"),
    ({"deliver_at": "TOO_FAR"}, 422, "validation_error", "deliver_at"),
    ({"deliver_at": "NAIVE"}, 422, "validation_error", "deliver_at"),
    ({"amount": 99}, 422, "validation_error", "amount"),
    ({"amount": 200_001}, 422, "validation_error", "amount"),
    ({"amount": 25.0}, 422, "validation_error", "amount"),
    ({"amount": "2500"}, 422, "validation_error", "amount"),
    ({"amount": 0}, 422, "validation_error", "amount"),
    ({"region": "XX"}, 422, "validation_error", "region"),
    ({"region": "JP", "amount": 99}, 422, "validation_error", "amount"),
    ({"currency": "EUR"}, 409, "currency_mismatch", "currency"),
    (
        {"purchaser_customer_id": ids.format_id(ids.CUSTOMER, 999999)},
        404,
        "not_found",
        "purchaser_customer_id",
    ),
    (
        {"purchaser_customer_id": ids.format_id(ids.CARD, 1)},
        404,
        "not_found",
        "purchaser_customer_id",
    ),
    ({"surprise": True}, 422, "validation_error", "surprise"),
]


def _deliver_at(token: str, now: datetime) -> str:
    return {
        "PAST": (now - timedelta(minutes=2)).isoformat(),
        "TOO_FAR": (now + timedelta(days=366)).isoformat(),
        "NAIVE": (now + timedelta(days=1)).replace(tzinfo=None).isoformat(),
    }.get(token, token)


@pytest.mark.parametrize(("fields", "status", "code", "param"), BAD_INPUT)
async def test_bad_input_is_refused_naming_its_field_and_creates_nothing(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    fields: dict[str, Any],
    status: int,
    code: str,
    param: str,
) -> None:
    """Given one bad field, then the purchase is a problem naming it, and no card, gift
    or message exists afterwards."""
    merchant = await api_key(services, "merchant")
    body = {**GIFT, **fields}
    if isinstance(body.get("deliver_at"), str):
        body["deliver_at"] = _deliver_at(body["deliver_at"], clock.now())

    response = await client.post("/v1/gifts", json=body, headers=merchant)

    assert_problem(response, status, code, param=param, why=str(fields))
    assert await counts(services) == (0, 0, 0)


async def test_limits_are_worded_in_the_store_s_format_and_their_edges_pass(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """The amount refusal speaks the store's money (¥100 to ¥200,000; 1,00 € to
    2.000,00 €); the smallest and largest amounts, a naive time's hint, a time 59 seconds
    ago and one 365 days ahead are accepted or refused exactly at their edges."""
    merchant = await api_key(services, "merchant")

    yen = await client.post(
        "/v1/gifts", json={**GIFT, "region": "JP", "amount": 99}, headers=merchant
    )
    euro = await client.post(
        "/v1/gifts", json={**GIFT, "region": "DE", "amount": 200_001}, headers=merchant
    )
    naive = await client.post(
        "/v1/gifts", json={**GIFT, "deliver_at": "2030-01-01T09:00:00"}, headers=merchant
    )

    assert "¥100 to ¥200,000" in assert_problem(yen, 422, "validation_error")["detail"]
    assert "1,00\xa0€ to 2.000,00\xa0€" in assert_problem(euro, 422, "validation_error")["detail"]
    assert "time zone" in assert_problem(naive, 422, "validation_error")["detail"]
    for fields in (
        {"region": "JP", "amount": 100},
        {"region": "JP", "amount": 200_000},
        {"amount": 100},
        {"deliver_at": (clock.now() - timedelta(seconds=59)).isoformat()},
        {"deliver_at": (clock.now() + timedelta(days=365)).isoformat()},
    ):
        await buy(client, merchant, **fields)
    assert await counts(services) == (5, 5, 5)


# --- who may see and resend ---------------------------------------------------------


async def test_who_may_buy_read_and_resend_a_gift(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Merchant and admin keys and admin staff buy; support may not. Merchant, admin,
    support and the buyer read a gift; another customer gets 404 (nothing revealed) and
    nobody at all 401. Support, admin and the buyer resend; a merchant key may not, and
    another customer gets 404. The buyer never sees a mail server's error."""
    merchant = await api_key(services, "merchant")
    admin = await api_key(services, "admin")
    support = await api_key(services, "support")
    support_staff = await staff_token(client, services, Role.SUPPORT)
    admin_staff = await staff_token(client, services, Role.ADMIN)
    buyer = await sign_up(client)
    stranger = await sign_up(client)

    assert (await client.post("/v1/gifts", json=GIFT, headers=admin)).status_code == 201
    assert (await client.post("/v1/gifts", json=GIFT, headers=admin_staff)).status_code == 201
    assert_problem(await client.post("/v1/gifts", json=GIFT, headers=support), 403, "forbidden")
    assert_problem(await client.post("/v1/gifts", json=GIFT, headers=buyer.auth), 403, "forbidden")
    assert_problem(await client.post("/v1/gifts", json=GIFT), 401, "unauthorized")
    gift = await buy(client, merchant, purchaser_customer_id=buyer.id)
    path = f"/v1/gifts/{gift['id']}"
    [message] = await messages_of(services, gift["id"])
    handler = handler_for(MessageKind.GIFT)
    async with services.db.transaction() as connection:
        await handler.failed(connection, message, "550 mailbox unavailable", services.clock.now())

    for who in (merchant, admin, support, support_staff):
        read = await client.get(path, headers=who)
        assert read.status_code == 200, read.text
        assert read.json()["status"] == "failed"
        assert read.json()["last_error"] == "550 mailbox unavailable"
    own = await client.get(path, headers=buyer.auth)
    assert own.status_code == 200
    assert own.json()["last_error"] is None
    assert own.json()["status"] == "failed"
    assert_problem(await client.get(path, headers=stranger.auth), 404, "not_found")
    assert_problem(await client.get(path), 401, "unauthorized")
    assert_problem(await client.get("/v1/gifts/gift_999999", headers=admin), 404, "not_found")

    assert_problem(await client.post(path + "/resend", headers=merchant), 403, "forbidden")
    assert_problem(await client.post(path + "/resend", headers=stranger.auth), 404, "not_found")
    assert_problem(await client.post(path + "/resend"), 401, "unauthorized")
    resent = await client.post(path + "/resend", headers=buyer.auth)
    assert resent.status_code == 200, resent.text
    assert resent.json()["status"] == "scheduled"
    # Its email is on its way: a second resend is refused until it went out.
    assert_problem(await client.post(path + "/resend", headers=support), 409, "invalid_state")
    [_, new] = await messages_of(services, gift["id"])
    await mark_delivered(services, new)
    for who in (support, admin, support_staff):
        again = await client.post(path + "/resend", headers=who)
        assert again.status_code == 200, again.text
        latest = (await messages_of(services, gift["id"]))[-1]
        await mark_delivered(services, latest)
    assert len(await messages_of(services, gift["id"])) == 5


async def test_a_resend_carries_the_same_code_under_a_new_message_id(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a gift whose email was sent, when support resends it, then a second message
    is queued for now; both render the same code, with different Message-IDs, and the
    gift reads scheduled with deliver_at now."""
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    gift = await buy(client, merchant, deliver_at=(clock.now() + timedelta(days=3)).isoformat())
    [first] = await messages_of(services, gift["id"])
    await mark_delivered(services, first)
    assert (await client.get(f"/v1/gifts/{gift['id']}", headers=merchant)).json()[
        "status"
    ] == "sent"
    clock.advance(timedelta(days=4))

    resent = await client.post(
        f"/v1/gifts/{gift['id']}/resend", headers={**support, "Idempotency-Key": "r1"}
    )
    replay = await client.post(
        f"/v1/gifts/{gift['id']}/resend", headers={**support, "Idempotency-Key": "r1"}
    )

    assert resent.status_code == 200, resent.text
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert datetime.fromisoformat(resent.json()["deliver_at"]) == clock.now()
    [first, second] = await messages_of(services, gift["id"])
    one, two = await render_email(services, first), await render_email(services, second)
    assert one["Message-ID"] != two["Message-ID"]
    code_of = re.compile(r"[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}")
    assert code_of.findall(parts(one)[0]) == code_of.findall(parts(two)[0])


async def test_a_cancelled_or_frozen_card_is_not_resent_nor_announced(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a gift whose card support froze or cancelled, then its queued email is not
    sent (NotToBeSent: a code that does not work is not announced) and a resend is
    invalid_state, queuing nothing; once a hold is lifted the gift can be resent."""
    merchant = await api_key(services, "merchant")
    admin = await api_key(services, "admin")
    bought = []
    for state in ("frozen", "cancelled"):
        gift = await buy(client, merchant)
        bought.append(gift["id"])
        [message] = await messages_of(services, gift["id"])
        async with services.db.transaction() as connection:
            await connection.execute(
                update(cards).where(cards.c.serial == gift["card"]["serial"]).values(state=state)
            )

        with pytest.raises(NotToBeSent):
            await render_email(services, message)
        await mark_delivered(services, message)
        refused = await client.post(f"/v1/gifts/{gift['id']}/resend", headers=admin)
        assert_problem(refused, 409, "invalid_state", why=state)
        assert len(await messages_of(services, gift["id"])) == 1

    async with services.db.transaction() as connection:
        await connection.execute(
            update(cards).where(cards.c.state == "frozen").values(state="active")
        )
    # The first gift's card was the frozen one: its hold lifted, it is resent.
    unfrozen = await client.post(f"/v1/gifts/{bought[0]}/resend", headers=admin)
    assert unfrozen.status_code == 200, unfrozen.text


# --- the email ----------------------------------------------------------------------


async def test_the_email_has_both_parts_escaped_with_the_grouped_code_and_link(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given names and a message holding HTML and script, then the email's subject names
    the sender and amount; both parts carry the amount, the code in four groups and the
    redeem link; the HTML part shows the markup as text and the message's lines split
    by <br>; nothing in it loads from elsewhere."""
    merchant = await api_key(services, "merchant")
    gift = await buy(
        client,
        merchant,
        sender_name="Alex <b>Bold</b>",
        recipient_name="Sam <script>alert(1)</script>",
        message="Line one <script>alert('x')</script>\nLine two & <i>more</i>",
    )
    [message] = await messages_of(services, gift["id"])

    sent = await render_email(services, message)
    text, html = parts(sent)

    assert sent["Subject"] == "Alex <b>Bold</b> sent you a $25.00 gift card"
    assert sent["To"] == "sam@example.com"
    assert sent["Message-ID"] == message.message_id
    code = re.search(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}", text)
    assert code is not None
    url = f"{services.settings.public_url}/redeem?code={code.group(0)}"
    assert url in text
    assert f'href="{url}"' in html
    assert code.group(0) in html
    assert "$25.00" in text
    assert "$25.00" in html
    assert "Line one <script>alert('x')</script>" in text
    assert "<script>" not in html
    assert "<i>" not in html
    assert "<b>" not in html
    assert "Line one &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;<br>Line two &amp; " in html
    assert "Sam &lt;script&gt;" in html
    assert "Alex &lt;b&gt;Bold&lt;/b&gt;" in html
    assert "Redeem now" in html
    assert "United States store" in html
    assert not re.search(r"""(src|url)\s*[=(]\s*["']?https?:""", html)
    await mark_delivered(services, message)
    assert (await client.get(f"/v1/gifts/{gift['id']}", headers=merchant)).json()[
        "status"
    ] == "sent"


@pytest.mark.parametrize(
    ("region", "amount", "shown"),
    [
        ("US", 2500, "$25.00"),
        ("GB", 2500, "£25.00"),
        ("DE", 2500, "25,00\xa0€"),
        ("FR", 2500, "25,00\xa0€"),
        ("JP", 2500, "¥2,500"),
        ("IN", 250000, "₹2,500.00"),
    ],
)
async def test_the_amount_is_written_as_the_gift_s_store_writes_it(
    client: httpx.AsyncClient, services: Services, region: str, amount: int, shown: str
) -> None:
    merchant = await api_key(services, "merchant")
    gift = await buy(client, merchant, region=region, amount=amount)
    [message] = await messages_of(services, gift["id"])

    sent = await render_email(services, message)

    text, html = parts(sent)
    assert shown in sent["Subject"]
    assert shown in text
    assert shown.replace("\xa0", "&nbsp;") in html or shown in html


async def test_a_line_break_in_a_name_cannot_add_a_header(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Names are refused with a line break at the door (see the bad-input cases); should
    one reach the database anyway, the subject is refused when composing, so no header
    can be added."""
    merchant = await api_key(services, "merchant")
    gift = await buy(client, merchant)
    [message] = await messages_of(services, gift["id"])
    async with services.db.transaction() as connection:
        await connection.execute(
            update(gifts_table).values(sender_name="Alex\r\nBcc: everyone@example.com")
        )

    with pytest.raises(HeaderRefused):
        await render_email(services, message)


# --- the buyer's list ---------------------------------------------------------------


async def test_me_gifts_lists_the_buyer_s_gifts_newest_first_in_pages(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given five gifts bought for a customer and one for another, then /v1/me/gifts
    pages through the five, newest first, two at a time, without the other's."""
    merchant = await api_key(services, "merchant")
    buyer = await sign_up(client)
    other = await sign_up(client)
    made = [
        (await buy(client, merchant, purchaser_customer_id=buyer.id, amount=1000 + n))["id"]
        for n in range(5)
    ]
    await buy(client, merchant, purchaser_customer_id=other.id)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": 2, **({"starting_after": cursor} if cursor else {})}
        page = await client.get("/v1/me/gifts", params=query, headers=buyer.auth)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [item["id"] for item in body["data"]]
        assert all(item["last_error"] is None for item in body["data"])
        pages += 1
        if not body["has_more"]:
            break
        cursor = body["data"][-1]["id"]
    assert seen == list(reversed(made))
    assert pages == 3
    bad = await client.get(
        "/v1/me/gifts",
        params={"starting_after": ids.format_id(ids.TRANSACTION, 1)},
        headers=buyer.auth,
    )
    assert_problem(bad, 422, "validation_error", param="starting_after")
    limit = await client.get("/v1/me/gifts", params={"limit": 101}, headers=buyer.auth)
    assert_problem(limit, 422, "validation_error")
    merchant_list = await client.get("/v1/me/gifts", headers=merchant)
    assert_problem(merchant_list, 403, "forbidden")


def test_derived_codes_are_valid_codes() -> None:
    """A gift's code passes the same check as any typed code."""
    seed = codes.new_seed()
    code = codes.derive_code(TEST_SECRET_KEY, seed)
    assert codes.check_code(codes.format_code(code)) == code
    assert gifts.redeem_link is not None


async def test_two_resends_at_once_queue_one_email(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a sent gift, when support and its buyer resend it at the same moment, then
    one resend queues a new email and the other is refused with invalid_state: the gift's
    guarded status update settles the race, not a read before it."""
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    buyer = await sign_up(client)
    gift = await buy(client, merchant, purchaser_customer_id=buyer.id)
    [message] = await messages_of(services, gift["id"])
    await mark_delivered(services, message)
    assert isinstance(services.clock, FrozenClock)
    services.clock.advance(gifts.BUYER_RESEND_INTERVAL)  # the buyer may resend by now
    path = f"/v1/gifts/{gift['id']}/resend"

    answers = await asyncio.gather(
        *(client.post(path, headers=who) for who in (support, buyer.auth, support, buyer.auth))
    )

    assert sorted(answer.status_code for answer in answers) == [200, 409, 409, 409]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "invalid_state")
    assert len(await messages_of(services, gift["id"])) == 2


async def test_a_buyer_resends_at_most_once_a_quarter_hour_and_support_any_time(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a gift whose email just went out, its buyer's resend is refused with
    too_many_attempts and a Retry-After until a quarter of an hour has passed (the
    recipient's mailbox is not the buyer's to fill), while support, answering the
    recipient, resends at once; nothing is queued by a refused resend."""
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    buyer = await sign_up(client)
    gift = await buy(client, merchant, purchaser_customer_id=buyer.id)
    [message] = await messages_of(services, gift["id"])
    await mark_delivered(services, message)
    path = f"/v1/gifts/{gift['id']}/resend"
    assert isinstance(services.clock, FrozenClock)

    services.clock.advance(timedelta(minutes=14, seconds=30))
    refused = await client.post(path, headers=buyer.auth)
    assert_problem(refused, 429, "too_many_attempts")
    assert refused.headers["Retry-After"] == "30"
    assert "in 1 minute" in refused.json()["detail"]
    assert len(await messages_of(services, gift["id"])) == 1

    by_support = await client.post(path, headers=support)
    assert by_support.status_code == 200, by_support.text
    [_, second] = await messages_of(services, gift["id"])
    await mark_delivered(services, second)
    assert_problem(await client.post(path, headers=buyer.auth), 429, "too_many_attempts")

    services.clock.advance(gifts.BUYER_RESEND_INTERVAL)
    by_buyer = await client.post(path, headers=buyer.auth)
    assert by_buyer.status_code == 200, by_buyer.text
    assert len(await messages_of(services, gift["id"])) == 3


# --- support: resends in the audit log, correcting the recipient --------------------


async def gift_audit(services: Services, action: str) -> list[Any]:
    async with services.db.transaction(write=False) as connection:
        return list(
            (
                await connection.execute(
                    select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id)
                )
            ).all()
        )


def code_in(message: email.message.EmailMessage) -> str:
    found = CODE.search(parts(message)[0])
    assert found is not None
    return found.group(0)


async def test_a_staff_or_key_resend_is_audited_and_a_buyer_s_is_not(
    client: httpx.AsyncClient, services: Services
) -> None:
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    buyer = await sign_up(client)
    gift = await buy(client, merchant, purchaser_customer_id=buyer.id)
    [message] = await messages_of(services, gift["id"])
    await mark_delivered(services, message)

    by_support = await client.post(f"/v1/gifts/{gift['id']}/resend", headers=support)
    assert by_support.status_code == 200, by_support.text
    [entry] = await gift_audit(services, "gift.resend")
    assert entry.target == gift["id"]
    assert entry.actor.startswith("api_key:")
    assert entry.actor_role == "support"
    assert json.loads(entry.detail)["recipient_email"] == "sam@example.com"
    assert entry.request_id == by_support.headers["Request-Id"]

    [_, second] = await messages_of(services, gift["id"])
    await mark_delivered(services, second)
    assert isinstance(services.clock, FrozenClock)
    services.clock.advance(gifts.BUYER_RESEND_INTERVAL)
    by_buyer = await client.post(f"/v1/gifts/{gift['id']}/resend", headers=buyer.auth)
    assert by_buyer.status_code == 200, by_buyer.text
    assert len(await gift_audit(services, "gift.resend")) == 1

    refused = await client.post(f"/v1/gifts/{gift['id']}/resend", headers=support)
    assert_problem(refused, 409, "invalid_state")
    assert len(await gift_audit(services, "gift.resend")) == 1


async def test_an_unsent_gift_s_recipient_is_corrected_and_its_waiting_email_goes_there(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    deliver_at = clock.now() + timedelta(days=2)
    gift = await buy(client, merchant, deliver_at=deliver_at.isoformat())
    [before] = await messages_of(services, gift["id"])
    code_before = code_in(await render_email(services, before))

    corrected = await client.post(
        f"/v1/support/gifts/{gift['id']}/recipient",
        json={"recipient_email": " Samantha@Example.com", "recipient_name": "Samantha"},
        headers=support,
    )

    assert corrected.status_code == 200, corrected.text
    body = corrected.json()
    assert body["recipient_email"] == "Samantha@example.com"
    assert body["recipient_name"] == "Samantha"
    assert body["status"] == "scheduled"
    assert datetime.fromisoformat(body["deliver_at"]) == deliver_at
    assert body["card"] == gift["card"]
    [message] = await messages_of(services, gift["id"])
    assert message.recipient == "Samantha@example.com"
    assert code_in(await render_email(services, message)) == code_before
    [entry] = await gift_audit(services, "gift.correct_recipient")
    assert entry.target == gift["id"]
    assert json.loads(entry.detail) == {
        "card_last4": gift["card"]["last4"],
        "from": "sam@example.com",
        "new_code": False,
        "to": "Samantha@example.com",
    }


async def test_a_failed_gift_is_sent_again_to_the_corrected_address(
    client: httpx.AsyncClient, services: Services
) -> None:
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    gift = await buy(client, merchant, recipient_email="sam@exmaple.com")
    async with services.db.transaction() as connection:
        await connection.execute(update(outbox_messages).values(status="failed"))
        await connection.execute(
            update(gifts_table).values(status="failed", last_error="550 no such user")
        )

    corrected = await client.post(
        f"/v1/support/gifts/{gift['id']}/recipient",
        json={"recipient_email": "sam@example.com"},
        headers=support,
    )

    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["status"] == "scheduled"
    assert corrected.json()["card"]["last4"] == gift["card"]["last4"]
    [_, message] = await messages_of(services, gift["id"])
    assert message.recipient == "sam@example.com"
    assert message.attempts == 0


async def test_a_sent_unredeemed_gift_gets_a_new_code_at_the_new_address(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The wrong address saw the old code: the card is re-keyed in the same transaction
    (same card and value), the old code no longer redeems, the new one does."""
    merchant = await api_key(services, "merchant")
    agent = await staff_token(client, services, Role.SUPPORT)
    gift = await buy(client, merchant, recipient_email="wrong@example.com")
    [first] = await messages_of(services, gift["id"])
    old_code = code_in(await render_email(services, first))
    await mark_delivered(services, first)

    corrected = await client.post(
        f"/v1/support/gifts/{gift['id']}/recipient",
        json={"recipient_email": "right@example.com"},
        headers=agent,
    )

    assert corrected.status_code == 200, corrected.text
    body = corrected.json()
    assert body["status"] == "scheduled"
    assert body["card"]["serial"] == gift["card"]["serial"]
    [_, second] = await messages_of(services, gift["id"])
    assert second.recipient == "right@example.com"
    new_code = code_in(await render_email(services, second))
    assert new_code != old_code
    assert body["card"]["last4"] == codes.code_last4(codes.normalize_code(new_code))
    [entry] = await gift_audit(services, "gift.correct_recipient")
    assert json.loads(entry.detail)["new_code"] is True
    assert old_code not in entry.detail
    assert new_code not in entry.detail
    someone = await sign_up(client)
    assert_problem(await redeem(client, someone, old_code), 404, "code_not_found")
    redeemed = await redeem(client, someone, new_code)
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["amount"] == 2500
    assert (await verify(services.db)).problems == []


async def test_a_redeemed_frozen_or_busy_gift_s_recipient_cannot_be_corrected(
    client: httpx.AsyncClient, services: Services
) -> None:
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    gift = await buy(client, merchant)
    [message] = await messages_of(services, gift["id"])
    path = f"/v1/support/gifts/{gift['id']}/recipient"
    new = {"recipient_email": "other@example.com"}

    # A sender holds the email right now: it may be rendering it for the old address.
    async with services.db.transaction() as connection:
        await connection.execute(
            update(outbox_messages).values(
                claim_token="t", claimed_until=services.clock.now() + timedelta(minutes=1)
            )
        )
    assert_problem(await client.post(path, json=new, headers=support), 409, "invalid_state")

    code = code_in(await render_email(services, message))
    await mark_delivered(services, message)
    redeemed = await redeem(client, await sign_up(client), code)
    assert redeemed.status_code == 201, redeemed.text
    refused = await client.post(path, json=new, headers=support)
    assert "redeemed" in assert_problem(refused, 409, "invalid_state")["detail"]

    other = await buy(client, merchant)
    async with services.db.transaction() as connection:
        await connection.execute(
            update(cards)
            .where(cards.c.serial == other["card"]["serial"])
            .values(state="frozen", state_before_freeze="active")
        )
    refused = await client.post(
        f"/v1/support/gifts/{other['id']}/recipient", json=new, headers=support
    )
    assert "hold" in assert_problem(refused, 409, "invalid_state")["detail"]
    assert await gift_audit(services, "gift.correct_recipient") == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"recipient_email": "not an address"}, "recipient_email"),
        ({"recipient_email": ""}, "recipient_email"),
        ({"recipient_email": "sam@example.com"}, "recipient_email"),
        ({"recipient_email": "b@example.com", "recipient_name": "A\nB"}, "recipient_name"),
        ({}, "recipient_email"),
    ],
)
async def test_a_bad_correction_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, services: Services, body: dict[str, Any], param: str
) -> None:
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    gift = await buy(client, merchant)

    refused = await client.post(
        f"/v1/support/gifts/{gift['id']}/recipient", json=body, headers=support
    )

    assert_problem(refused, 422, "validation_error", param=param)
    [message] = await messages_of(services, gift["id"])
    assert message.recipient == "sam@example.com"
    assert await gift_audit(services, "gift.correct_recipient") == []
    missing = await client.post(
        "/v1/support/gifts/gift_999999/recipient",
        json={"recipient_email": "b@example.com"},
        headers=support,
    )
    assert_problem(missing, 404, "not_found")


async def test_a_correction_racing_a_redemption_of_the_old_code_lets_one_win(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Whichever changes the card first wins: the old code redeems and the correction is
    refused, or the card is re-keyed and the old code finds nothing. Never both."""
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    for round_ in range(6):
        gift = await buy(client, merchant, recipient_email=f"wrong{round_}@example.com")
        [message] = await messages_of(services, gift["id"])
        old_code = code_in(await render_email(services, message))
        await mark_delivered(services, message)
        shopper = await sign_up(client)

        redeemed, corrected = await asyncio.gather(
            redeem(client, shopper, old_code),
            client.post(
                f"/v1/support/gifts/{gift['id']}/recipient",
                json={"recipient_email": f"right{round_}@example.com"},
                headers=support,
            ),
        )

        outcome = (redeemed.status_code, corrected.status_code)
        assert outcome in ((201, 409), (404, 200)), (redeemed.text, corrected.text)
    assert (await verify(services.db)).problems == []


async def test_two_corrections_at_once_leave_one_address_with_the_last_code(
    client: httpx.AsyncClient, services: Services
) -> None:
    """They take turns on the gift: one email waits, to the address named last, with the
    code the card now has."""
    merchant = await api_key(services, "merchant")
    support = await api_key(services, "support")
    for round_ in range(5):
        gift = await buy(client, merchant, recipient_email=f"wrong{round_}@example.com")
        [message] = await messages_of(services, gift["id"])
        await mark_delivered(services, message)

        results = await asyncio.gather(
            *(
                client.post(
                    f"/v1/support/gifts/{gift['id']}/recipient",
                    json={"recipient_email": f"right{round_}-{n}@example.com"},
                    headers=support,
                )
                for n in range(3)
            )
        )

        assert [r.status_code for r in results] == [200] * 3, [r.text for r in results]
        final = (await client.get(f"/v1/gifts/{gift['id']}", headers=merchant)).json()
        [_, waiting] = await messages_of(services, gift["id"])
        assert waiting.recipient == final["recipient_email"]
        code = code_in(await render_email(services, waiting))
        assert codes.code_last4(codes.normalize_code(code)) == final["card"]["last4"]
