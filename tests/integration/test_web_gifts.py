"""The demo store's "Send a gift card" and "Gifts you've sent" on Your Gift Cards, over
HTTP on SQLite and PostgreSQL: buying a gift paid with the test card (never the balance),
now or at 09:00 on a chosen day in the recipient's zone, bad input shown beside its field
with the input kept and nothing bought, a form sent twice buying one gift, the buyer's
list with its statuses and Resend button, and other shoppers' gifts staying out of reach."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Row, func, select, update

from giftcard import gifts as gifts_module
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.db.tables import cards, gifts, outbox_messages
from giftcard.mail.messages import OutboxMessage, handler_for
from giftcard.services import Services
from tests.web import csrf_of, field_error, text_of, web_post, web_sign_up

NO_BALANCE = "Your gift card balance cannot buy gift cards."


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, demo_store=True)


def form_data(page: str, **fields: str) -> dict[str, str]:
    found = re.search(r'name="form_id" value="(gfo_[0-9a-f]{32})"', page)
    assert found, "no form id on the page"
    return {
        "csrf_token": csrf_of(page),
        "form_id": found.group(1),
        "amount": "25.00",
        "recipient_email": "sam@example.com",
        "recipient_name": "Sam",
        "sender_name": "Alex",
        "message": "Happy birthday!\r\nSee you soon.",
        "when": "now",
        "send_on": "",
        "time_zone": "America/New_York",
        **fields,
    }


async def open_form(client: httpx.AsyncClient) -> str:
    page = await client.get("/store/gift")
    assert page.status_code == 200, page.text
    return page.text


async def counts(services: Services) -> tuple[int, int, int]:
    async with services.db.transaction(write=False) as connection:
        found = []
        for table in (cards, gifts, outbox_messages):
            query = select(func.count()).select_from(table)
            found.append(int((await connection.execute(query)).scalar_one()))
    return found[0], found[1], found[2]


async def only_gift(services: Services) -> Row[Any]:
    async with services.db.transaction(write=False) as connection:
        return (await connection.execute(select(gifts))).one()


def flash(page: str) -> str:
    """The words of the page's confirmation, wherever it is shown."""
    found = re.search(r'<div class="notice[^"]*" role="status"[^>]*>(.*?)</div>', page, re.S)
    return text_of(found.group(1)) if found else ""


def top_flash(page: str) -> str:
    """The words of a confirmation shown at the top of the page, above everything else."""
    top = r'<main[^>]*>\s*<div class="notice[^"]*" role="status">(.*?)</div>'
    found = re.search(top, page, re.S)
    return text_of(found.group(1)) if found else ""


def answer_beside(page: str, gift_id: str) -> str:
    """The words of the answer in the row right under gift `gift_id`'s row, checked to
    be the one the address's fragment names and the one the page's script focuses."""
    rows = re.search(
        rf'<tr data-gift="{re.escape(gift_id)}"[^>]*>(?:(?!</tr>).)*</tr>\s*'
        r'(<tr class="row-notice">.*?</tr>)',
        page,
        re.S,
    )
    if rows is None:
        return ""
    notice = re.search(r'<div class="notice[^"]*"([^>]*)>(.*?)</div>', rows.group(1), re.S)
    assert notice, "the row under the gift holds no notice"
    assert f'id="resent-{gift_id}"' in notice.group(1)
    assert 'role="status"' in notice.group(1)
    assert 'tabindex="-1"' in notice.group(1)
    assert "data-focus" in notice.group(1)
    return text_of(notice.group(2))


async def test_the_form_needs_a_shopper_and_says_the_balance_cannot_pay(
    client: httpx.AsyncClient,
) -> None:
    """A visitor is sent to log in first; a shopper sees the form, the test card, the
    sentence that the balance cannot buy gift cards, and the link in the store's nav."""
    anonymous = await client.get("/store/gift")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login")
    await web_sign_up(client)

    page = await open_form(client)

    assert NO_BALANCE in text_of(page)
    assert "4242 4242 4242 4242" in page
    assert '<a href="/store/gift" aria-current="page">Send a gift card</a>' in page


async def test_sending_now_buys_the_gift_for_the_shopper_and_confirms_it(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a shopper, when they send a gift now, then the gift is theirs, due now, its
    message's line breaks kept, and the confirmation page shows it (never the code)."""
    await web_sign_up(client)
    page = await open_form(client)

    sent = await client.post("/store/gift", data=form_data(page))

    assert sent.status_code == 303, sent.text
    location = sent.headers["location"]
    assert re.fullmatch(r"/store/gifts/gift_[0-9a-z]{13}", location)
    confirmation = await client.get(location)
    assert confirmation.status_code == 200
    words = text_of(confirmation.text)
    assert "Your gift card is on its way" in words
    assert "$25.00" in words
    assert "Sam, sam@example.com" in words
    gift = await only_gift(services)
    assert gift.purchaser_customer_id is not None
    assert gift.deliver_at == clock.now()
    assert gift.message == "Happy birthday!\nSee you soon."
    assert gift.amount == 2500
    assert await counts(services) == (1, 1, 1)


@pytest.mark.parametrize(
    ("region", "time_zone", "typed", "amount", "shown"),
    [
        ("DE", "Europe/Berlin", "25,50", 2550, "25,50 €"),
        ("FR", "Europe/Paris", "1 000,00 €", 100_000, "1 000,00 €"),
        ("US", "America/New_York", "$25", 2500, "$25.00"),
        ("JP", "Asia/Tokyo", "¥5,000", 5000, "¥5,000"),
    ],
)
async def test_the_amount_is_typed_as_the_shopper_s_store_writes_money(
    client: httpx.AsyncClient,
    services: Services,
    region: str,
    time_zone: str,
    typed: str,
    amount: int,
    shown: str,
) -> None:
    """The hint beside the amount shows the store's own notation, and a gift bought with
    the amount typed that way is worth exactly it."""
    await web_sign_up(client, region)
    page = await open_form(client)
    assert "; write it like " in text_of(page)

    sent = await client.post("/store/gift", data=form_data(page, amount=typed, time_zone=time_zone))

    assert sent.status_code == 303, sent.text
    assert (await only_gift(services)).amount == amount
    confirmation = await client.get(sent.headers["location"])
    assert shown in text_of(confirmation.text)


async def test_a_german_shopper_is_shown_and_refused_amounts_in_german_notation(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The Germany store's hint reads in euros the German way, and 25.00, which could be
    2.500,00 € or 25,00 €, is refused in that notation with nothing bought."""
    await web_sign_up(client, "DE")
    page = await open_form(client)
    assert "From 1,00 € to 2.000,00 €; write it like 10,50 €." in text_of(page)

    refused = await client.post(
        "/store/gift", data=form_data(page, amount="25.00", time_zone="Europe/Berlin")
    )

    assert refused.status_code == 422
    assert field_error(refused.text, "amount") == (
        "'25.00' is not how the Germany store writes amounts: write it like 2.500,00 € or 25,00 €."
    )
    assert await counts(services) == (0, 0, 0)


async def test_a_chosen_day_means_nine_in_the_morning_in_the_recipient_s_zone(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    await web_sign_up(client)
    page = await open_form(client)
    day = (clock.now().astimezone(ZoneInfo("America/Los_Angeles")) + timedelta(days=3)).date()

    sent = await client.post(
        "/store/gift",
        data=form_data(
            page, when="later", send_on=day.isoformat(), time_zone="America/Los_Angeles"
        ),
    )

    assert sent.status_code == 303, sent.text
    gift = await only_gift(services)
    expected = datetime(day.year, day.month, day.day, 9, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert gift.deliver_at == expected
    confirmation = await client.get(sent.headers["location"])
    assert "Your gift card is scheduled" in text_of(confirmation.text)


BAD_FORMS = [
    ({"amount": ""}, "amount", "Enter the gift card's amount."),
    ({"amount": "abc"}, "amount", None),
    ({"amount": "0.99"}, "amount", "A gift card of the United States store is worth from $1.00"),
    ({"amount": "2000.01"}, "amount", None),
    ({"amount": "25.001"}, "amount", "USD has 2 decimals: write it like $25,001.00 or $25.00."),
    ({"amount": "25,00"}, "amount", "is not how the United States store writes amounts"),
    ({"amount": "25 €"}, "amount", "The United States store takes USD, not €"),
    ({"amount": "-25"}, "amount", "more than zero"),
    ({"recipient_email": "sam@"}, "recipient_email", None),
    ({"recipient_email": ""}, "recipient_email", None),
    ({"sender_name": ""}, "sender_name", "Enter a name."),
    ({"sender_name": "Alex\nBcc: x@example.com"}, "sender_name", None),
    ({"recipient_name": "Sam\rX"}, "recipient_name", None),
    ({"message": "x" * 1001}, "message", None),
    ({"when": "later", "send_on": ""}, "when", "Choose the day to send the gift on."),
    ({"when": "later", "send_on": "2001-01-01"}, "when", "That day has passed."),
    ({"when": "later", "send_on": "FAR"}, "when", "at most a year ahead"),
    ({"when": "later", "send_on": "NEXT", "time_zone": "Mars/Olympus"}, "when", None),
]


@pytest.mark.parametrize(("fields", "field", "words"), BAD_FORMS)
async def test_bad_input_is_shown_beside_its_field_with_the_input_kept(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    fields: dict[str, str],
    field: str,
    words: str | None,
) -> None:
    """Given one bad field, then the form comes back (4xx) with the error beside it, the
    other fields as typed, and nothing was bought."""
    await web_sign_up(client)
    page = await open_form(client)
    today = clock.now().astimezone(ZoneInfo("America/New_York")).date()
    placeholders = {
        "FAR": (today + timedelta(days=400)).isoformat(),
        "NEXT": (today + timedelta(days=1)).isoformat(),
    }
    fields = {name: placeholders.get(value, value) for name, value in fields.items()}

    response = await client.post("/store/gift", data=form_data(page, **fields))

    assert 400 <= response.status_code < 500, response.text
    if field == "when":
        found = re.search(r'<p class="error" id="when-error">(.*?)</p>', response.text, re.S)
        assert found, response.text
        error = text_of(found.group(1))
    elif field == "message":
        assert 'id="message-error"' in response.text
        assert 'aria-invalid="true"' in response.text
        error = "message"
    else:
        error = field_error(response.text, field) or ""
        assert error, response.text
    if words is not None:
        assert words in error
    if field != "recipient_email":
        assert 'value="sam@example.com"' in response.text
    if field != "message":
        assert "Happy birthday!" in response.text
    assert await counts(services) == (0, 0, 0)


async def test_a_form_sent_twice_buys_one_gift_and_a_stale_one_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The same form (reload, double click) leads to the first gift; the same form
    changed after it bought a gift is refused with a sentence, and a forged form id or a
    missing CSRF token buys nothing."""
    await web_sign_up(client)
    page = await open_form(client)
    data = form_data(page)

    first = await client.post("/store/gift", data=data)
    second = await client.post("/store/gift", data=data)
    replayed = await client.get(second.headers["location"])
    changed = await client.post("/store/gift", data={**data, "amount": "30.00"})
    forged = await client.post("/store/gift", data={**data, "form_id": "gfo_nothex"})
    no_csrf = await client.post("/store/gift", data={**data, "csrf_token": ""})

    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert "This gift was bought already." in flash(replayed.text)
    assert changed.status_code == 409
    assert "This form bought a gift already" in text_of(changed.text)
    assert forged.status_code == 422
    assert no_csrf.status_code == 403
    assert await counts(services) == (1, 1, 1)


async def mark_sent(services: Services) -> None:
    async with services.db.transaction() as connection:
        rows = (await connection.execute(select(outbox_messages))).all()
        for row in rows:
            message = OutboxMessage.from_row(row)
            await handler_for(message.kind).sent(connection, message, services.clock.now())


async def test_gifts_you_ve_sent_lists_them_and_resends_a_sent_one(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a gift whose email went out, then Your Gift Cards lists it as Sent with a
    Resend button; resending queues a second email and the gift reads Scheduled, without
    a button, until it goes out again. Another shopper cannot resend it, nor see its
    confirmation page."""
    await web_sign_up(client)
    sent = await client.post("/store/gift", data=form_data(await open_form(client)))
    gift_path = sent.headers["location"]
    gift_id = gift_path.rsplit("/", 1)[1]
    account = await client.get("/account/gift-cards")
    assert "Gifts you've sent" in account.text
    assert re.search(r'data-testid="gift-status">Scheduled<', account.text)
    assert f"/account/gifts/{gift_id}/resend" not in account.text
    await mark_sent(services)

    account = await client.get("/account/gift-cards")
    assert re.search(r'data-testid="gift-status">Sent<', account.text)
    assert f"/account/gifts/{gift_id}/resend" in account.text
    too_soon = await web_post(client, f"/account/gifts/{gift_id}/resend")
    assert "send it again in 15 minutes" in answer_beside(
        (await client.get(too_soon.headers["location"])).text, gift_id
    )
    assert await counts(services) == (1, 1, 1)
    assert isinstance(services.clock, FrozenClock)
    services.clock.advance(gifts_module.BUYER_RESEND_INTERVAL)
    resent = await web_post(client, f"/account/gifts/{gift_id}/resend")
    assert resent.status_code == 303, resent.text
    after = await client.get(resent.headers["location"])
    assert "on its way again" in answer_beside(after.text, gift_id)
    assert re.search(r'data-testid="gift-status">Scheduled<', after.text)
    assert await counts(services) == (1, 1, 2)

    transport = httpx.ASGITransport(app=create_app(services=services))
    async with httpx.AsyncClient(transport=transport, base_url=str(client.base_url)) as other:
        await web_sign_up(other)
        await mark_sent(services)
        refused = await web_post(other, f"/account/gifts/{gift_id}/resend")
        assert refused.status_code == 303
        shown = await other.get(refused.headers["location"])
        # Not this shopper's gift, so no row to answer beside: the answer is at the top.
        assert top_flash(shown.text) == f"No gift {gift_id}. Nothing was sent."
        assert (await other.get(gift_path)).status_code == 404
    assert await counts(services) == (1, 1, 2)


async def test_a_resend_is_answered_under_its_own_gift_not_at_the_top(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given three sent gifts, when the buyer resends the middle one, then the redirect's
    fragment takes the browser to the answer, which sits in the row right under that gift
    (focused by the page's script), once on the page, and nothing is at the top; the
    other gifts' rows carry no answer."""
    await web_sign_up(client)
    bought = []
    for recipient in ("ana", "ben", "cy"):
        data = form_data(await open_form(client), recipient_email=f"{recipient}@example.com")
        sent = await client.post("/store/gift", data=data)
        assert sent.status_code == 303, sent.text
        bought.append(sent.headers["location"].rsplit("/", 1)[1])
    await mark_sent(services)
    assert isinstance(services.clock, FrozenClock)
    services.clock.advance(gifts_module.BUYER_RESEND_INTERVAL)
    middle = bought[1]

    resent = await web_post(client, f"/account/gifts/{middle}/resend")

    assert resent.status_code == 303, resent.text
    assert resent.headers["location"] == f"/account/gift-cards#resent-{middle}"
    page = (await client.get(resent.headers["location"])).text
    answer = answer_beside(page, middle)
    assert answer == (
        "The gift card email to ben@example.com is on its way again. "
        "It carries the same code as before."
    )
    assert text_of(page).count("is on its way again") == 1
    assert top_flash(page) == ""
    for other in (bought[0], bought[2]):
        assert answer_beside(page, other) == ""
    # Shown once: the next visit has no answer anywhere.
    assert "on its way again" not in (await client.get("/account/gift-cards")).text


async def test_a_redeemed_gift_reads_redeemed_without_a_resend_button(
    client: httpx.AsyncClient, services: Services
) -> None:
    await web_sign_up(client)
    sent = await client.post("/store/gift", data=form_data(await open_form(client)))
    gift_id = sent.headers["location"].rsplit("/", 1)[1]
    await mark_sent(services)
    async with services.db.transaction() as connection:
        customer_id = (await connection.execute(select(gifts.c.purchaser_customer_id))).scalar()
        await connection.execute(
            update(cards).values(state="redeemed", redeemed_customer_id=customer_id)
        )

    account = await client.get("/account/gift-cards")

    assert re.search(r'data-testid="gift-status">Redeemed<', account.text)
    assert f"/account/gifts/{gift_id}/resend" not in account.text
