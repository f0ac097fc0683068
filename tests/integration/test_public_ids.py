"""Ids as the API hands them out: they tell no counts or order, page correctly, and name
nothing when they come from another installation or from before they were enciphered."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from giftcard import audit, ids
from giftcard.db.tables import customers, payments
from giftcard.services import Services
from tests.conftest import api_key, assert_problem, issue, sign_up, staff_member

OPAQUE = re.compile(r"(cus|pay|txn|card)_[0-9a-hjkmnp-tv-z]{13}")


async def test_ids_handed_out_tell_no_count_and_read_back_to_their_rows(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given customers, cards, payments and movements made one after another, then every
    id is opaque, none holds its row's number, their order is not the rows' order, and
    each reads back to the row it names."""
    merchant = await api_key(services, "merchant")
    shoppers = [await sign_up(client) for _ in range(8)]
    cards = await issue(client, merchant, count=8)
    payment_ids = []
    for shopper, card in zip(shoppers, cards, strict=True):
        redeemed = await client.post(
            "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
        )
        assert redeemed.status_code == 201, redeemed.text
        assert OPAQUE.fullmatch(redeemed.json()["id"])
        paid = await client.post(
            "/v1/payments",
            json={"customer_id": shopper.id, "order_id": "o-1", "amount": 100,
                  "currency": "USD", "use_balance": "max"},
            headers=merchant,
        )  # fmt: skip
        assert paid.status_code == 201, paid.text
        payment_ids.append(paid.json()["id"])

    for made in ([s.id for s in shoppers], [c["id"] for c in cards], payment_ids):
        assert all(OPAQUE.fullmatch(public) for public in made), made
        assert made != sorted(made)
        assert made != sorted(made, reverse=True)
    async with services.db.transaction(write=False) as connection:
        customer_keys = (await connection.execute(select(customers.c.id))).scalars().all()
        payment_keys = (await connection.execute(select(payments.c.id))).scalars().all()
    for key in customer_keys:
        assert all(not public.endswith(f"_{key}") for public in (s.id for s in shoppers))
    assert sorted(ids.parse_id(ids.CUSTOMER, s.id) for s in shoppers) == sorted(customer_keys)
    assert sorted(ids.parse_id(ids.PAYMENT, p) for p in payment_ids) == sorted(payment_keys)
    for payment_id in payment_ids:
        fetched = await client.get(f"/v1/payments/{payment_id}", headers=merchant)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["id"] == payment_id


async def test_ids_from_another_installation_or_of_old_name_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    """An id enciphered under another server's key, or a row's sequential id of old, is
    404 here, though the row behind its number exists."""
    merchant = await api_key(services, "merchant")
    shopper = await sign_up(client)
    [card] = await issue(client, merchant, amount=500)
    await client.post("/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth)
    created = await client.post(
        "/v1/payments",
        json={"customer_id": shopper.id, "order_id": "o-2", "amount": 100, "currency": "USD",
              "use_balance": "max"},
        headers=merchant,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    number = ids.parse_id(ids.PAYMENT, created.json()["id"])
    card_number = ids.parse_id(ids.CARD, card["id"])

    ids.use_secret(b"another store's secret key, 0123456789abcdef")
    elsewhere_payment = ids.format_id(ids.PAYMENT, number)
    elsewhere_card = ids.format_id(ids.CARD, card_number)
    ids.use_secret(services.settings.secret_key)

    for wrong in (elsewhere_payment, f"pay_{number}"):
        assert_problem(
            await client.get(f"/v1/payments/{wrong}", headers=merchant), 404, "not_found"
        )
    for wrong in (elsewhere_card, f"card_{card_number}"):
        assert_problem(await client.get(f"/v1/cards/{wrong}", headers=merchant), 404, "not_found")
    assert (await client.get(f"/v1/cards/{card['id']}", headers=merchant)).status_code == 200


async def test_history_pages_by_opaque_cursors_in_order(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Twelve movements read three to a page: each page's last id pages on, newest first,
    every movement once, though the ids themselves are in no order."""
    merchant = await api_key(services, "merchant")
    shopper = await sign_up(client)
    for card in await issue(client, merchant, amount=100, count=12):
        redeemed = await client.post(
            "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
        )
        assert redeemed.status_code == 201
    seen: list[dict[str, object]] = []
    params: dict[str, str | int] = {"limit": 3}
    while True:
        page = await client.get("/v1/me/transactions", params=params, headers=shopper.auth)
        assert page.status_code == 200, page.text
        seen += page.json()["data"]
        if not page.json()["has_more"]:
            break
        params = {"limit": 3, "starting_after": str(seen[-1]["id"])}
    assert [item["balance_after"] for item in seen] == list(range(1200, 0, -100))
    assert len({item["id"] for item in seen}) == 12
    listed = [str(item["id"]) for item in seen]
    assert listed != sorted(listed)
    assert listed != sorted(listed, reverse=True)


async def test_the_audit_log_finds_an_entry_by_either_spelling_of_its_target(
    client: httpx.AsyncClient, services: Services
) -> None:
    """An entry recorded before ids were enciphered (`card_7`) and one recorded since
    (the card's id of today) are both found by either spelling; another card's are not."""
    agent = await staff_member(client, services, "support")
    today = ids.format_id(ids.CARD, 7)
    actor = audit.Actor("staff:1", "support")
    for target in ("card_7", today, "card_8", ids.format_id(ids.CARD, 70)):
        await services.db.run(
            lambda connection, target=target: audit.record(
                connection, actor, audit.Action("card.lookup", target=target),
                now=services.clock.now(),
            )
        )  # fmt: skip
    for spelling in ("card_7", today):
        found = await client.get(
            "/v1/support/audit-log", params={"target": spelling}, headers=agent.auth
        )
        assert found.status_code == 200, found.text
        assert sorted(entry["target"] for entry in found.json()["data"]) == sorted(
            ["card_7", today]
        )
