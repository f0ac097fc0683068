"""Support's card API (SPEC §6 Support): look a card up by code, serial or last four and
see where its value went; freeze, unfreeze, cancel and replace it. Every call is in the
audit log with who, what, why and the request it came in; a code never is, in full."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from giftcard import codes, ids
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.db.tables import audit_log
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import (
    ALL_ISOLATIONS,
    StaffMember,
    api_key,
    assert_problem,
    issue,
    sign_up,
    staff_member,
)

LOOKUPS = "/v1/support/lookups"


def spaced_lower(code: str) -> str:
    """A code as a customer might read it out: lower case, spaces instead of dashes."""
    return code.lower().replace("-", " ")


def mistyped(code: str) -> str:
    normalized = code.replace("-", "")
    swapped = codes.ALPHABET[(codes.ALPHABET.index(normalized[0]) + 1) % len(codes.ALPHABET)]
    return swapped + normalized[1:]


# Issuing the cards these tests act on is recorded too; they look at support's entries.
SETUP_ACTIONS = ("card.issue", "card.activate", "gift.create")


async def audit_entries(services: Services) -> list[Any]:
    async with services.db.transaction(write=False) as connection:
        query = (
            select(audit_log)
            .where(audit_log.c.action.not_in(SETUP_ACTIONS))
            .order_by(audit_log.c.id)
        )
        return list((await connection.execute(query)).all())


async def card_row(services: Services, card_id: str) -> Any:
    async with services.db.transaction(write=False) as connection:
        return (
            await connection.execute(
                text(
                    "SELECT c.state, c.state_before_freeze, a.balance FROM cards c "
                    "JOIN ledger_accounts a ON a.id = c.account_id WHERE c.id = :id"
                ),
                {"id": ids.parse_id(ids.CARD, card_id)},
            )
        ).one()


async def change(
    client: httpx.AsyncClient,
    who: dict[str, str],
    card_id: str,
    action: str,
    reason: str = "customer called",
    **extra: Any,
) -> httpx.Response:
    return await client.post(
        f"/v1/support/cards/{card_id}/{action}", json={"reason": reason, **extra}, headers=who
    )


@pytest.fixture
async def agent(client: httpx.AsyncClient, services: Services) -> StaffMember:
    return await staff_member(client, services, "support")


@pytest.fixture
async def admin_key(services: Services) -> dict[str, str]:
    return await api_key(services, "admin")


# --- look-ups ------------------------------------------------------------------------


async def test_a_redeemed_code_shows_who_got_it_the_credit_and_their_balance_now(
    client: httpx.AsyncClient,
    services: Services,
    agent: StaffMember,
    admin_key: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given a card redeemed by a shopper who redeemed another since, when support looks
    its code up typed in lower case with spaces, then the answer names the shopper, the
    journal transaction that credited it with the balance right after it, the balance
    now, and every event; the audit entry names the agent, the card and the request."""
    first, second = await issue(client, admin_key, amount=2500, count=2)
    shopper = await sign_up(client)
    credited = await client.post(
        "/v1/me/redemptions", json={"code": first["code"]}, headers=shopper.auth
    )
    assert credited.status_code == 201, credited.text
    again = await client.post(
        "/v1/me/redemptions", json={"code": second["code"]}, headers=shopper.auth
    )
    assert again.status_code == 201, again.text

    with caplog.at_level(logging.DEBUG):
        response = await client.post(
            LOOKUPS, json={"code": spaced_lower(first["code"])}, headers=agent.auth
        )

    assert response.status_code == 200, response.text
    [found] = response.json()["data"]
    assert found["card"]["id"] == first["id"]
    assert found["card"]["state"] == "redeemed"
    assert "code" not in found["card"]
    assert found["redeemed_into"] == {
        "id": shopper.id,
        "email": shopper.email,
        "name": None,
        "balance": {"currency": "USD", "available": 5000, "held": 0, "total": 5000},
    }
    assert found["credit"]["transaction_id"] == credited.json()["id"]
    assert found["credit"]["amount"] == 2500
    assert found["credit"]["balance_after"] == 2500
    assert [event["type"] for event in found["events"]] == ["issued", "redeemed"]
    redeemed = found["events"][1]
    assert redeemed["transaction_id"] == credited.json()["id"]
    assert redeemed["customer_id"] == shopper.id
    assert redeemed["actor"] == f"customer:{ids.parse_id(ids.CUSTOMER, shopper.id)}"
    [entry] = await audit_entries(services)
    assert entry.actor == f"staff:{ids.parse_id(ids.STAFF, agent.id)}"
    assert entry.actor_role == "support"
    assert entry.action == "card.lookup"
    assert entry.target == first["id"]
    assert entry.outcome == "ok"
    assert entry.detail == '{"by":"code"}'
    assert entry.request_id == response.headers["Request-Id"]
    await assert_code_nowhere(services, first["code"], caplog)


async def test_a_serial_finds_an_unredeemed_card(
    client: httpx.AsyncClient, services: Services, admin_key: dict[str, str]
) -> None:
    support_key = await api_key(services, "support")
    [card] = await issue(client, admin_key, kind="physical")
    serial = card["serial"]

    response = await client.post(
        LOOKUPS, json={"serial": f"{serial[:4]} {serial[4:8]}-{serial[8:]}"}, headers=support_key
    )

    assert response.status_code == 200, response.text
    [found] = response.json()["data"]
    assert found["card"]["state"] == "inactive"
    assert found["redeemed_into"] is None
    assert found["credit"] is None
    assert found["gift"] is None
    [entry] = await audit_entries(services)
    assert (entry.actor_role, entry.target, entry.detail) == (
        "support",
        card["id"],
        '{"by":"serial"}',
    )
    assert entry.actor.startswith("api_key:")


async def test_last_four_finds_the_customer_s_cards_only(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    """Last four with a customer finds the cards that customer redeemed ending so, and no
    one else's; an ending they have none of is a 404, audited against the customer."""
    mine, theirs = await issue(client, admin_key, count=2)
    shopper, other = await sign_up(client), await sign_up(client)
    for who, card in ((shopper, mine), (other, theirs)):
        redeemed = await client.post(
            "/v1/me/redemptions", json={"code": card["code"]}, headers=who.auth
        )
        assert redeemed.status_code == 201

    found = await client.post(
        LOOKUPS,
        json={"last4": mine["last4"].lower(), "customer_id": shopper.id},
        headers=agent.auth,
    )
    assert found.status_code == 200, found.text
    assert [item["card"]["id"] for item in found.json()["data"]] == [mine["id"]]

    other_ending = theirs["last4"] if theirs["last4"] != mine["last4"] else "0000"
    missing = await client.post(
        LOOKUPS, json={"last4": other_ending, "customer_id": shopper.id}, headers=agent.auth
    )
    assert_problem(missing, 404, "not_found", param="last4")
    last = (await audit_entries(services))[-1]
    assert (last.target, last.outcome, last.detail) == (shopper.id, "not_found", '{"by":"last4"}')


async def test_an_unknown_code_or_serial_is_no_card_and_still_audited(
    client: httpx.AsyncClient, services: Services, agent: StaffMember
) -> None:
    code = codes.format_code(codes.generate_code())
    unknown = await client.post(LOOKUPS, json={"code": code}, headers=agent.auth)
    body = assert_problem(unknown, 404, "not_found", param="code")
    assert body["detail"].startswith("No card has this code.")
    serial = codes.generate_serial()
    no_serial = await client.post(LOOKUPS, json={"serial": serial}, headers=agent.auth)
    body = assert_problem(no_serial, 404, "not_found", param="serial")
    assert serial in body["detail"]

    by_code, by_serial = await audit_entries(services)
    assert by_code.target == f"code …{code[-4:]}"
    assert (by_code.outcome, by_code.detail) == ("not_found", '{"by":"code"}')
    assert by_code.request_id == unknown.headers["Request-Id"]
    assert by_serial.target == f"serial {serial}"
    assert by_serial.outcome == "not_found"


async def test_a_mistyped_or_malformed_code_is_refused_before_any_database_work(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    [card] = await issue(client, admin_key)
    typo = await client.post(LOOKUPS, json={"code": mistyped(card["code"])}, headers=agent.auth)
    body = assert_problem(typo, 422, "code_mistyped", param="code")
    assert "mistyped" in body["detail"]
    nonsense = await client.post(LOOKUPS, json={"code": "hello!"}, headers=agent.auth)
    assert_problem(nonsense, 422, "code_malformed", param="code")
    bad_serial = await client.post(LOOKUPS, json={"serial": "123"}, headers=agent.auth)
    assert_problem(bad_serial, 422, "validation_error", param="serial")
    assert await audit_entries(services) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"code": "x", "serial": "412345678903"},
        {"last4": "ABCD"},
        {"customer_id": ids.format_id(ids.CUSTOMER, 1)},
        {"serial": 412345678903},
        {"code": "x", "extra": 1},
    ],
)
async def test_a_look_up_asked_in_not_exactly_one_way_is_refused(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, body: dict[str, Any]
) -> None:
    assert_problem(
        await client.post(LOOKUPS, json=body, headers=agent.auth), 422, "validation_error"
    )
    assert await audit_entries(services) == []


async def test_look_ups_are_for_support_and_admin_only(
    client: httpx.AsyncClient, services: Services, admin_key: dict[str, str]
) -> None:
    body = {"serial": codes.generate_serial()}
    assert_problem(await client.post(LOOKUPS, json=body), 401, "unauthorized")
    shopper = await sign_up(client)
    assert_problem(await client.post(LOOKUPS, json=body, headers=shopper.auth), 403, "forbidden")
    merchant = await api_key(services, "merchant")
    refused = assert_problem(
        await client.post(LOOKUPS, json=body, headers=merchant), 403, "forbidden"
    )
    assert "support or admin" in refused["detail"]
    admin = await staff_member(client, services, "admin")
    for who in (admin.auth, admin_key):
        assert_problem(await client.post(LOOKUPS, json=body, headers=who), 404, "not_found")
    assert [entry.actor_role for entry in await audit_entries(services)] == ["admin", "admin"]


# --- freeze, unfreeze, cancel -----------------------------------------------------------


async def test_freeze_then_unfreeze_returns_the_card_to_its_state_with_audit_entries(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    [card] = await issue(client, admin_key)
    frozen = await change(
        client, agent.auth, card["id"], "freeze", "reported stolen", note="caller: Jo"
    )
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["state"] == "frozen"
    shopper = await sign_up(client)
    refused = await client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
    )
    assert_problem(refused, 409, "code_frozen")

    unfrozen = await change(client, agent.auth, card["id"], "unfreeze", "found in a drawer")
    assert unfrozen.status_code == 200, unfrozen.text
    assert unfrozen.json()["state"] == "active"
    assert (await card_row(services, card["id"])).state_before_freeze is None

    entries = await audit_entries(services)
    assert [(e.action, e.target, e.reason, e.note) for e in entries] == [
        ("card.freeze", card["id"], "reported stolen", "caller: Jo"),
        ("card.unfreeze", card["id"], "found in a drawer", None),
    ]
    assert entries[0].request_id == frozen.headers["Request-Id"]
    assert entries[1].request_id == unfrozen.headers["Request-Id"]
    looked = await client.post(LOOKUPS, json={"serial": card["serial"]}, headers=agent.auth)
    events = looked.json()["data"][0]["events"]
    assert [(e["type"], e["reason"]) for e in events] == [
        ("issued", None),
        ("frozen", "reported stolen"),
        ("unfrozen", "found in a drawer"),
    ]


async def test_an_inactive_card_unfreezes_to_inactive(
    client: httpx.AsyncClient, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    [card] = await issue(client, admin_key, kind="physical")
    assert (await change(client, agent.auth, card["id"], "freeze")).json()["state"] == "frozen"
    assert (await change(client, agent.auth, card["id"], "unfreeze")).json()["state"] == "inactive"


async def test_changes_refused_by_the_card_s_state_say_what_it_is(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    """Freezing a frozen card, unfreezing an active one, anything on a redeemed or
    cancelled card: 409 invalid_state, nothing changed and nothing audited."""
    active, redeemed, cancelled = await issue(client, admin_key, count=3)
    shopper = await sign_up(client)
    await client.post("/v1/me/redemptions", json={"code": redeemed["code"]}, headers=shopper.auth)
    assert (await change(client, agent.auth, cancelled["id"], "cancel")).status_code == 200
    assert (await change(client, agent.auth, active["id"], "freeze")).status_code == 200
    entries_before = len(await audit_entries(services))

    again = assert_problem(
        await change(client, agent.auth, active["id"], "freeze"), 409, "invalid_state"
    )
    assert "already frozen" in again["detail"]
    assert (await change(client, agent.auth, active["id"], "unfreeze")).status_code == 200
    not_frozen = assert_problem(
        await change(client, agent.auth, active["id"], "unfreeze"), 409, "invalid_state"
    )
    assert "not frozen: it is active" in not_frozen["detail"]
    for action in ("freeze", "unfreeze", "cancel", "replace"):
        body = assert_problem(
            await change(client, agent.auth, redeemed["id"], action), 409, "invalid_state"
        )
        assert shopper.id in body["detail"], body
        body = assert_problem(
            await change(client, agent.auth, cancelled["id"], action), 409, "invalid_state"
        )
        assert "cancelled" in body["detail"], body
    assert (await card_row(services, redeemed["id"])).state == "redeemed"
    assert len(await audit_entries(services)) == entries_before + 1


async def test_cancelling_a_funded_card_returns_its_value_to_the_store(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    """Given a funded card (frozen first), when cancelled, then its account is empty, one
    cancellation journal transaction moved its value to the issuance account, the code
    no longer redeems, and `verify` holds."""
    [card] = await issue(client, admin_key, amount=3100)
    await change(client, agent.auth, card["id"], "freeze")

    cancelled = await change(client, agent.auth, card["id"], "cancel", "fraud", note="case 42")

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    row = await card_row(services, card["id"])
    assert (row.state, row.balance, row.state_before_freeze) == ("cancelled", 0, None)
    async with services.db.transaction(write=False) as connection:
        moved = (
            await connection.execute(
                text(
                    "SELECT a.kind, p.amount FROM journal_transactions t "
                    "JOIN postings p ON p.transaction_id = t.id "
                    "JOIN ledger_accounts a ON a.id = p.account_id "
                    "WHERE t.type = 'cancellation' AND t.card_id = :id ORDER BY a.kind"
                ),
                {"id": ids.parse_id(ids.CARD, card["id"])},
            )
        ).all()
    assert [tuple(item) for item in moved] == [("card", -3100), ("issuance", 3100)]
    shopper = await sign_up(client)
    refused = await client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
    )
    assert_problem(refused, 409, "code_not_active")
    assert (await verify(services.db)).problems == []
    entry = (await audit_entries(services))[-1]
    assert (entry.action, entry.reason, entry.note) == ("card.cancel", "fraud", "case 42")


async def test_cancelling_a_card_never_sold_moves_no_money(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    [card] = await issue(client, admin_key, kind="physical")
    assert (
        await change(client, agent.auth, card["id"], "cancel", "lost in shipping")
    ).status_code == 200
    async with services.db.transaction(write=False) as connection:
        count = (
            await connection.execute(
                text("SELECT COUNT(*) FROM journal_transactions WHERE type = 'cancellation'")
            )
        ).scalar_one()
    assert count == 0
    assert (await verify(services.db)).problems == []


async def test_an_expired_card_can_be_cancelled(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    agent: StaffMember,
    admin_key: dict[str, str],
) -> None:
    expires = (clock.now() + timedelta(days=1)).isoformat()
    [card] = await issue(client, admin_key, expires_at=expires)
    clock.advance(timedelta(days=2))
    refused = assert_problem(
        await change(client, agent.auth, card["id"], "replace"), 409, "invalid_state"
    )
    assert "expired" in refused["detail"]
    assert (await change(client, agent.auth, card["id"], "cancel")).json()["state"] == "cancelled"
    assert (await verify(services.db)).problems == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reason": "   "}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": "ok", "note": "n" * 2001}, "note"),
        ({}, None),
        ({"reason": 5}, None),
    ],
)
async def test_a_change_needs_a_reason(
    client: httpx.AsyncClient,
    services: Services,
    agent: StaffMember,
    admin_key: dict[str, str],
    body: dict[str, Any],
    param: str | None,
) -> None:
    [card] = await issue(client, admin_key)
    for action in ("freeze", "cancel", "replace"):
        response = await client.post(
            f"/v1/support/cards/{card['id']}/{action}", json=body, headers=agent.auth
        )
        problem = assert_problem(response, 422, "validation_error")
        if param is not None:
            assert problem["param"] == param
    assert (await card_row(services, card["id"])).state == "active"
    assert await audit_entries(services) == []


async def test_a_long_reason_is_kept_whole(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    """A reason as long as allowed is kept whole in the audit entry and on the card's
    event."""
    [card] = await issue(client, admin_key)
    reason = "The customer says the card was in a wallet stolen on the bus; police report. " * 6
    reason = reason[:500].strip()
    assert (await change(client, agent.auth, card["id"], "freeze", reason)).status_code == 200
    entry = (await audit_entries(services))[-1]
    assert entry.reason == reason
    looked = await client.post(LOOKUPS, json={"serial": card["serial"]}, headers=agent.auth)
    assert looked.json()["data"][0]["events"][-1]["reason"] == reason


@pytest.mark.parametrize("action", ["freeze", "unfreeze", "cancel", "replace"])
async def test_an_unknown_card_is_404_and_callers_are_checked(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, action: str
) -> None:
    assert_problem(
        await change(client, agent.auth, ids.format_id(ids.CARD, 999999), action), 404, "not_found"
    )
    assert_problem(await change(client, agent.auth, "gift_1", action), 404, "not_found")
    assert_problem(await change(client, {}, "card_1", action), 401, "unauthorized")
    merchant = await api_key(services, "merchant")
    assert_problem(await change(client, merchant, "card_1", action), 403, "forbidden")
    shopper = await sign_up(client)
    assert_problem(await change(client, shopper.auth, "card_1", action), 403, "forbidden")
    assert await audit_entries(services) == []


# --- replace -------------------------------------------------------------------------


async def test_replace_cancels_the_card_and_issues_its_value_under_a_new_code(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    agent: StaffMember,
    admin_key: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given a funded card, when replaced, then the answer has the old card cancelled and
    a new active digital card of the same value, region and expiry with its code; the
    new code redeems and the old does not; each card names the other; the audit entry
    names the new card by id and last four; the code is nowhere in the audit log, the
    database or the logs; and `verify` holds."""
    expires = (clock.now() + timedelta(days=90)).isoformat()
    [old] = await issue(client, admin_key, amount=4200, region="GB", expires_at=expires)
    with caplog.at_level(logging.DEBUG):
        response = await change(
            client, agent.auth, old["id"], "replace", "card damaged", note="torn"
        )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["replaced"]["id"] == old["id"]
    assert body["replaced"]["state"] == "cancelled"
    new = body["card"]
    assert (new["state"], new["kind"], new["amount"], new["currency"], new["region"]) == (
        "active",
        "digital",
        4200,
        "GBP",
        "GB",
    )
    assert new["expires_at"] == old["expires_at"]
    code = new["code"]
    assert codes.check_code(code)
    assert new["last4"] == code[-4:]

    entry = (await audit_entries(services))[-1]
    assert (entry.action, entry.target, entry.reason, entry.note) == (
        "card.replace",
        old["id"],
        "card damaged",
        "torn",
    )
    assert new["id"] in entry.detail
    assert new["last4"] in entry.detail
    assert entry.request_id == response.headers["Request-Id"]
    await assert_code_nowhere(services, code, caplog)

    shopper = await sign_up(client, region="GB")
    stale = await client.post(
        "/v1/me/redemptions", json={"code": old["code"]}, headers=shopper.auth
    )
    assert_problem(stale, 409, "code_not_active")
    fresh = await client.post("/v1/me/redemptions", json={"code": code}, headers=shopper.auth)
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["amount"] == 4200

    old_view, new_view = [
        (await client.post(LOOKUPS, json={"serial": card["serial"]}, headers=agent.auth)).json()[
            "data"
        ][0]
        for card in (old, new)
    ]
    assert old_view["replaced_by"] == new["id"]
    assert old_view["events"][-1]["type"] == "replaced"
    assert old_view["events"][-1]["related_card_id"] == new["id"]
    assert new_view["replaces"] == old["id"]
    assert new_view["events"][0]["related_card_id"] == old["id"]
    assert (await verify(services.db)).problems == []


async def assert_code_nowhere(
    services: Services, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    normalized = code.replace("-", "")
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert normalized not in logged.replace("-", "")
    async with services.db.transaction(write=False) as connection:
        for table in (
            "audit_log",
            "card_events",
            "cards",
            "journal_transactions",
            "idempotency_keys",
        ):
            rows = (await connection.execute(text(f"SELECT * FROM {table}"))).all()
            dumped = repr(rows).replace("-", "")
            assert normalized not in dumped, table
            assert normalized.lower() not in dumped.lower(), table


async def test_a_frozen_funded_card_can_be_replaced(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    [card] = await issue(client, admin_key)
    await change(client, agent.auth, card["id"], "freeze", "reported lost")
    replaced = await change(client, agent.auth, card["id"], "replace", "lost")
    assert replaced.status_code == 201, replaced.text
    assert (await card_row(services, card["id"])).state_before_freeze is None
    assert (await verify(services.db)).problems == []


async def test_a_card_never_sold_is_not_replaced(
    client: httpx.AsyncClient, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    [card] = await issue(client, admin_key, kind="physical")
    body = assert_problem(
        await change(client, agent.auth, card["id"], "replace"), 409, "invalid_state"
    )
    assert "never sold" in body["detail"]
    await change(client, agent.auth, card["id"], "freeze")
    body = assert_problem(
        await change(client, agent.auth, card["id"], "replace"), 409, "invalid_state"
    )
    assert "never sold" in body["detail"]


async def test_a_replace_retried_with_its_key_issues_once_and_never_replays_the_code(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    [card] = await issue(client, admin_key)
    keyed = {**agent.auth, "Idempotency-Key": "replace-1"}
    first = await change(client, keyed, card["id"], "replace", "lost")
    replay = await change(client, keyed, card["id"], "replace", "lost")

    assert first.status_code == replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["card"]["id"] == first.json()["card"]["id"]
    assert first.json()["card"]["code"]
    assert replay.json()["card"]["code"] is None
    other_body = await change(client, keyed, card["id"], "replace", "stolen")
    assert_problem(other_body, 409, "idempotency_key_reused")
    async with services.db.transaction(write=False) as connection:
        cards_count = (await connection.execute(text("SELECT COUNT(*) FROM cards"))).scalar_one()
    assert cards_count == 2
    assert [e.action for e in await audit_entries(services)] == ["card.replace"]


# --- races -----------------------------------------------------------------------------


@ALL_ISOLATIONS
async def test_two_freezes_at_once_one_acts(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    [card] = await issue(client, admin_key)
    responses = await asyncio.gather(
        *(change(client, agent.auth, card["id"], "freeze", f"call {n}") for n in range(2))
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    assert [e.action for e in await audit_entries(services)] == ["card.freeze"]


@pytest.fixture
async def second_process(services: Services) -> Any:
    """Another process's services and client on the same database."""
    other = Services.build(services.settings, clock=services.clock)
    transport = httpx.ASGITransport(app=create_app(services=other), client=("203.0.113.8", 4712))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await other.close()


@ALL_ISOLATIONS
async def test_two_freezes_from_two_processes_one_acts(
    client: httpx.AsyncClient,
    second_process: httpx.AsyncClient,
    services: Services,
    agent: StaffMember,
    admin_key: dict[str, str],
) -> None:
    [card] = await issue(client, admin_key)
    responses = await asyncio.gather(
        change(client, agent.auth, card["id"], "freeze", "one"),
        change(second_process, agent.auth, card["id"], "freeze", "two"),
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    events = (
        await client.post(LOOKUPS, json={"serial": card["serial"]}, headers=agent.auth)
    ).json()
    assert [e["type"] for e in events["data"][0]["events"]] == ["issued", "frozen"]


@ALL_ISOLATIONS
async def test_two_replaces_from_two_processes_issue_one_card(
    client: httpx.AsyncClient,
    second_process: httpx.AsyncClient,
    services: Services,
    agent: StaffMember,
    admin_key: dict[str, str],
) -> None:
    [card] = await issue(client, admin_key)
    responses = await asyncio.gather(
        change(client, agent.auth, card["id"], "replace", "one"),
        change(second_process, agent.auth, card["id"], "replace", "two"),
        change(client, agent.auth, card["id"], "replace", "three"),
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    # Refused by the card's state, not by the ledger's balance guard behind it.
    refused = [r for r in responses if r.status_code == 409]
    assert all(r.json()["code"] == "invalid_state" for r in refused), [r.text for r in refused]
    async with services.db.transaction(write=False) as connection:
        assert (await connection.execute(text("SELECT COUNT(*) FROM cards"))).scalar_one() == 2
    assert (await verify(services.db)).problems == []


@ALL_ISOLATIONS
async def test_a_replace_racing_a_redemption_one_wins(
    client: httpx.AsyncClient,
    second_process: httpx.AsyncClient,
    services: Services,
    agent: StaffMember,
    admin_key: dict[str, str],
) -> None:
    """Given a funded card, when a shopper redeems it while support replaces it, then
    exactly one succeeds: either the shopper has its value and no new card exists, or the
    new card has it and the shopper nothing; the ledger holds either way."""
    shopper = await sign_up(client)
    for _ in range(3):
        [card] = await issue(client, admin_key, amount=900)
        redeemed, replaced = await asyncio.gather(
            second_process.post(
                "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
            ),
            change(client, agent.auth, card["id"], "replace", "lost"),
        )
        assert sorted([redeemed.status_code, replaced.status_code]) == [201, 409]
        assert (redeemed.status_code == 201) != (replaced.status_code == 201), (
            redeemed.text,
            replaced.text,
        )
        loser = replaced if redeemed.status_code == 201 else redeemed
        assert loser.json()["code"] in ("invalid_state", "code_not_active"), loser.text
    assert (await verify(services.db)).problems == []


async def test_a_lookup_shows_the_gift_a_card_was_bought_as(
    client: httpx.AsyncClient, services: Services, agent: StaffMember, admin_key: dict[str, str]
) -> None:
    gift = await client.post(
        "/v1/gifts",
        json={
            "amount": 3000,
            "region": "US",
            "recipient_email": "sam@example.com",
            "recipient_name": "Sam",
            "sender_name": "Alex",
        },
        headers=admin_key,
    )
    assert gift.status_code == 201, gift.text
    found = await client.post(
        LOOKUPS, json={"serial": gift.json()["card"]["serial"]}, headers=agent.auth
    )
    assert found.json()["data"][0]["gift"] == {
        "id": gift.json()["id"],
        "recipient_email": "sam@example.com",
        "recipient_name": "Sam",
        # Its email waits for the sender, which this test does not run.
        "status": "scheduled",
    }
