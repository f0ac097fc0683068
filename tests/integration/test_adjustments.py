"""Balance adjustments over HTTP, on SQLite and PostgreSQL: small ones applied at once
through the ledger, large ones waiting for a second staff member, every refusal (zero,
another currency, a deduction the balance does not cover, an unknown reason, no note,
approving one's own, approving with an API key, deciding twice) changing nothing, and
the audit entries of each step."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from giftcard import ids
from giftcard.db.tables import adjustments, journal_transactions
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import (
    Shopper,
    StaffMember,
    api_key,
    assert_problem,
    sign_up,
    staff_member,
)
from tests.integration.test_support_customers import audit_entries, funded

NOTE = "Customer reported a missing credit, ticket 4411"


async def adjust(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    shopper: Shopper,
    amount: int,
    *,
    reason: str = "goodwill",
    note: str = NOTE,
    **extra: Any,
) -> httpx.Response:
    return await client.post(
        f"/v1/support/customers/{shopper.id}/adjustments",
        json={"amount": amount, "reason": reason, "note": note, **extra},
        headers=headers,
    )


async def balance(client: httpx.AsyncClient, shopper: Shopper) -> int:
    body = (await client.get("/v1/me/balance", headers=shopper.auth)).json()
    available: int = body["available"]
    return available


async def counts(services: Services) -> tuple[int, int]:
    """How many adjustments and adjustment journal transactions exist."""
    async with services.db.transaction(write=False) as connection:
        made = (
            await connection.execute(select(func.count()).select_from(adjustments))
        ).scalar_one()
        moved = (
            await connection.execute(
                select(func.count())
                .select_from(journal_transactions)
                .where(journal_transactions.c.type == "adjustment")
            )
        ).scalar_one()
    return int(made), int(moved)


async def pending_one(
    client: httpx.AsyncClient, services: Services, amount: int = 15000, funds: int = 2500
) -> tuple[Shopper, StaffMember, dict[str, Any]]:
    shopper = await funded(client, services, funds)
    creator = await staff_member(client, services, "support")
    made = await adjust(client, creator.auth, shopper, amount)
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "pending_approval"
    return shopper, creator, made.json()


async def test_a_small_credit_is_applied_at_once_through_the_ledger(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services, 2500)
    agent = await staff_member(client, services, "support")

    made = await adjust(client, agent.auth, shopper, 10000, currency="USD")

    assert made.status_code == 201, made.text
    body = made.json()
    assert body["id"].startswith("adj_")
    assert body["status"] == "applied"
    assert body["amount"] == 10000
    assert body["currency"] == "USD"
    assert body["reason"] == "goodwill"
    assert body["note"] == NOTE
    assert body["customer_id"] == shopper.id
    assert body["created_by"] == f"staff:{ids.parse_id(ids.STAFF, agent.id)}"
    assert body["transaction_id"].startswith("txn_")
    assert body["decided_by"] is None
    assert await balance(client, shopper) == 12500
    [item] = (await client.get("/v1/me/transactions", headers=shopper.auth)).json()["data"][:1]
    assert item["id"] == body["transaction_id"]
    assert item["type"] == "adjustment"
    assert item["amount"] == 10000
    assert item["description"] == "Goodwill credit from customer support"
    async with services.db.transaction(write=False) as connection:
        actor = (
            await connection.execute(
                select(journal_transactions.c.actor).where(
                    journal_transactions.c.id
                    == ids.parse_id(ids.TRANSACTION, body["transaction_id"])
                )
            )
        ).scalar_one()
    assert actor == body["created_by"]
    [entry] = await audit_entries(services, "adjustment.create")
    assert entry.target == body["id"]
    assert entry.outcome == "applied"
    assert entry.reason == "goodwill"
    assert entry.note == NOTE
    assert json.loads(entry.detail)["transaction_id"] == body["transaction_id"]
    assert (await verify(services.db)).problems == []


async def test_a_small_deduction_is_applied_and_one_too_large_for_the_balance_is_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services, 2500)
    key = await api_key(services, "support")

    taken = await adjust(client, key, shopper, -500, reason="fraud_reversal")
    before = await counts(services)
    refused = await adjust(client, key, shopper, -2001, reason="correction")

    assert taken.status_code == 201, taken.text
    assert taken.json()["status"] == "applied"
    body = assert_problem(refused, 409, "insufficient_balance", param="amount")
    assert "$20.00" in body["detail"]
    assert await balance(client, shopper) == 2000
    assert await counts(services) == before
    assert len(await audit_entries(services, "adjustment.create")) == 1


async def test_an_adjustment_above_the_threshold_waits_and_moves_no_money(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper, creator, made = await pending_one(client, services, 10001)

    assert made["transaction_id"] is None
    assert await balance(client, shopper) == 2500
    queue = await client.get(
        "/v1/support/adjustments", params={"status": "pending_approval"}, headers=creator.auth
    )
    assert [a["id"] for a in queue.json()["data"]] == [made["id"]]
    one = await client.get(f"/v1/support/adjustments/{made['id']}", headers=creator.auth)
    assert one.json() == made
    [entry] = await audit_entries(services, "adjustment.create")
    assert entry.outcome == "pending_approval"


async def test_a_second_staff_member_approves_and_it_is_applied(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper, _, made = await pending_one(client, services, -15000, funds=15000)
    approver = await staff_member(client, services, "admin")

    approved = await client.post(
        f"/v1/support/adjustments/{made['id']}/approve",
        json={"note": "Checked the order"},
        headers=approver.auth,
    )

    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "applied"
    assert body["decided_by"] == f"staff:{ids.parse_id(ids.STAFF, approver.id)}"
    assert body["decision_note"] == "Checked the order"
    assert body["transaction_id"].startswith("txn_")
    assert await balance(client, shopper) == 0
    queue = await client.get(
        "/v1/support/adjustments", params={"status": "pending_approval"}, headers=approver.auth
    )
    assert queue.json()["data"] == []
    [entry] = await audit_entries(services, "adjustment.approve")
    assert entry.target == made["id"]
    assert entry.actor_role == "admin"
    assert entry.note == "Checked the order"
    assert (await verify(services.db)).problems == []


async def test_approving_one_s_own_is_forbidden_and_changes_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper, creator, made = await pending_one(client, services)

    refused = await client.post(
        f"/v1/support/adjustments/{made['id']}/approve", headers=creator.auth
    )

    body = assert_problem(refused, 403, "forbidden")
    assert "your own adjustment" in body["detail"]
    assert await balance(client, shopper) == 2500
    assert (await client.get(f"/v1/support/adjustments/{made['id']}", headers=creator.auth)).json()[
        "status"
    ] == "pending_approval"
    assert await audit_entries(services, "adjustment.approve") == []


async def test_an_api_key_cannot_approve(client: httpx.AsyncClient, services: Services) -> None:
    shopper, _, made = await pending_one(client, services)
    for role in ("support", "admin"):
        refused = await client.post(
            f"/v1/support/adjustments/{made['id']}/approve", headers=await api_key(services, role)
        )
        body = assert_problem(refused, 403, "forbidden")
        assert "needs a person" in body["detail"]
    assert await balance(client, shopper) == 2500


async def test_rejected_and_applied_adjustments_cannot_be_decided_again(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper, creator, made = await pending_one(client, services)
    second = await staff_member(client, services, "support")
    rejected = await client.post(
        f"/v1/support/adjustments/{made['id']}/reject",
        json={"note": "No proof"},
        headers=second.auth,
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"

    for action in ("approve", "reject"):
        again = await client.post(
            f"/v1/support/adjustments/{made['id']}/{action}", headers=second.auth
        )
        assert_problem(again, 409, "invalid_state")

    other = await adjust(client, creator.auth, shopper, 20000)
    applied = await client.post(
        f"/v1/support/adjustments/{other.json()['id']}/approve", headers=second.auth
    )
    assert applied.status_code == 200, applied.text
    for action in ("approve", "reject"):
        again = await client.post(
            f"/v1/support/adjustments/{other.json()['id']}/{action}", headers=second.auth
        )
        assert_problem(again, 409, "invalid_state")
    assert await balance(client, shopper) == 22500
    [entry] = await audit_entries(services, "adjustment.reject")
    assert entry.note == "No proof"
    assert len(await audit_entries(services, "adjustment.approve")) == 1


async def test_the_creator_may_withdraw_their_own_by_rejecting_it(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services)
    key = await api_key(services, "support")
    made = await adjust(client, key, shopper, 50000)
    other_key = await api_key(services, "support")

    by_another_key = await client.post(
        f"/v1/support/adjustments/{made.json()['id']}/reject", headers=other_key
    )
    withdrawn = await client.post(
        f"/v1/support/adjustments/{made.json()['id']}/reject", headers=key
    )

    assert_problem(by_another_key, 403, "forbidden")
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "rejected"
    [entry] = await audit_entries(services, "adjustment.reject")
    assert json.loads(entry.detail)["withdrawn"] is True


async def test_an_approval_the_balance_no_longer_covers_is_refused_and_stays_pending(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services, 20000)
    creator = await staff_member(client, services, "support")
    made = await adjust(client, creator.auth, shopper, -15000)
    spent = await adjust(client, creator.auth, shopper, -10000)
    assert spent.json()["status"] == "applied"
    approver = await staff_member(client, services, "support")

    refused = await client.post(
        f"/v1/support/adjustments/{made.json()['id']}/approve", headers=approver.auth
    )

    assert_problem(refused, 409, "insufficient_balance")
    one = await client.get(f"/v1/support/adjustments/{made.json()['id']}", headers=approver.auth)
    assert one.json()["status"] == "pending_approval"
    assert one.json()["decided_by"] is None
    assert await balance(client, shopper) == 10000
    assert await audit_entries(services, "adjustment.approve") == []


@pytest.mark.parametrize(
    ("fields", "status", "code", "param"),
    [
        ({"amount": 0}, 422, "validation_error", "amount"),
        ({"amount": 1.5}, 422, "validation_error", "amount"),
        ({"amount": "100"}, 422, "validation_error", "amount"),
        ({"amount": True}, 422, "validation_error", "amount"),
        ({"amount": 1_000_000_001}, 422, "validation_error", "amount"),
        ({"amount": -1_000_000_001}, 422, "validation_error", "amount"),
        ({"currency": "EUR"}, 409, "currency_mismatch", "currency"),
        ({"reason": "because"}, 422, "validation_error", "reason"),
        ({"reason": None}, 422, "validation_error", "reason"),
        ({"note": ""}, 422, "validation_error", "note"),
        ({"note": "   "}, 422, "validation_error", "note"),
        ({"note": "x" * 2001}, 422, "validation_error", "note"),
        ({"note": None}, 422, "validation_error", "note"),
        ({"extra": 1}, 422, "validation_error", "extra"),
    ],
)
async def test_bad_input_is_refused_naming_its_field_and_changes_nothing(
    client: httpx.AsyncClient,
    services: Services,
    fields: dict[str, Any],
    status: int,
    code: str,
    param: str,
) -> None:
    shopper = await funded(client, services)
    key = await api_key(services, "support")
    body = {"amount": 100, "reason": "goodwill", "note": NOTE, **fields}

    refused = await client.post(
        f"/v1/support/customers/{shopper.id}/adjustments", json=body, headers=key
    )

    assert_problem(refused, status, code, param=param)
    assert await counts(services) == (0, 0)
    assert await balance(client, shopper) == 2500
    assert await audit_entries(services, "adjustment.create") == []


async def test_an_unknown_customer_or_adjustment_is_not_found(
    client: httpx.AsyncClient, services: Services
) -> None:
    agent = await staff_member(client, services, "support")
    missing = await client.post(
        "/v1/support/customers/cus_999999/adjustments",
        json={"amount": 100, "reason": "goodwill", "note": NOTE},
        headers=agent.auth,
    )
    assert_problem(missing, 404, "not_found")
    for path in ("/v1/support/adjustments/adj_999999", "/v1/support/adjustments/x"):
        assert_problem(await client.get(path, headers=agent.auth), 404, "not_found")
    for action in ("approve", "reject"):
        assert_problem(
            await client.post(f"/v1/support/adjustments/adj_999999/{action}", headers=agent.auth),
            404,
            "not_found",
        )


async def test_an_idempotent_retry_adjusts_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await funded(client, services)
    key = {**await api_key(services, "support"), "Idempotency-Key": "adj-1"}

    first = await adjust(client, key, shopper, 700)
    again = await adjust(client, key, shopper, 700)
    other = await adjust(client, key, shopper, 800)

    assert first.status_code == 201
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert_problem(other, 409, "idempotency_key_reused")
    assert await balance(client, shopper) == 3200
    assert await counts(services) == (1, 1)


async def test_the_queue_pages_newest_first_and_filters_by_status(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await sign_up(client)
    key = await api_key(services, "support")
    made = [(await adjust(client, key, shopper, 20000 + n)).json()["id"] for n in range(3)]
    applied = (await adjust(client, key, shopper, 5)).json()["id"]

    first = await client.get(
        "/v1/support/adjustments", params={"status": "pending_approval", "limit": 2}, headers=key
    )
    rest = await client.get(
        "/v1/support/adjustments",
        params={"status": "pending_approval", "limit": 2, "starting_after": made[1]},
        headers=key,
    )
    everything = await client.get("/v1/support/adjustments", headers=key)
    bad = await client.get("/v1/support/adjustments", params={"status": "nope"}, headers=key)

    assert [a["id"] for a in first.json()["data"]] == [made[2], made[1]]
    assert first.json()["has_more"] is True
    assert [a["id"] for a in rest.json()["data"]] == [made[0]]
    assert rest.json()["has_more"] is False
    assert [a["id"] for a in everything.json()["data"]] == [applied, *reversed(made)]
    assert_problem(bad, 422, "validation_error", param="status")
