"""The console's card pages (/support/lookup, /support/cards/card_N): an agent types a
code or serial as the customer reads it, lands on the card's page, which answers "was it
already redeemed?" in its first sentence, and freezes, unfreezes, cancels or replaces the
card from there. A code never enters an address; a replacement's code is shown once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from giftcard import codes
from giftcard.api.app import create_app
from giftcard.db.tables import audit_log
from giftcard.services import Services
from tests.conftest import api_key, issue, sign_up
from tests.web import console_log_in, console_post, csrf_of, field_error, text_of

# The widest a phone shows the console at; tables must sit in a scrolling wrapper.
NARROW_TABLE = re.compile(r"<table\b")


@pytest.fixture
async def browser(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.31", 4900))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Accept": "text/html"}
    ) as http:
        yield http


@pytest.fixture
async def admin(services: Services) -> dict[str, str]:
    return await api_key(services, "admin")


async def look_up(browser: httpx.AsyncClient, query: str) -> httpx.Response:
    return await console_post(browser, "/support/lookup", {"query": query})


def assert_well_formed_page(page: str) -> None:
    """Every table scrolls in its wrapper; every input has a label; every form its token."""
    assert page.count('<div class="table-wrap">') == len(NARROW_TABLE.findall(page))
    for input_id in re.findall(r'<input id="([^"]+)"', page):
        assert f'<label for="{input_id}">' in page, input_id
    assert page.count("<form") == page.count('name="csrf_token"')


async def test_a_code_typed_in_lower_case_with_spaces_leads_to_the_card_page(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, admin: dict[str, str]
) -> None:
    """Given a redeemed card, when the agent types its code in lower case with spaces,
    then they are sent to the card's page by id (no code in the address), whose first
    answer names the customer, the crediting transaction and the balance now, with a
    link to the customer's page; both the look-up and the page are audited."""
    [card] = await issue(client, admin, amount=2500)
    shopper = await sign_up(client)
    credited = await client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
    )
    assert credited.status_code == 201
    await console_log_in(browser, services)

    found = await look_up(browser, card["code"].lower().replace("-", " "))

    assert found.status_code == 303, found.text
    assert found.headers["location"] == f"/support/cards/{card['id']}"
    page = await browser.get(found.headers["location"])
    assert page.status_code == 200
    words = text_of(page.text)
    assert (
        f"into {shopper.email}'s account ({shopper.id}) — journal transaction "
        f"{credited.json()['id']} credited $25.00; their balance now $25.00."
    ) in words
    assert f'href="/support/customers/{shopper.id}"' in page.text
    assert card["code"] not in page.text
    assert_well_formed_page(page.text)
    async with services.db.transaction(write=False) as connection:
        query = select(audit_log).where(audit_log.c.action != "card.issue").order_by(audit_log.c.id)
        entries = (await connection.execute(query)).all()
    assert [(e.action, e.target, e.detail) for e in entries] == [
        ("card.lookup", card["id"], '{"by":"code"}'),
        ("card.lookup", card["id"], '{"by":"id"}'),
    ]
    assert entries[0].request_id == found.headers["Request-Id"]


async def test_a_serial_finds_its_card(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, admin: dict[str, str]
) -> None:
    [card] = await issue(client, admin, kind="physical")
    await console_log_in(browser, services)
    serial = card["serial"]
    found = await look_up(browser, f"{serial[:4]} {serial[4:8]} {serial[8:]}")
    assert found.headers["location"] == f"/support/cards/{card['id']}"
    page = await browser.get(found.headers["location"])
    assert "never sold (inactive)" in text_of(page.text)


@pytest.mark.parametrize(
    ("typed", "status", "expected"),
    [
        ("unknown", 404, "No card has this code. Check it with the customer"),
        ("mistyped", 422, "almost surely mistyped"),
        ("hello!", 422, "This is not a gift card code"),
        ("4123 4567", 422, "A serial number has 12 digits"),
        ("   ", 422, "Enter the code"),
    ],
)
async def test_a_refused_look_up_shows_its_error_beside_the_field(
    browser: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    admin: dict[str, str],
    typed: str,
    status: int,
    expected: str,
) -> None:
    [card] = await issue(client, admin)
    if typed == "unknown":
        typed = codes.format_code(codes.generate_code())
    elif typed == "mistyped":
        normalized = card["code"].replace("-", "")
        first = codes.ALPHABET[(codes.ALPHABET.index(normalized[0]) + 1) % len(codes.ALPHABET)]
        typed = first + normalized[1:]
    await console_log_in(browser, services)

    refused = await look_up(browser, typed)

    assert refused.status_code == status
    error = field_error(refused.text, "query")
    assert error is not None
    assert expected in error


async def test_freezing_flashes_what_was_done_and_unfreezing_undoes_it(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, admin: dict[str, str]
) -> None:
    [card] = await issue(client, admin)
    await console_log_in(browser, services)
    path = f"/support/cards/{card['id']}"
    page = await browser.get(path)
    assert 'action="' + path + '/freeze"' in page.text
    assert 'action="' + path + '/unfreeze"' not in page.text

    frozen = await console_post(browser, path + "/freeze", {"freeze_reason": "reported stolen"})

    assert frozen.status_code == 303
    assert frozen.headers["location"] == path
    after = await browser.get(path)
    words = text_of(after.text)
    assert f"Card ending {card['last4']} is frozen." in words
    assert re.search(r"frozen staff:\d+ reported stolen", words)
    assert 'action="' + path + '/unfreeze"' in after.text
    unfrozen = await console_post(browser, path + "/unfreeze", {"unfreeze_reason": "found it"})
    assert unfrozen.status_code == 303
    assert "is unfrozen. It is active again." in text_of((await browser.get(path)).text)


async def test_a_change_without_a_reason_is_refused_beside_its_field(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, admin: dict[str, str]
) -> None:
    [card] = await issue(client, admin)
    await console_log_in(browser, services)
    path = f"/support/cards/{card['id']}"
    refused = await console_post(browser, path + "/cancel", {"cancel_reason": "  "})
    assert refused.status_code == 422
    assert (
        field_error(refused.text, "cancel_reason")
        == "Give a reason: what happened, in a few words."
    )
    assert "Put it right" in refused.text
    page = await browser.get(path)
    assert "active" in text_of(page.text)


async def test_a_change_the_card_no_longer_allows_says_so_and_changes_nothing(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, admin: dict[str, str]
) -> None:
    """A form opened before someone else cancelled the card is refused with the reason
    at the top of the card's page as it is now."""
    [card] = await issue(client, admin)
    await console_log_in(browser, services)
    path = f"/support/cards/{card['id']}"
    assert (
        await console_post(browser, path + "/cancel", {"cancel_reason": "fraud"})
    ).status_code == 303
    refused = await console_post(browser, path + "/freeze", {"freeze_reason": "stolen"})
    assert refused.status_code == 409
    words = text_of(refused.text)
    assert "Nothing was changed. The card is cancelled" in words
    assert "A cancelled card cannot be changed any more." in words


async def test_an_unknown_card_page_or_change_is_a_404_page(
    browser: httpx.AsyncClient, services: Services
) -> None:
    await console_log_in(browser, services)
    assert (await browser.get("/support/cards/card_424242")).status_code == 404
    assert (await browser.get("/support/cards/nonsense")).status_code == 404
    posted = await console_post(
        browser, "/support/cards/card_424242/freeze", {"freeze_reason": "x"}
    )
    assert posted.status_code == 404
    posted = await console_post(browser, "/support/cards/card_1/explode", {"explode_reason": "x"})
    assert posted.status_code == 404


async def test_card_pages_need_a_staff_session_and_a_form_token(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, admin: dict[str, str]
) -> None:
    [card] = await issue(client, admin)
    path = f"/support/cards/{card['id']}"
    away = await browser.get(path)
    assert away.status_code == 303
    assert away.headers["location"].startswith("/support/login")
    await console_log_in(browser, services)
    forged = await browser.post(path + "/freeze", data={"freeze_reason": "x", "csrf_token": "x.y"})
    assert forged.status_code == 403
    assert "frozen" not in text_of((await browser.get(path)).text).split("Events")[0]


async def test_replace_shows_the_new_code_once(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, admin: dict[str, str]
) -> None:
    """Given a funded card, when the agent replaces it, then the answer to the form (no
    redirect) shows the new code with the warning that it will not be shown again, and
    neither the new card's page nor the old one's shows it afterwards; the new code
    redeems for the old card's value."""
    [card] = await issue(client, admin, amount=1800)
    await console_log_in(browser, services)
    path = f"/support/cards/{card['id']}"
    page = await browser.get(path)
    assert "Cancels this card for good and issues a new digital card for its $18.00" in text_of(
        page.text
    )

    replaced = await browser.post(
        path + "/replace",
        data={"replace_reason": "card damaged", "csrf_token": csrf_of(page.text)},
    )

    assert replaced.status_code == 200
    assert "location" not in replaced.headers
    assert replaced.headers["cache-control"] == "no-store"
    words = text_of(replaced.text)
    assert "Give this code to the customer; it will not be shown again" in words
    code = re.search(r'data-testid="new-code">([^<]+)<', replaced.text)
    assert code is not None
    new_code = code.group(1)
    assert codes.check_code(new_code)
    # Shown in the page only: no cookie carries it anywhere.
    cookies = " ".join(replaced.headers.get_list("set-cookie"))
    assert codes.normalize_code(new_code) not in cookies.upper().replace("-", "")
    new_link = re.search(
        r'href="(/support/cards/card_[0-9a-z]{13})">card_[0-9a-z]{13}</a> \(serial', replaced.text
    )
    assert new_link is not None
    for later in (path, new_link.group(1)):
        shown = await browser.get(later)
        assert new_code not in shown.text
        assert new_code.replace("-", "") not in shown.text
    old_page = text_of((await browser.get(path)).text)
    assert "Its value moved to card_" in old_page
    shopper = await sign_up(client)
    redeemed = await client.post(
        "/v1/me/redemptions", json={"code": new_code}, headers=shopper.auth
    )
    assert redeemed.status_code == 201
    assert redeemed.json()["amount"] == 1800
