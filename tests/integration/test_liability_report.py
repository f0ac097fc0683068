"""The liability report (GET /v1/reports/liability, support and admin): what the store
owes per region and currency after real work, reconciled against the ledger both ways,
and no longer reconciled once a row is changed behind the ledger's back; daily activity
over 1–366 days with every day present."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import ids, ledger
from giftcard.clock import FrozenClock
from giftcard.services import Services
from tests.conftest import api_key, assert_problem, issue, sign_up, staff_member


def to_ten_o_clock(clock: FrozenClock) -> None:
    """Move the clock to 10:00 UTC on a day to come, so that the day's work stays on
    one day whatever time the tests run at."""
    now = clock.now().astimezone(UTC)
    target = datetime(now.year, now.month, now.day, 10, tzinfo=UTC) + timedelta(days=1)
    clock.advance(target - now)


async def adjust(services: Services, customer_id: str, amount: int) -> None:
    """A balance adjustment as a journal transaction, the way support's adjustments
    post one."""
    number = ids.parse_id(ids.CUSTOMER, customer_id)

    async def work(connection: AsyncConnection) -> None:
        account = (
            await connection.execute(
                text("SELECT available_account_id FROM customers WHERE id = :id"), {"id": number}
            )
        ).scalar_one()
        await ledger.post(
            connection,
            ledger.Entry(
                type=ledger.TransactionType.ADJUSTMENT,
                currency="USD",
                description="Goodwill",
                actor="staff:1",
                customer_id=number,
                postings=[
                    await ledger.system_posting(
                        connection, ledger.AccountKind.ADJUSTMENTS, "USD", -amount
                    ),
                    ledger.Posting(account, amount),
                ],
            ),
            now=services.clock.now(),
        )

    await services.db.run(work)


@dataclass
class Work:
    shopper_id: str
    active_serial: str


async def real_work(client: httpx.AsyncClient, services: Services, clock: FrozenClock) -> Work:
    """Issue, activate, redeem, pay, hold, refund to the balance (part as store credit),
    adjust, freeze and let a card expire: every way value comes and goes."""
    store = await api_key(services, "admin")
    redeemed, active, expiring, frozen = (
        *(await issue(client, store, amount=2500, count=2)),
        *(
            await issue(
                client,
                store,
                amount=1000,
                expires_at=(clock.now() + timedelta(hours=1)).isoformat(),
            )
        ),
        *(await issue(client, store, amount=2500)),
    )
    sold, unsold = await issue(client, store, amount=5000, kind="physical", count=2)
    await issue(client, store, amount=2000, region="GB")
    activated = await client.post(
        "/v1/cards/activate", json={"serial": sold["serial"]}, headers=store
    )
    assert activated.status_code == 200, activated.text
    shopper = await sign_up(client)
    redemption = await client.post(
        "/v1/me/redemptions", json={"code": redeemed["code"]}, headers=shopper.auth
    )
    assert redemption.status_code == 201, redemption.text
    await adjust(services, shopper.id, 700)
    preference = await client.patch(
        "/v1/me", json={"refund_preference": "gift_card_balance"}, headers=shopper.auth
    )
    assert preference.status_code == 200, preference.text

    async def pay(order: str, amount: int, capture: bool = True) -> dict[str, Any]:
        response = await client.post(
            "/v1/payments",
            json={
                "customer_id": shopper.id,
                "order_id": order,
                "amount": amount,
                "currency": "USD",
                "capture": capture,
            },
            headers=store,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    await pay("order-1", 1000)
    second = await pay("order-2", 5000)
    assert (second["gift_card_amount"], second["other_amount"]) == (2200, 2800)
    refund = await client.post(
        f"/v1/payments/{second['id']}/refunds", json={"amount": 5000}, headers=store
    )
    assert refund.status_code == 201, refund.text
    await pay("order-3", 300, capture=False)
    async with services.db.transaction() as connection:
        await connection.execute(
            text(
                "UPDATE cards SET state = 'frozen', state_before_freeze = 'active' "
                "WHERE serial = :serial"
            ),
            {"serial": frozen["serial"]},
        )
    clock.advance(timedelta(hours=2))
    assert unsold["state"] == "inactive"
    assert expiring["expires_at"]
    return Work(shopper.id, active["serial"])


async def report(
    client: httpx.AsyncClient, auth: dict[str, str], days: int | None = None
) -> dict[str, Any]:
    params = {} if days is None else {"days": days}
    response = await client.get("/v1/reports/liability", params=params, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_currency(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {item["currency"]: item for item in body[key]}


async def test_the_report_after_real_work_adds_up_and_reconciles(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    to_ten_o_clock(clock)
    await real_work(client, services, clock)
    agent = await staff_member(client, services, "support")
    body = await report(client, agent.auth, days=2)

    assert datetime.fromisoformat(body["generated_at"]) == clock.now()
    us, gb = sorted(body["regions"], key=lambda item: item["region"], reverse=True)
    assert us == {
        "region": "US",
        "currency": "USD",
        # 7500 active + 1000 expired + 2500 frozen + 4700 available + 300 held
        "outstanding": 16000,
        "active_cards": 2,
        "active_value": 7500,
        "expired_cards": 1,
        "expired_value": 1000,
        "frozen_cards": 1,
        "frozen_value": 2500,
        "inactive_cards": 1,
        "customers": 1,
        "customers_available": 4700,
        "customers_held": 300,
        "store_credit_given": 2800,
        "net_adjustments": 700,
    }
    assert (gb["region"], gb["currency"], gb["outstanding"], gb["active_cards"]) == (
        "GB",
        "GBP",
        2000,
        1,
    )
    reconciliation = by_currency(body, "reconciliation")
    assert reconciliation["USD"] == {
        "currency": "USD",
        "cards_and_customers": 16000,
        "ledger_tracked_accounts": 16000,
        "ledger_system_accounts": 16000,
        "difference_tracked": 0,
        "difference_system": 0,
        "reconciled": True,
    }
    assert reconciliation["GBP"]["reconciled"] is True
    assert body["reconciled"] is True

    activity = by_currency(body, "activity")
    yesterday, today = activity["USD"]["days"]
    assert today == {
        "date": clock.now().date().isoformat(),
        # 2 × 2500 + 1000 + 2500 issued digitally, 5000 activated at a till
        "issued": 13500,
        "redeemed": 2500,
        # 1000 paid at once, then 2200 of a 5000 order; the 300 held is not spent yet
        "spent": 3200,
        "refunded": 5000,
        "adjusted": 700,
    }
    assert yesterday == {
        "date": (clock.now() - timedelta(days=1)).date().isoformat(),
        "issued": 0,
        "redeemed": 0,
        "spent": 0,
        "refunded": 0,
        "adjusted": 0,
    }
    assert [day["issued"] for day in activity["GBP"]["days"]] == [0, 2000]
    assert (body["first_day"], body["last_day"]) == (yesterday["date"], today["date"])


@pytest.mark.parametrize(
    ("tamper", "tracked", "system"),
    [
        # A customer's balance raised without a posting: the ledger's two sides disagree.
        (
            "UPDATE ledger_accounts SET balance = balance + 100 WHERE id = "
            "(SELECT available_account_id FROM customers)",
            0,
            -100,
        ),
        # A card's face value changed: the records disagree with its account.
        (
            "UPDATE cards SET amount = amount + 500 WHERE serial = :serial",
            -500,
            0,
        ),
        # A card cancelled without its value leaving its account.
        (
            "UPDATE cards SET state = 'cancelled' WHERE serial = :serial",
            2500,
            0,
        ),
        # A system posting removed: double entry no longer holds.
        (
            "DELETE FROM postings WHERE id = (SELECT MAX(p.id) FROM postings p "
            "JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.kind = 'adjustments' AND a.currency = 'USD')",
            0,
            -700,
        ),
    ],
)
async def test_a_row_changed_behind_the_ledger_s_back_is_not_reconciled(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    tamper: str,
    tracked: int,
    system: int,
) -> None:
    work = await real_work(client, services, clock)
    auth = await api_key(services, "admin")
    assert (await report(client, auth))["reconciled"] is True
    async with services.db.transaction() as connection:
        await connection.execute(text(tamper), {"serial": work.active_serial})
    body = await report(client, auth)
    usd = by_currency(body, "reconciliation")["USD"]
    assert (usd["difference_tracked"], usd["difference_system"]) == (tracked, system)
    assert usd["reconciled"] is False
    assert body["reconciled"] is False
    assert by_currency(body, "reconciliation")["GBP"]["reconciled"] is True


async def test_an_empty_service_reports_nothing_owed(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = await report(client, await api_key(services, "support"), days=1)
    assert body["regions"] == []
    assert body["reconciliation"] == []
    assert body["activity"] == []
    assert body["reconciled"] is True
    assert body["first_day"] == body["last_day"] == services.clock.now().date().isoformat()


async def test_days_run_from_one_to_three_hundred_sixty_six(
    client: httpx.AsyncClient, services: Services
) -> None:
    auth = await api_key(services, "admin")
    await issue(client, auth)
    default = by_currency(await report(client, auth), "activity")["USD"]["days"]
    assert len(default) == 30
    assert default[-1]["issued"] == 2500
    assert sum(day["issued"] for day in default[:-1]) == 0
    dates = [datetime.fromisoformat(day["date"]) for day in default]
    assert all(later - earlier == timedelta(days=1) for earlier, later in itertools.pairwise(dates))
    assert len(by_currency(await report(client, auth, days=1), "activity")["USD"]["days"]) == 1
    assert len(by_currency(await report(client, auth, days=366), "activity")["USD"]["days"]) == 366
    for days in ("0", "367", "-1", "thirty", "1.5"):
        response = await client.get("/v1/reports/liability", params={"days": days}, headers=auth)
        assert_problem(response, 422, "validation_error", param="days")


async def test_only_support_and_admin_read_the_report(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await sign_up(client)
    assert_problem(await client.get("/v1/reports/liability"), 401, "unauthorized")
    assert_problem(
        await client.get("/v1/reports/liability", headers=shopper.auth), 403, "forbidden"
    )
    merchant = await api_key(services, "merchant")
    refused = assert_problem(
        await client.get("/v1/reports/liability", headers=merchant), 403, "forbidden"
    )
    assert "role support or admin" in refused["detail"]
    admin = await staff_member(client, services, "admin")
    await report(client, admin.auth)
