"""Redeeming codes over HTTP: every refusal of SPEC §5, forgiving input, idempotency, and
the balance and history a redemption leaves behind."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from babel.dates import format_date

from giftcard import cards, ids
from giftcard.clock import FrozenClock
from giftcard.codes import ALPHABET, format_code, generate_code
from giftcard.services import Services
from tests.conftest import ANY, PROBLEM, Shopper, api_key, issue, sign_up
from tests.conftest import assert_problem as shared_assert_problem


def assert_problem(
    response: httpx.Response, status: int, code: str, *, param: object = ANY
) -> dict[str, Any]:
    """A problem as everywhere, whose detail is a whole sentence a shopper can act on."""
    body = shared_assert_problem(response, status, code, param=param)
    assert len(body["detail"]) > 15, body
    return body


def normalized(code: str) -> str:
    return code.replace("-", "")


def card_number(card: dict[str, Any]) -> int:
    return ids.parse_id(ids.CARD, card["id"])


async def redeem(
    client: httpx.AsyncClient, shopper: Shopper, code: str, key: str | None = None
) -> httpx.Response:
    headers = dict(shopper.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post("/v1/me/redemptions", json={"code": code}, headers=headers)


async def balance_of(client: httpx.AsyncClient, shopper: Shopper) -> dict[str, Any]:
    response = await client.get("/v1/me/balance", headers=shopper.auth)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def long_date(clock: FrozenClock, locale: str = "en_US") -> str:
    return str(format_date(clock.now(), format="long", locale=locale))


# --- code_malformed, code_mistyped, code_not_found ------------------------------------


MALFORMED = {
    "too short": "7KQ4-M2ZP-X9CD",
    "empty": "",
    "only separators": "   ---   ",
    "letter U": "UKQ4-M2ZP-X9CD-R3TW",
    "lower-case u": "ukq4-m2zp-x9cd-r3tw",
    "emoji": "\U0001f600KQ4-M2ZP-X9CD-R3TW",
    "17 symbols": "7KQ4-M2ZP-X9CD-R3TW-A",
    "65 characters": "A" * 65,
    "200 characters": "7" * 200,
}


async def test_malformed_code_is_refused_with_code_malformed(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a shopper, when they submit something no code can look like (too short, too
    long, empty, U, emoji), then each gets 422 code_malformed on param `code` and the
    balance stays zero."""
    shopper = await sign_up(client)

    for what, raw in MALFORMED.items():
        response = await redeem(client, shopper, raw)

        body = assert_problem(response, 422, "code_malformed", param="code")
        assert "code" in body["detail"].lower(), what
    assert (await balance_of(client, shopper))["total"] == 0


async def test_one_changed_symbol_or_adjacent_swap_is_code_mistyped(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a real issued code, when one symbol anywhere is changed or two different
    neighbours are swapped, then the answer is 422 code_mistyped (a typo), never
    code_not_found, and the card stays redeemable."""
    admin = await api_key(services)
    [card] = await issue(client, admin)
    shopper = await sign_up(client)
    code = normalized(card["code"])
    typos = []
    for position in (0, 7, 15):
        replacement = next(s for s in ALPHABET if s != code[position])
        typos.append(code[:position] + replacement + code[position + 1 :])
    position = next(i for i in range(15) if code[i] != code[i + 1])
    typos.append(code[:position] + code[position + 1] + code[position] + code[position + 2 :])

    for typo in typos:
        response = await redeem(client, shopper, format_code(typo))

        body = assert_problem(response, 422, "code_mistyped", param="code")
        assert "mistyped" in body["detail"]
    assert (await balance_of(client, shopper))["total"] == 0
    assert (await redeem(client, shopper, card["code"])).status_code == 201


async def test_valid_code_never_issued_is_code_not_found(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a code that passes the check but was never issued, when redeemed, then the
    answer is 404 code_not_found with a sentence about checking the code."""
    shopper = await sign_up(client)

    response = await redeem(client, shopper, format_code(generate_code()))

    body = assert_problem(response, 404, "code_not_found", param="code")
    assert "find" in body["detail"]
    assert (await balance_of(client, shopper))["total"] == 0


# --- refusals that depend on the card -------------------------------------------------


async def test_already_redeemed_code_says_whose_account_and_when(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a code shopper A redeemed, when A redeems it again days later, then 409
    code_already_redeemed says 'your account' and the date; when shopper B tries it, the
    same code says another account (not who); each balance is credited at most once."""
    admin = await api_key(services)
    [card] = await issue(client, admin, amount=1234)
    first, second = await sign_up(client), await sign_up(client)
    assert (await redeem(client, first, card["code"])).status_code == 201
    redeemed_on = long_date(clock)
    clock.advance(timedelta(days=3))

    again = await redeem(client, first, card["code"])
    by_other = await redeem(client, second, card["code"])

    body = assert_problem(again, 409, "code_already_redeemed", param="code")
    assert "your account" in body["detail"]
    assert redeemed_on in body["detail"]
    other_body = assert_problem(by_other, 409, "code_already_redeemed", param="code")
    assert "another account" in other_body["detail"]
    assert redeemed_on in other_body["detail"]
    assert "your account" not in other_body["detail"]
    assert first.email not in other_body["detail"]
    assert (await balance_of(client, first))["available"] == 1234
    assert (await balance_of(client, second))["total"] == 0


async def test_physical_card_not_activated_then_activated(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a physical card not yet sold, when redeemed, then 409 code_not_active; once
    activated through POST /v1/cards/activate, the same code redeems."""
    admin = await api_key(services)
    [card] = await issue(client, admin, kind="physical", amount=5000)
    shopper = await sign_up(client)

    refused = await redeem(client, shopper, card["code"])

    body = assert_problem(refused, 409, "code_not_active", param="code")
    assert "activated" in body["detail"]
    activated = await client.post(
        "/v1/cards/activate", json={"serial": card["serial"]}, headers=admin
    )
    assert activated.status_code == 200, activated.text
    assert activated.json()["state"] == "active"
    redeemed = await redeem(client, shopper, card["code"])
    assert redeemed.status_code == 201, redeemed.text
    assert (await balance_of(client, shopper))["available"] == 5000


async def test_frozen_card_is_refused_until_unfrozen(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a card frozen by support, when redeemed, then 409 code_frozen tells the
    shopper to contact support; after unfreezing, the code redeems."""
    admin = await api_key(services)
    [card] = await issue(client, admin, amount=700)
    shopper = await sign_up(client)
    await services.db.run(
        lambda connection: cards.freeze(
            connection,
            card_number(card),
            reason="reported stolen",
            actor="test",
            now=services.clock.now(),
        )
    )

    refused = await redeem(client, shopper, card["code"])

    body = assert_problem(refused, 409, "code_frozen", param="code")
    assert "support" in body["detail"]
    await services.db.run(
        lambda connection: cards.unfreeze(
            connection,
            card_number(card),
            reason="owner found",
            actor="test",
            now=services.clock.now(),
        )
    )
    assert (await redeem(client, shopper, card["code"])).status_code == 201
    assert (await balance_of(client, shopper))["available"] == 700


async def test_expired_card_is_refused_with_its_date(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a card redeemable until tomorrow, when the clock passes its expiry, then
    redeeming gives 409 code_expired naming the expiry date; before it, it redeems."""
    admin = await api_key(services)
    expires_at = clock.now() + timedelta(days=1)
    expiring, still_fine = await issue(client, admin, count=2, expires_at=expires_at.isoformat())
    shopper = await sign_up(client)
    clock.advance(timedelta(hours=23))
    assert (await redeem(client, shopper, still_fine["code"])).status_code == 201

    clock.advance(timedelta(hours=1))
    response = await redeem(client, shopper, expiring["code"])

    body = assert_problem(response, 409, "code_expired", param="code")
    assert str(format_date(expires_at, format="long", locale="en_US")) in body["detail"]
    assert (await balance_of(client, shopper))["available"] == 2500


async def test_card_of_another_region_names_both_stores(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a GB card and a US account, when the US shopper redeems it, then 409
    region_mismatch names the United Kingdom and the United States stores."""
    admin = await api_key(services)
    [card] = await issue(client, admin, region="GB")
    shopper = await sign_up(client, region="US")

    response = await redeem(client, shopper, card["code"])

    body = assert_problem(response, 409, "region_mismatch", param="code")
    assert "United Kingdom store" in body["detail"]
    assert "United States store" in body["detail"]
    assert (await balance_of(client, shopper)) == {
        "currency": "USD",
        "available": 0,
        "held": 0,
        "total": 0,
    }
    briton = await sign_up(client, region="GB")
    redeemed = await redeem(client, briton, card["code"])
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["currency"] == "GBP"


# --- forgiving input ------------------------------------------------------------------


def _spelled(code: str, how: str) -> str:
    groups = [code[i : i + 4] for i in range(0, 16, 4)]
    if how == "lower":
        return "-".join(groups).lower()
    if how == "spaces":
        return "  " + " ".join(groups) + " "
    if how == "no-dashes":
        return "".join(groups)
    if how == "unicode-dashes":
        return "\u2013".join(groups[:2]) + "\u2014" + "\u2212".join(groups[2:])
    if how == "O-for-0":
        return "-".join(groups).replace("0", "O")
    if how == "o-for-0":
        return "-".join(groups).replace("0", "o")
    if how == "I-for-1":
        return "-".join(groups).replace("1", "I")
    if how == "L-for-1":
        return "-".join(groups).replace("1", "L")
    if how == "l-for-1":
        return "-".join(groups).replace("1", "l")
    raise AssertionError(how)


async def test_forgiving_spellings_of_a_code_redeem(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given issued codes, when each is typed in a forgiving spelling (lower case, spaces,
    no dashes, Unicode dashes, O for 0, I or L for 1), then each redeems once."""
    admin = await api_key(services)
    issued = await issue(client, admin, amount=100, count=30)
    shopper = await sign_up(client)
    plain = ["lower", "spaces", "no-dashes", "unicode-dashes"]
    with_zero = ["O-for-0", "o-for-0"]
    with_one = ["I-for-1", "L-for-1", "l-for-1"]
    pool = [normalized(card["code"]) for card in issued]
    plan: list[tuple[str, str]] = []
    for how in with_zero:
        code = next(c for c in pool if "0" in c)
        pool.remove(code)
        plan.append((code, how))
    for how in with_one:
        code = next(c for c in pool if "1" in c)
        pool.remove(code)
        plan.append((code, how))
    plan += [(pool.pop(), how) for how in plain]

    for code, how in plan:
        spelled = _spelled(code, how)
        assert spelled.replace("-", "") != code or how == "no-dashes"
        response = await redeem(client, shopper, spelled)
        assert response.status_code == 201, (how, response.text)
        assert response.json()["card"]["last4"] == code[-4:]

    assert (await balance_of(client, shopper))["available"] == 100 * len(plan)


# --- idempotency ----------------------------------------------------------------------


async def test_same_key_same_body_replays_first_response_and_credits_once(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a redemption sent with an Idempotency-Key, when it is retried with the same
    key and body (even later), then the first response comes back byte for byte, marked
    Idempotent-Replayed, and the balance is credited once."""
    admin = await api_key(services)
    [card] = await issue(client, admin, amount=2500)
    shopper = await sign_up(client)

    first = await redeem(client, shopper, card["code"], key="redeem-1")
    clock.advance(timedelta(minutes=5))
    second = await redeem(client, shopper, card["code"], key="redeem-1")

    assert first.status_code == second.status_code == 201, second.text
    assert second.content == first.content
    assert first.headers["content-type"] == second.headers["content-type"] == "application/json"
    assert second.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert (await balance_of(client, shopper))["available"] == 2500
    history = (await client.get("/v1/me/transactions", headers=shopper.auth)).json()
    assert len(history["data"]) == 1


async def test_refused_redemption_with_key_replays_the_same_refusal(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a redemption refused (card not active) under a key, when the card is then
    activated and the request retried with the same key, then the first refusal is
    replayed byte for byte (a mistyped code's non-ASCII detail too); without a key the
    code redeems."""
    admin = await api_key(services)
    [card] = await issue(client, admin, kind="physical")
    shopper = await sign_up(client)
    first = await redeem(client, shopper, card["code"], key="try-1")
    assert_problem(first, 409, "code_not_active", param="code")
    activated = await client.post(
        "/v1/cards/activate", json={"serial": card["serial"]}, headers=admin
    )
    assert activated.status_code == 200, activated.text

    replay = await redeem(client, shopper, card["code"], key="try-1")

    assert_problem(replay, 409, "code_not_active", param="code")
    assert replay.content == first.content
    assert replay.headers.get("idempotent-replayed") == "true"
    assert (await balance_of(client, shopper))["total"] == 0
    assert (await redeem(client, shopper, card["code"])).status_code == 201
    # A detail with non-ASCII text (an em dash) replays byte for byte too.
    code = generate_code()
    typo = code[:3] + next(s for s in ALPHABET if s != code[3]) + code[4:]
    first_typo = await redeem(client, shopper, typo, key="typo")
    replayed_typo = await redeem(client, shopper, typo, key="typo")
    assert_problem(first_typo, 422, "code_mistyped", param="code")
    assert "\u2014" in first_typo.json()["detail"]
    assert replayed_typo.headers["content-type"].startswith(PROBLEM)
    assert replayed_typo.content == first_typo.content


async def test_key_reused_with_another_body_conflicts_but_keys_are_per_caller(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a key a shopper used for one code, when the same shopper sends it with
    another code, then 409 idempotency_key_reused and nothing is redeemed; when another
    shopper uses the same key for their own code, it redeems: keys never cross callers."""
    admin = await api_key(services)
    one, two, three = await issue(client, admin, count=3, amount=300)
    alice, bob = await sign_up(client), await sign_up(client)
    assert (await redeem(client, alice, one["code"], key="same-key")).status_code == 201

    reused = await redeem(client, alice, two["code"], key="same-key")
    bobs = await redeem(client, bob, three["code"], key="same-key")

    assert_problem(reused, 409, "idempotency_key_reused")
    assert (await balance_of(client, alice))["available"] == 300
    assert bobs.status_code == 201, bobs.text
    assert "idempotent-replayed" not in bobs.headers
    assert bobs.json()["card"]["last4"] == three["last4"]
    assert (await balance_of(client, bob))["available"] == 300
    assert (await redeem(client, alice, two["code"])).status_code == 201


async def test_bad_idempotency_key_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an empty, overlong, non-ASCII or control-character Idempotency-Key, when
    redeeming, then 422 validation_error names the header and the card stays unredeemed;
    a key of exactly 255 characters is accepted."""
    admin = await api_key(services)
    [card] = await issue(client, admin)
    shopper = await sign_up(client)

    for key in (b"", b"x" * 256, "caf\u00e9".encode("latin-1"), b"a\x01b"):
        headers = {name.encode(): value.encode() for name, value in shopper.auth.items()}
        headers[b"Idempotency-Key"] = key
        response = await client.post(
            "/v1/me/redemptions", json={"code": card["code"]}, headers=headers
        )
        assert_problem(response, 422, "validation_error", param="Idempotency-Key")
    assert (await balance_of(client, shopper))["total"] == 0

    longest = await redeem(client, shopper, card["code"], key="k" * 255)
    assert longest.status_code == 201, longest.text


# --- what a redemption leaves: response, balance, history -----------------------------


async def test_redemption_response_shape_and_never_the_full_code(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given a code, when redeemed, then 201 has id, amount, currency, balance, card
    serial and last4, and created_at, and neither the response nor the history holds the
    full code."""
    admin = await api_key(services)
    [card] = await issue(client, admin, amount=2500)
    shopper = await sign_up(client)

    response = await redeem(client, shopper, card["code"])

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "amount", "currency", "balance", "card", "created_at"}
    assert body["id"].startswith("txn_")
    assert body["amount"] == 2500
    assert body["currency"] == "USD"
    assert body["balance"] == {"currency": "USD", "available": 2500, "held": 0, "total": 2500}
    assert body["card"] == {"serial": card["serial"], "last4": card["code"][-4:]}
    history = await client.get("/v1/me/transactions", headers=shopper.auth)
    code = normalized(card["code"])
    for text in (response.text, history.text):
        assert card["code"] not in text
        assert code not in text
        assert code[:12] not in text
    fetched = (await client.get(f"/v1/cards/{card['id']}", headers=admin)).json()
    assert fetched["state"] == "redeemed"
    assert fetched["redeemed_at"] is not None


async def test_history_pages_newest_first_with_cursor(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given five redemptions of different amounts, when the history is read two at a
    time with starting_after, then pages come newest first with has_more, and each item
    carries card_last4 and the running balance_after."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    amounts = [100, 250, 400, 1000, 5]
    issued: list[dict[str, Any]] = []
    for amount in amounts:
        [card] = await issue(client, admin, amount=amount)
        issued.append(card)
        assert (await redeem(client, shopper, card["code"])).status_code == 201
        clock.advance(timedelta(minutes=1))

    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["starting_after"] = cursor
        response = await client.get("/v1/me/transactions", params=params, headers=shopper.auth)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if not pages[-1]["has_more"]:
            break
        cursor = pages[-1]["data"][-1]["id"]
        assert len(pages) < 10

    assert [len(page["data"]) for page in pages] == [2, 2, 1]
    assert [page["has_more"] for page in pages] == [True, True, False]
    items = [item for page in pages for item in page["data"]]
    assert [item["amount"] for item in items] == amounts[::-1]
    assert [item["card_last4"] for item in items] == [c["last4"] for c in issued][::-1]
    running = [sum(amounts[: i + 1]) for i in range(len(amounts))]
    assert [item["balance_after"] for item in items] == running[::-1]
    assert all(item["type"] == "redemption" and item["currency"] == "USD" for item in items)
    assert len({item["id"] for item in items}) == 5
    stamps = [item["created_at"] for item in items]
    assert stamps == sorted(stamps, reverse=True)
    whole = (await client.get("/v1/me/transactions", headers=shopper.auth)).json()
    assert whole["data"] == items
    assert whole["has_more"] is False
    assert (await balance_of(client, shopper))["available"] == sum(amounts)


async def test_history_empty_then_exactly_full_page_has_no_more(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a new shopper, their history is empty; given two redemptions, when read
    with limit=2, then has_more is false (the edge where a page is exactly full), and
    limit=1 says has_more true."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    empty = await client.get("/v1/me/transactions", headers=shopper.auth)
    assert empty.status_code == 200
    assert empty.json() == {"data": [], "has_more": False}
    for card in await issue(client, admin, count=2, amount=10):
        assert (await redeem(client, shopper, card["code"])).status_code == 201

    full = await client.get("/v1/me/transactions?limit=2", headers=shopper.auth)
    partial = await client.get("/v1/me/transactions?limit=1", headers=shopper.auth)
    widest = await client.get("/v1/me/transactions?limit=100", headers=shopper.auth)

    assert full.json()["has_more"] is False
    assert len(full.json()["data"]) == 2
    assert partial.json()["has_more"] is True
    assert len(partial.json()["data"]) == 1
    assert widest.status_code == 200
    assert len(widest.json()["data"]) == 2


BAD_HISTORY_QUERIES = [
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("limit=2.5", "limit"),
    ("starting_after=abc", "starting_after"),
    ("starting_after=txn_", "starting_after"),
    ("starting_after=txn_12x", "starting_after"),
    ("starting_after=cus_1", "starting_after"),
    ("starting_after=txn_%D9%A1", "starting_after"),
    ("starting_after=" + "9" * 60, "starting_after"),
]


async def test_bad_history_query_is_validation_error(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a bad limit (0, 101, negative, not a number) or a cursor that is not a
    transaction id, when the history is read, then 422 validation_error names the
    parameter."""
    shopper = await sign_up(client)

    for query, param in BAD_HISTORY_QUERIES:
        response = await client.get(f"/v1/me/transactions?{query}", headers=shopper.auth)

        assert_problem(response, 422, "validation_error", param=param)
