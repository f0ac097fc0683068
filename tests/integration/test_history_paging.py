"""Paging through a history gives exactly the items of one big page, in the same order,
also when the ledger numbered two movements in one order and changed the balance in the
other (as `ledger.post` did, before it moved balances first, whenever two movements met
on one balance's row lock)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update

from giftcard import customers, ids, ledger
from giftcard.db.tables import journal_transactions, ledger_accounts, postings
from giftcard.ledger import AccountKind, Entry, Posting, TransactionType
from giftcard.services import Services
from tests.conftest import Shopper, api_key, assert_problem, issue, sign_up


async def page_one_by_one(client: httpx.AsyncClient, shopper: Shopper) -> list[dict[str, Any]]:
    """Every item of the shopper's history, read with limit=1 and the cursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": 1}
        if cursor is not None:
            params["starting_after"] = cursor
        response = await client.get("/v1/me/transactions", params=params, headers=shopper.auth)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["data"]
        if not page["has_more"]:
            return items
        cursor = page["data"][-1]["id"]
    raise AssertionError("the history did not end after 100 pages")


async def whole_history(client: httpx.AsyncClient, shopper: Shopper) -> list[dict[str, Any]]:
    response = await client.get("/v1/me/transactions?limit=100", headers=shopper.auth)
    assert response.status_code == 200, response.text
    assert response.json()["has_more"] is False
    items: list[dict[str, Any]] = response.json()["data"]
    return items


def credit(customer: customers.Customer, adjustments_account_id: int, amount: int) -> Entry:
    """An adjustment that adds `amount` to the customer's available balance."""
    return Entry(
        type=TransactionType.ADJUSTMENT,
        currency="USD",
        description=f"Goodwill credit of {amount}",
        actor="test",
        postings=[
            Posting(adjustments_account_id, -amount, tracked=False),
            Posting(customer.available_account_id, amount),
        ],
        customer_id=customer.id,
    )


async def funded_shopper(
    client: httpx.AsyncClient, services: Services, amounts: list[int]
) -> Shopper:
    """A new shopper who redeemed one card of each amount, in that order."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    for amount in amounts:
        [card] = await issue(client, admin, amount=amount)
        redeemed = await client.post(
            "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
        )
        assert redeemed.status_code == 201, redeemed.text
    return shopper


async def test_paging_one_by_one_matches_one_page(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a history of redemptions and a payment, when it is read one item at a
    time, then the items are those of one big page, in the same order, each once."""
    shopper = await funded_shopper(client, services, [300, 200, 100])
    merchant = await api_key(services, "merchant")
    paid = await client.post(
        "/v1/payments",
        json={
            "customer_id": shopper.id,
            "order_id": "o-paging",
            "amount": 250,
            "currency": "USD",
            "use_balance": "max",
        },
        headers=merchant,
    )
    assert paid.status_code == 201, paid.text

    paged = await page_one_by_one(client, shopper)
    whole = await whole_history(client, shopper)

    assert len(whole) == 4
    assert paged == whole
    assert [item["balance_after"] for item in whole] == [350, 600, 500, 300]


async def test_a_cursor_from_another_list_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A cursor that names no item of this customer's history, whether it names nothing
    or another customer's movement, is 422 `validation_error` on `starting_after`, with
    the same words either way; an item of the list pages on."""
    alice = await funded_shopper(client, services, [500])
    bob = await funded_shopper(client, services, [700, 100])
    alice_item = (await whole_history(client, alice))[0]["id"]
    bob_items = [item["id"] for item in await whole_history(client, bob)]

    someone_elses = await client.get(
        "/v1/me/transactions", params={"starting_after": alice_item}, headers=bob.auth
    )
    made_up = await client.get(
        "/v1/me/transactions",
        params={"starting_after": ids.format_id(ids.TRANSACTION, 987654321)},
        headers=bob.auth,
    )
    own = await client.get(
        "/v1/me/transactions", params={"starting_after": bob_items[0]}, headers=bob.auth
    )

    first = assert_problem(someone_elses, 422, "validation_error", param="starting_after")
    second = assert_problem(made_up, 422, "validation_error", param="starting_after")
    assert first["detail"] == second["detail"]
    assert alice_item not in someone_elses.text
    assert own.status_code == 200
    assert [item["id"] for item in own.json()["data"]] == bob_items[1:]


async def test_a_cursor_on_the_oldest_item_gives_an_empty_last_page(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The cursor of the oldest item is a cursor of this history like any other: the
    page after it is empty, with nothing more, not a refusal."""
    shopper = await funded_shopper(client, services, [400, 100])
    oldest = (await whole_history(client, shopper))[-1]["id"]

    after = await client.get(
        "/v1/me/transactions", params={"starting_after": oldest}, headers=shopper.auth
    )

    assert after.status_code == 200, after.text
    assert after.json()["data"] == []
    assert after.json()["has_more"] is False


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_paging_survives_movements_numbered_in_one_order_applied_in_another(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given movement A that took its journal number and then changed the balance after
    movement B, numbered after A (as rows `ledger.post` wrote when it numbered a movement
    before waiting for the balance's lock), when the history is paged one item at a
    time, then it has every item of one big page, in the same order (the order in which
    the balance changed), and `balance_after` chains."""
    shopper = await funded_shopper(client, services, [1000])
    customer = await customers.get_customer(services.db, ids.parse_id(ids.CUSTOMER, shopper.id))
    now = services.clock.now()
    async with services.db.transaction() as connection:
        adjustments = await ledger.system_account(connection, AccountKind.ADJUSTMENTS, "USD")
        # A takes its number ...
        a_id = (
            await connection.execute(
                insert(journal_transactions)
                .values(
                    type=TransactionType.ADJUSTMENT.value,
                    currency="USD",
                    description="Goodwill credit of 10",
                    actor="test",
                    customer_id=customer.id,
                    created_at=now,
                )
                .returning(journal_transactions.c.id)
            )
        ).scalar_one()
        # ... B, numbered after it, changes the balance ...
        posted_b = await ledger.post(
            connection, credit(customer, adjustments.account_id, 20), now=now
        )
        # ... and then A does.
        balance_a = (
            await connection.execute(
                update(ledger_accounts)
                .where(ledger_accounts.c.id == customer.available_account_id)
                .values(balance=ledger_accounts.c.balance + 10)
                .returning(ledger_accounts.c.balance)
            )
        ).scalar_one()
        await connection.execute(
            insert(postings),
            [
                {
                    "transaction_id": a_id,
                    "account_id": account_id,
                    "amount": amount,
                    "currency": "USD",
                    "balance_after": after,
                }
                for account_id, amount, after in (
                    (adjustments.account_id, -10, None),
                    (customer.available_account_id, 10, balance_a),
                )
            ],
        )
    posted_a = ledger.Posted(a_id, now, {customer.available_account_id: balance_a})

    # The interleaving: A was numbered first and applied second.
    assert posted_a.transaction_id < posted_b.transaction_id
    assert posted_b.balances_after[customer.available_account_id] == 1020
    assert posted_a.balances_after[customer.available_account_id] == 1030

    paged = await page_one_by_one(client, shopper)
    whole = await whole_history(client, shopper)

    assert [item["id"] for item in whole][:2] == [
        ids.format_id(ids.TRANSACTION, posted_a.transaction_id),
        ids.format_id(ids.TRANSACTION, posted_b.transaction_id),
    ]
    assert [item["balance_after"] for item in whole] == [1030, 1020, 1000]
    assert paged == whole
