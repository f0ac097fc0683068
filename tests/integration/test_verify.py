"""`giftcard verify` (SPEC §8, §9): after real work every ledger invariant holds, and when
a row is altered behind the ledger's back the command fails and names the culprit.

The command runs as the real CLI in a subprocess, against the test's own database (SQLite
and PostgreSQL), exactly as an operator would run it.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import text

from giftcard import cards, ids
from giftcard.codes import ALPHABET, generate_code
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import TEST_SECRET_KEY, api_key, issue, sign_up

GIFTCARD = Path(sys.executable).with_name("giftcard")
CLI_TIMEOUT_S = 120


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def run_verify(database_url: str) -> CliResult:
    env = {
        **os.environ,
        "GIFTCARD_DATABASE_URL": database_url,
        "GIFTCARD_SECRET_KEY": TEST_SECRET_KEY.decode(),
    }
    process = await asyncio.create_subprocess_exec(
        str(GIFTCARD),
        "verify",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


def mistyped(code: str) -> str:
    normalized = code.replace("-", "")
    replacement = ALPHABET[(ALPHABET.index(normalized[0]) + 1) % len(ALPHABET)]
    return replacement + normalized[1:]


async def redeem(client: httpx.AsyncClient, auth: dict[str, str], code: str) -> httpx.Response:
    return await client.post("/v1/me/redemptions", json={"code": code}, headers=auth)


@dataclass(frozen=True)
class Workload:
    shopper_id: int
    shopper_available_account_id: int


async def mixed_workload(client: httpx.AsyncClient, services: Services) -> Workload:
    """Digital and physical cards issued, one physical activated, several redeemed, a
    refusal of every kind, a card frozen, refused, unfrozen and redeemed, and payments
    held, partly captured, refunded and voided."""
    admin = await api_key(services)
    digital = await issue(client, admin, amount=2500, count=3)
    physical = await issue(client, admin, amount=1000, kind="physical", count=2)
    [british] = await issue(client, admin, amount=2000, region="GB")
    activated = await client.post(
        "/v1/cards/activate", json={"serial": physical[0]["serial"]}, headers=admin
    )
    assert activated.status_code == 200, activated.text
    first = await sign_up(client)
    second = await sign_up(client)

    for code in (digital[0]["code"], digital[1]["code"], physical[0]["code"]):
        response = await redeem(client, first.auth, code)
        assert response.status_code == 201, response.text
    refusals = {
        "code_mistyped": mistyped(digital[2]["code"]),
        "code_not_found": generate_code(),
        "code_not_active": physical[1]["code"],
        "code_already_redeemed": digital[0]["code"],
        "region_mismatch": british["code"],
        "code_malformed": "nonsense!",
    }
    for expected, code in refusals.items():
        response = await redeem(client, second.auth, code)
        assert response.json()["code"] == expected, response.text

    frozen_id = ids.parse_id(ids.CARD, digital[2]["id"])
    await services.db.run(
        lambda connection: cards.freeze(
            connection, frozen_id, reason="reported stolen", actor="test", now=services.clock.now()
        )
    )
    assert (await redeem(client, second.auth, digital[2]["code"])).json()["code"] == "code_frozen"
    await services.db.run(
        lambda connection: cards.unfreeze(
            connection, frozen_id, reason="found again", actor="test", now=services.clock.now()
        )
    )
    assert (await redeem(client, second.auth, digital[2]["code"])).status_code == 201

    balance = (await client.get("/v1/me/balance", headers=first.auth)).json()
    assert balance["total"] == 2500 * 2 + 1000
    await pay_hold_capture_refund_void(client, admin, first.id)
    async with services.db.transaction(write=False) as connection:
        account_id = (
            await connection.execute(
                text("SELECT available_account_id FROM customers WHERE id = :id"),
                {"id": ids.parse_id(ids.CUSTOMER, first.id)},
            )
        ).scalar_one()
    return Workload(
        shopper_id=ids.parse_id(ids.CUSTOMER, first.id),
        shopper_available_account_id=int(account_id),
    )


async def pay_hold_capture_refund_void(
    client: httpx.AsyncClient, admin: dict[str, str], customer_id: str
) -> None:
    order = {"customer_id": customer_id, "amount": 4000, "currency": "USD"}
    held = await client.post(
        "/v1/payments", json={**order, "order_id": "verify-1", "capture": False}, headers=admin
    )
    assert held.status_code == 201, held.text
    payment = held.json()["id"]
    captured = await client.post(
        f"/v1/payments/{payment}/capture", json={"amount": 3000}, headers=admin
    )
    assert captured.status_code == 200, captured.text
    refunded = await client.post(
        f"/v1/payments/{payment}/refunds", json={"amount": 500}, headers=admin
    )
    assert refunded.status_code == 201, refunded.text
    voided_hold = await client.post(
        "/v1/payments",
        json={**order, "order_id": "verify-2", "capture": False, "use_balance": 700},
        headers=admin,
    )
    assert voided_hold.status_code == 201, voided_hold.text
    voided = await client.post(f"/v1/payments/{voided_hold.json()['id']}/void", headers=admin)
    assert voided.status_code == 200, voided.text


async def test_verify_passes_after_mixed_workload(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    """Given a mixed workload, `giftcard verify` exits 0 and prints its summary."""
    await mixed_workload(client, services)

    assert (await verify(services.db)).problems == []
    result = await run_verify(database_url)

    assert result.exit_code == 0, result.output
    assert re.search(r"Checked \d+ journal transactions, \d+ postings", result.stdout)
    assert re.search(
        r"USD: unredeemed card value \$[\d,]+\.\d\d, customer balances \$[\d,]+\.\d\d$",
        result.stdout,
        re.M,
    ), result.stdout
    assert "OK: every invariant holds." in result.stdout


async def test_verify_names_an_altered_posting(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    """Given the newest posting's amount changed behind the ledger's back, verify exits
    non-zero and names that posting's journal transaction and account."""
    await mixed_workload(client, services)
    async with services.db.transaction() as connection:
        posting = (
            await connection.execute(
                text(
                    "SELECT id, transaction_id, account_id FROM postings "
                    "WHERE id = (SELECT max(id) FROM postings)"
                )
            )
        ).one()
        await connection.execute(
            text(
                "UPDATE postings SET amount = amount + 1 WHERE id = (SELECT max(id) FROM postings)"
            )
        )

    result = await run_verify(database_url)

    assert result.exit_code != 0, result.output
    assert re.search(
        rf"^FAIL transactions balance: journal transaction {posting.transaction_id}: "
        r"its \d+ posting\(s\) sum to 1, not 0$",
        result.stderr,
        re.MULTILINE,
    ), result.output
    assert re.search(
        rf"^FAIL .*\(transaction {posting.transaction_id}, account {posting.account_id}\)",
        result.stderr,
        re.MULTILINE,
    ), result.output


async def test_verify_names_an_account_whose_balance_was_changed(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    """Given a customer's balance row raised directly (no posting), verify exits non-zero
    and names that account."""
    workload = await mixed_workload(client, services)
    account_id = workload.shopper_available_account_id
    async with services.db.transaction() as connection:
        await connection.execute(
            text("UPDATE ledger_accounts SET balance = balance + 500 WHERE id = :id"),
            {"id": account_id},
        )

    result = await run_verify(database_url)

    assert result.exit_code != 0, result.output
    # One culprit a line, whole, so that operators can grep and alert on it.
    assert re.search(
        rf"^FAIL account balances: account {account_id} \(customer_available\) holds "
        r"\d+ but its postings sum to \d+$",
        result.stderr,
        re.MULTILINE,
    ), result.output


async def test_verify_names_a_payment_whose_hold_does_not_match(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    """Given an authorized payment marked voided directly in the database (its hold never
    released), verify exits non-zero and names the payment."""
    workload = await mixed_workload(client, services)
    merchant = await api_key(services, "merchant")
    created = await client.post(
        "/v1/payments",
        json={
            "customer_id": ids.format_id(ids.CUSTOMER, workload.shopper_id),
            "use_balance": 100,
            "order_id": "tampered",
            "amount": 100,
            "currency": "USD",
            "capture": False,
        },
        headers=merchant,
    )
    assert created.status_code == 201, created.text
    payment_id = ids.parse_id(ids.PAYMENT, created.json()["id"])
    assert (await run_verify(database_url)).exit_code == 0
    async with services.db.transaction() as connection:
        await connection.execute(
            text("UPDATE payments SET status = 'voided' WHERE id = :id"), {"id": payment_id}
        )

    result = await run_verify(database_url)

    assert result.exit_code != 0, result.output
    assert re.search(
        rf"^FAIL payment holds: payment {payment_id} is voided with a balance part of 100 "
        r"but holds 100$",
        result.stderr,
        re.MULTILINE,
    ), result.output
