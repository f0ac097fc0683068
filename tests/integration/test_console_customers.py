"""The console's customer pages through httpx, as a browser without JavaScript uses them:
finding a customer by a whole address or its beginning, their page (balance, history
with its pager, cards, gifts, payments, adjustments), adjusting below and above the
approval threshold, a second agent approving in another browser, the gift forms, and
every refusal shown beside its field."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from giftcard import ids
from giftcard.api.app import create_app
from giftcard.db.tables import audit_log, outbox_messages
from giftcard.services import Services
from tests.conftest import Shopper, api_key
from tests.integration.test_support_customers import funded
from tests.integration.test_web_gifts import mark_sent
from tests.web import console_log_in, console_post, csrf_of, field_error, text_of


def make_browser(services: Services, port: int) -> httpx.AsyncClient:
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.31", port))
    return httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Accept": "text/html"}
    )


@pytest.fixture
async def browser(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with make_browser(services, 4900) as http:
        yield http


@pytest.fixture
async def second_browser(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with make_browser(services, 4901) as http:
        yield http


def flash_of(page: str) -> str:
    found = re.search(r'<div class="notice[^"]*" role="status".*?</div>', page, re.S)
    assert found, "no flash on the page"
    return text_of(found.group(0))


def gift_answer(page: str) -> str:
    """The answer to a gift form, checked to sit at the top of the Gifts section (where
    the address's fragment points and the page's script puts the focus), not at the top
    of the page."""
    section = re.search(r'<section [^>]*id="gifts">(.*?)</section>', page, re.S)
    assert section, "no Gifts section"
    notice = re.search(
        r'<h2 id="gifts-title">[^<]*</h2>\s*<div class="notice[^"]*"([^>]*)>(.*?)</div>',
        section.group(1),
        re.S,
    )
    assert notice, "the answer is not at the top of the Gifts section"
    assert 'id="gift-answer"' in notice.group(1)
    assert 'role="status"' in notice.group(1)
    assert 'tabindex="-1"' in notice.group(1)
    assert "data-focus" in notice.group(1)
    assert not re.search(r'<main[^>]*>\s*<div class="notice', page), "an answer at the top too"
    return text_of(notice.group(2))


async def test_a_visitor_is_sent_to_log_in(browser: httpx.AsyncClient, services: Services) -> None:
    for path in ("/support/customers", "/support/customers/cus_1", "/support/approvals"):
        away = await browser.get(path)
        assert away.status_code == 303, path
        assert away.headers["location"].startswith("/support/login?next=")


async def test_search_by_a_whole_address_and_by_its_beginning(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services, 2500, name="Ada")
    await console_log_in(browser, services)

    empty = await browser.get("/support/customers")
    exact = await browser.get("/support/customers", params={"email": shopper.email.upper()})
    prefix = await browser.get("/support/customers", params={"email": shopper.email[:7]})
    short = await browser.get("/support/customers", params={"email": "s"})
    nobody = await browser.get("/support/customers", params={"email": "nobody@example.com"})

    assert empty.status_code == 200
    assert 'label for="email"' in empty.text
    assert exact.status_code == 200
    words = text_of(exact.text)
    assert f"1 customer with the address “{shopper.email}”" in words
    assert "Ada" in words
    assert "$25.00" in words
    assert f'href="/support/customers/{shopper.id}"' in exact.text
    assert '<div class="table-wrap">' in exact.text
    assert "whose address begins with" in text_of(prefix.text)
    assert f'href="/support/customers/{shopper.id}"' in prefix.text
    assert short.status_code == 422
    assert "at least 2 characters" in (field_error(short.text, "email") or "")
    assert "No customer has the address" in text_of(nobody.text)


async def test_the_customer_page_shows_balance_history_cards_and_forms(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services, 2500)
    admin = await api_key(services, "admin")
    gift = await client.post(
        "/v1/gifts",
        json={
            "amount": 1000,
            "region": "US",
            "recipient_email": "sam@example.com",
            "sender_name": "Alex",
            "purchaser_customer_id": shopper.id,
        },
        headers=admin,
    )
    assert gift.status_code == 201
    await console_log_in(browser, services)

    page = await browser.get(f"/support/customers/{shopper.id}")

    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert shopper.email in words
    assert "Available $25.00" in words
    assert "redemption +$25.00 $25.00" in words
    assert re.search(r'href="/support/cards/card_[0-9a-z]{13}"', page.text)
    assert gift.json()["id"] in words
    assert f'action="/support/gifts/{gift.json()["id"]}/recipient"' in page.text
    assert f'action="/support/customers/{shopper.id}/adjustments"' in page.text
    for label in ('for="amount"', 'for="reason"', 'for="note"'):
        assert label in page.text
    assert page.text.count('<div class="table-wrap">') >= 2
    missing = await browser.get("/support/customers/" + ids.format_id(ids.CUSTOMER, 999999))
    assert missing.status_code == 404
    assert f"No customer {ids.format_id(ids.CUSTOMER, 999999)}" in text_of(missing.text)


async def adjust(
    browser: httpx.AsyncClient, shopper: Shopper, amount: str, note: str = "Ticket 12"
) -> httpx.Response:
    return await console_post(
        browser,
        f"/support/customers/{shopper.id}/adjustments",
        {"amount": amount, "reason": "goodwill", "note": note},
    )


async def test_a_small_adjustment_is_applied_and_says_so(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services, 2500)
    await console_log_in(browser, services)

    done = await adjust(browser, shopper, "12.50")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/support/customers/{shopper.id}#adjustments"
    page = await browser.get(done.headers["location"])
    assert flash_of(page.text).startswith("Applied: $12.50 added to the customer's balance.")

    taken = await adjust(browser, shopper, "-5.00")
    assert taken.status_code == 303
    page = await browser.get(taken.headers["location"])
    assert flash_of(page.text).startswith("Applied: $5.00 deducted from the customer's balance.")
    assert "Available $32.50" in text_of(page.text)
    balance = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 3250


@pytest.mark.parametrize(
    ("amount", "reason", "note", "field", "words"),
    [
        (
            "1.234",
            "goodwill",
            "n",
            "amount",
            "USD has 2 decimals: write it like $1,234.00 or $1.23.",
        ),
        ("0.00", "goodwill", "n", "amount", "zero"),
        ("", "goodwill", "n", "amount", "Enter an amount"),
        ("12,50", "goodwill", "n", "amount", "not how the United States store writes amounts"),
        ("5 €", "goodwill", "n", "amount", "The United States store takes USD, not €"),
        ("$-5", "goodwill", "n", "amount", "Put the sign first"),
        ("-100.00", "goodwill", "n", "amount", "below zero"),
        ("5", "", "n", "reason", "Choose a reason"),
        ("5", "bribe", "n", "reason", "Choose a reason"),
        ("5", "goodwill", "  ", "note", "Write a note"),
    ],
)
async def test_a_bad_adjustment_is_refused_beside_its_field(
    browser: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    amount: str,
    reason: str,
    note: str,
    field: str,
    words: str,
) -> None:
    shopper = await funded(client, services, 2500)
    await console_log_in(browser, services)

    refused = await console_post(
        browser,
        f"/support/customers/{shopper.id}/adjustments",
        {"amount": amount, "reason": reason, "note": note},
    )

    assert refused.status_code in (409, 422), refused.text
    if field in ("amount",):
        assert words in (field_error(refused.text, field) or "")
    else:
        assert f'<p class="error" id="{field}-error">' in refused.text
        assert words in text_of(refused.text)
    # What was typed is kept.
    assert f'value="{amount}"' in refused.text
    balance = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 2500


async def test_a_german_customer_is_adjusted_in_euros_as_germany_writes_them(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    """The adjust form of a Germany store customer shows and reads amounts the German
    way: 12,50 € credits twelve euros fifty, -5,00 € deducts five, and 1,234 (one point
    two three four euros) is refused in German notation, changing nothing."""
    shopper = await funded(client, services, 2500, region="DE")
    await console_log_in(browser, services)
    page = await browser.get(f"/support/customers/{shopper.id}")
    assert "write it like 10,50\u00a0€ or -10,50\u00a0€." in page.text

    assert (await adjust(browser, shopper, "12,50 €")).status_code == 303
    assert (await adjust(browser, shopper, "-5,00")).status_code == 303
    refused = await adjust(browser, shopper, "1,234")

    assert refused.status_code == 422
    assert field_error(refused.text, "amount") == (
        # The page's no-break spaces read as spaces once squeezed.
        "EUR has 2 decimals: write it like 1.234,00 € or 1,23 €."
    )
    balance = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 2500 + 1250 - 500


async def test_a_large_adjustment_waits_and_a_second_agent_approves_it(
    browser: httpx.AsyncClient,
    second_browser: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    shopper = await funded(client, services, 2500)
    await console_log_in(browser, services)
    await console_log_in(second_browser, services, "admin")

    asked = await adjust(browser, shopper, "150.00", "Lost card, ticket 99")
    page = await browser.get(asked.headers["location"])
    assert flash_of(page.text).startswith("Waiting for a second staff member's approval.")
    assert "Waiting for approval" in text_of(page.text)
    [adjustment_id] = re.findall(r'data-adjustment="(adj_[0-9a-z]{13})"', page.text)

    own = await browser.get("/support/approvals")
    assert "You asked for this one, so another staff member must approve it" in text_of(own.text)
    assert f'action="/support/approvals/{adjustment_id}/approve"' not in own.text
    forced = await console_post(browser, f"/support/approvals/{adjustment_id}/approve")
    forced_page = await browser.get(forced.headers["location"])
    assert "cannot approve your own adjustment" in flash_of(forced_page.text)

    queue = await second_browser.get("/support/approvals")
    assert f'action="/support/approvals/{adjustment_id}/approve"' in queue.text
    assert "Lost card, ticket 99" in text_of(queue.text)
    assert f'<a href="/support/customers/{shopper.id}">{shopper.email}</a>' in queue.text
    approved = await second_browser.post(
        f"/support/approvals/{adjustment_id}/approve",
        data={"csrf_token": csrf_of(queue.text), "note": "Checked"},
    )
    assert approved.status_code == 303
    after = await second_browser.get(approved.headers["location"])
    assert flash_of(after.text).startswith(f"Approved and applied: {adjustment_id}, $150.00.")
    assert "Nothing is waiting for approval." in text_of(after.text)
    balance = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 17500
    again = await console_post(second_browser, f"/support/approvals/{adjustment_id}/reject")
    again_page = await second_browser.get(again.headers["location"])
    assert "applied already" in flash_of(again_page.text)


async def test_an_agent_withdraws_their_own_and_another_rejects(
    browser: httpx.AsyncClient,
    second_browser: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    shopper = await funded(client, services, 2500)
    await console_log_in(browser, services)
    await console_log_in(second_browser, services)
    first = await browser.get((await adjust(browser, shopper, "200")).headers["location"])
    second = await browser.get((await adjust(browser, shopper, "300")).headers["location"])
    ids_ = re.findall(r'data-adjustment="(adj_[0-9a-z]{13})"', second.text)
    assert first.status_code == 200

    withdrawn = await console_post(browser, f"/support/approvals/{ids_[1]}/reject")
    rejected = await console_post(second_browser, f"/support/approvals/{ids_[0]}/reject")

    assert flash_of((await browser.get(withdrawn.headers["location"])).text).startswith(
        f"Rejected: {ids_[1]}, $200.00."
    )
    assert flash_of((await second_browser.get(rejected.headers["location"])).text).startswith(
        f"Rejected: {ids_[0]}, $300.00."
    )
    balance = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    assert balance["available"] == 2500


async def test_the_history_pages_with_older_and_newest(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services, 2500)
    key = await api_key(services, "support")
    for n in range(21):
        made = await client.post(
            f"/v1/support/customers/{shopper.id}/adjustments",
            json={"amount": n + 1, "reason": "goodwill", "note": "n"},
            headers=key,
        )
        assert made.status_code == 201
    await console_log_in(browser, services)

    first = await browser.get(f"/support/customers/{shopper.id}")
    older = re.search(r'href="([^"]+starting_after=txn_[0-9a-z]{13})#history">Older', first.text)
    assert older, "no Older link"
    second = await browser.get(older.group(1))

    assert second.status_code == 200
    assert text_of(second.text).count("redemption +$25.00") == 1
    assert "redemption" not in text_of(first.text).split("History")[1].split("Cards")[0]
    assert f'href="/support/customers/{shopper.id}#history">Newest' in second.text
    bad = await browser.get(f"/support/customers/{shopper.id}?starting_after=nope")
    assert bad.status_code == 422


async def test_the_gift_forms_resend_and_correct_the_recipient(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services, 2500)
    admin = await api_key(services, "admin")
    gift = (
        await client.post(
            "/v1/gifts",
            json={
                "amount": 1000,
                "region": "US",
                "recipient_email": "sam@exmaple.com",
                "sender_name": "Alex",
                "purchaser_customer_id": shopper.id,
            },
            headers=admin,
        )
    ).json()
    await console_log_in(browser, services)
    gift_id = gift["id"]

    bad = await console_post(
        browser,
        f"/support/gifts/{gift_id}/recipient",
        {"recipient_email": "not an address", "customer_id": shopper.id},
    )
    assert bad.status_code == 422
    assert "valid email" in (field_error(bad.text, f"recipient_email-{gift_id}") or "")

    fixed = await console_post(
        browser,
        f"/support/gifts/{gift_id}/recipient",
        {"recipient_email": "sam@example.com", "recipient_name": "", "customer_id": shopper.id},
    )
    assert fixed.status_code == 303
    assert fixed.headers["location"] == f"/support/customers/{shopper.id}#gift-answer"
    page = await browser.get(fixed.headers["location"])
    assert gift_answer(page.text).startswith(
        f"Gift {gift_id} now goes to sam@example.com (was sam@exmaple.com)."
    )
    async with services.db.transaction(write=False) as connection:
        recipients = (await connection.execute(select(outbox_messages.c.recipient))).scalars().all()
        entries = (
            (await connection.execute(select(audit_log.c.action).order_by(audit_log.c.id)))
            .scalars()
            .all()
        )
    assert recipients == ["sam@example.com"]
    assert "gift.correct_recipient" in entries

    # Still on its way: a resend is refused and says so.
    refused = await console_post(
        browser, f"/support/gifts/{gift_id}/resend", {"customer_id": shopper.id}
    )
    assert refused.status_code == 303
    assert refused.headers["location"] == f"/support/customers/{shopper.id}#gift-answer"
    refused_page = await browser.get(refused.headers["location"])
    assert "Nothing was sent." in gift_answer(refused_page.text)

    # Once sent, it is resent, and the answer is again where the agent is.
    await mark_sent(services)
    resent = await console_post(
        browser, f"/support/gifts/{gift_id}/resend", {"customer_id": shopper.id}
    )
    assert resent.headers["location"] == f"/support/customers/{shopper.id}#gift-answer"
    resent_page = (await browser.get(resent.headers["location"])).text
    assert gift_answer(resent_page) == (
        f"The gift card email to sam@example.com is on its way again. "
        f"Gift {gift_id} carries the same code as before."
    )
    assert text_of(resent_page).count("on its way again") == 1
