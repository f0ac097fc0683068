"""Cards over HTTP: issuing digital and physical cards, reading them back without their
codes, activating physical cards, and replaying an issuance by its idempotency key."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx

from giftcard import ids
from giftcard.clock import FrozenClock
from giftcard.codes import ALPHABET, generate_serial
from giftcard.services import Services
from tests.conftest import api_key, assert_problem, issue

CODE_SHAPE = re.compile(rf"^[{ALPHABET}]{{4}}(-[{ALPHABET}]{{4}}){{3}}$")
SERIAL_SHAPE = re.compile(r"^[1-9][0-9]{11}$")
CARD_FIELDS = {
    "id",
    "serial",
    "last4",
    "kind",
    "state",
    "amount",
    "currency",
    "region",
    "expires_at",
    "activated_at",
    "redeemed_at",
    "created_at",
}


async def card_count(services: Services) -> int:
    from sqlalchemy import func, select

    from giftcard.db.tables import cards

    async with services.db.transaction(write=False) as connection:
        query = select(func.count()).select_from(cards)
        return int((await connection.execute(query)).scalar_one())


async def test_issue_digital_card_shape_and_read_back_without_code(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a merchant key, when it issues a digital card, then 201 has the card with its
    full code formatted XXXX-XXXX-XXXX-XXXX, state active; GET /v1/cards/{id} returns the
    same card without any code, and an id naming no card is 404 not_found."""
    merchant = await api_key(services, "merchant")

    response = await client.post(
        "/v1/cards",
        json={"amount": 2500, "region": "US", "kind": "digital"},
        headers=merchant,
    )

    assert response.status_code == 201, response.text
    [card] = response.json()["data"]
    assert set(card) == CARD_FIELDS | {"code"}
    assert CODE_SHAPE.match(card["code"]), card["code"]
    assert SERIAL_SHAPE.match(card["serial"]), card["serial"]
    assert card["last4"] == card["code"][-4:]
    assert card["id"].startswith("card_")
    assert card["state"] == "active"
    assert card["kind"] == "digital"
    assert (card["amount"], card["currency"], card["region"]) == (2500, "USD", "US")
    assert card["expires_at"] is None
    assert card["activated_at"] is not None
    assert card["redeemed_at"] is None
    fetched = await client.get(f"/v1/cards/{card['id']}", headers=merchant)
    assert fetched.status_code == 200, fetched.text
    assert set(fetched.json()) == CARD_FIELDS
    assert fetched.json() == {key: value for key, value in card.items() if key != "code"}
    code = card["code"].replace("-", "")
    assert code not in fetched.text
    assert card["code"] not in fetched.text
    number = ids.parse_id(ids.CARD, card["id"])
    for bad in [
        ids.format_id(ids.CARD, number + 1),
        f"card_{number}",  # this card's sequential id of old names nothing now
        "card_0",
        "card_999999999999999999",
        "card_" + "9" * 40,
        "card_abc",
        "card_",
        "card_-1",
        ids.format_id(ids.CUSTOMER, number),
        card["id"].replace("card_", "cus_"),
        str(number),
        "card_%D9%A1",
    ]:
        missing = await client.get(f"/v1/cards/{bad}", headers=merchant)
        assert_problem(missing, 404, "not_found")


async def test_issue_physical_cards_inactive_and_many_at_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an admin key, when it issues 1000 physical JP cards in one request, then all
    are inactive, in JPY, with distinct codes and serials each shown once in full."""
    admin = await api_key(services, "admin")

    issued = await issue(client, admin, amount=3000, region="JP", kind="physical", count=1000)

    assert len(issued) == 1000
    assert {card["state"] for card in issued} == {"inactive"}
    assert {card["kind"] for card in issued} == {"physical"}
    assert {card["currency"] for card in issued} == {"JPY"}
    assert {card["activated_at"] for card in issued} == {None}
    assert len({card["code"] for card in issued}) == 1000
    assert len({card["serial"] for card in issued}) == 1000
    assert len({card["id"] for card in issued}) == 1000
    assert all(CODE_SHAPE.match(card["code"]) for card in issued)
    assert await card_count(services) == 1000
    fetched = (await client.get(f"/v1/cards/{issued[-1]['id']}", headers=admin)).json()
    assert fetched["state"] == "inactive"
    too_many = await client.post(
        "/v1/cards",
        json={"amount": 1, "region": "US", "kind": "digital", "count": 1001},
        headers=admin,
    )
    assert_problem(too_many, 422, "validation_error", param="count")
    assert await card_count(services) == 1000


async def test_currency_given_must_match_the_region(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a region, when the issue request names its currency, then it is accepted;
    when it names another currency, then 409 currency_mismatch on `currency` and no card
    is issued."""
    admin = await api_key(services)

    matching = await issue(client, admin, region="DE", currency="EUR")
    assert matching[0]["currency"] == "EUR"
    for region, currency in [("US", "GBP"), ("FR", "USD"), ("JP", "EUR"), ("US", "usd")]:
        response = await client.post(
            "/v1/cards",
            json={"amount": 100, "region": region, "currency": currency, "kind": "digital"},
            headers=admin,
        )
        body = assert_problem(response, 409, "currency_mismatch", param="currency")
        assert currency in body["detail"]

    assert await card_count(services) == 1


async def test_expires_at_must_be_an_aware_future_timestamp(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    """Given an issue request, when expires_at is in the past, exactly now, naive or not a
    timestamp, then 422 validation_error on `expires_at`; a future one is kept."""
    admin = await api_key(services)
    now = clock.now()
    base = {"amount": 100, "region": "US", "kind": "digital"}

    for expires_at in [
        (now - timedelta(days=1)).isoformat(),
        now.isoformat(),
        (now + timedelta(days=1)).replace(tzinfo=None).isoformat(),
        "tomorrow",
        "2030-13-01T00:00:00Z",
        12345,
    ]:
        response = await client.post(
            "/v1/cards", json={**base, "expires_at": expires_at}, headers=admin
        )
        assert_problem(response, 422, "validation_error", param="expires_at")
    assert await card_count(services) == 0

    future = now + timedelta(days=30)
    [card] = await issue(client, admin, expires_at=future.isoformat())
    assert card["expires_at"] is not None
    assert datetime.fromisoformat(card["expires_at"]) == future


async def test_activation(client: httpx.AsyncClient, services: Services) -> None:
    """Given a physical card, when activated by its serial (spaces allowed), then it is
    active; activating it again or activating a digital card is 409 invalid_state; an
    unknown serial is 404 not_found; a mistyped serial is 422."""
    merchant = await api_key(services, "merchant")
    [physical] = await issue(client, merchant, kind="physical")
    [digital] = await issue(client, merchant)
    serial = physical["serial"]
    spaced = f"{serial[:4]} {serial[4:8]} {serial[8:]}"

    activated = await client.post("/v1/cards/activate", json={"serial": spaced}, headers=merchant)

    assert activated.status_code == 200, activated.text
    body = activated.json()
    assert set(body) == CARD_FIELDS
    assert body["id"] == physical["id"]
    assert body["state"] == "active"
    assert body["activated_at"] is not None
    again = await client.post("/v1/cards/activate", json={"serial": serial}, headers=merchant)
    assert_problem(again, 409, "invalid_state")
    of_digital = await client.post(
        "/v1/cards/activate", json={"serial": digital["serial"]}, headers=merchant
    )
    assert_problem(of_digital, 409, "invalid_state")
    unknown = generate_serial()
    while unknown in (physical["serial"], digital["serial"]):
        unknown = generate_serial()
    missing = await client.post("/v1/cards/activate", json={"serial": unknown}, headers=merchant)
    assert_problem(missing, 404, "not_found", param="serial")
    mistyped = serial[:-1] + str((int(serial[-1]) + 1) % 10)
    typo = await client.post("/v1/cards/activate", json={"serial": mistyped}, headers=merchant)
    assert_problem(typo, 422, "validation_error", param="serial")
    for junk in ["", "abc", "1" * 65]:
        response = await client.post("/v1/cards/activate", json={"serial": junk}, headers=merchant)
        assert_problem(response, 422, "validation_error", param="serial")


async def test_idempotent_issuance_replays_the_same_cards_without_codes(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given cards issued with an Idempotency-Key, when the same request is retried, then
    the same card ids come back with code null and no new card is issued; the same key
    with another body is 409 idempotency_key_reused."""
    admin = await api_key(services)
    body = {"amount": 500, "region": "CA", "kind": "digital", "count": 3}
    headers = {**admin, "Idempotency-Key": "batch-42"}

    first = await client.post("/v1/cards", json=body, headers=headers)
    replay = await client.post("/v1/cards", json=body, headers=headers)

    assert first.status_code == replay.status_code == 201, replay.text
    assert replay.headers.get("idempotent-replayed") == "true"
    first_cards = first.json()["data"]
    replayed_cards = replay.json()["data"]
    assert [c["id"] for c in replayed_cards] == [c["id"] for c in first_cards]
    assert [c["serial"] for c in replayed_cards] == [c["serial"] for c in first_cards]
    assert all(c["code"] is None for c in replayed_cards)
    assert all(CODE_SHAPE.match(c["code"]) for c in first_cards)
    for card in first_cards:
        assert card["code"] not in replay.text
        assert card["code"].replace("-", "") not in replay.text
    assert await card_count(services) == 3
    reused = await client.post("/v1/cards", json={**body, "count": 4}, headers=headers)
    assert_problem(reused, 409, "idempotency_key_reused")
    other_key = await api_key(services)
    fresh = await client.post(
        "/v1/cards", json=body, headers={**other_key, "Idempotency-Key": "batch-42"}
    )
    assert fresh.status_code == 201
    assert "idempotent-replayed" not in fresh.headers
    assert await card_count(services) == 6
