"""The audit log is a hash chain (giftcard.audit): appended one after another whatever the
concurrency, and an entry edited, removed or cut from the end behind the service's back
is named by `giftcard verify` as the first broken link."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit
from giftcard.db.tables import audit_log
from giftcard.services import Services
from giftcard.verify import verify
from tests.integration.test_verify import run_verify

AGENT = audit.Actor("staff:1", "support", "req_test")


async def append(services: Services, count: int) -> list[int]:
    numbers = []
    for index in range(count):

        async def work(connection: AsyncConnection, index: int = index) -> int:
            return await audit.record(
                connection,
                AGENT,
                audit.Action(
                    "card.freeze",
                    target=f"card_{index}",
                    reason="lost",
                    note=f"customer called ({index}) — “quoted”",
                    detail={"state_before": "active", "amount": 2500},
                ),
                now=services.clock.now(),
            )

        numbers.append(await services.db.run(work))
    return numbers


async def chain_problem(services: Services) -> str | None:
    async with services.db.transaction(write=False) as connection:
        return (await audit.verify_chain(connection)).problem


async def test_entries_are_numbered_and_chained(services: Services) -> None:
    assert await append(services, 5) == [1, 2, 3, 4, 5]
    async with services.db.transaction(write=False) as connection:
        check = await audit.verify_chain(connection)
        rows = (await connection.execute(text("SELECT * FROM audit_log ORDER BY id"))).all()
    assert check == audit.ChainCheck(5, None)
    assert rows[0].prev_hash == audit.GENESIS_HASH
    assert [row.prev_hash for row in rows[1:]] == [row.hash for row in rows[:-1]]
    assert rows[0].detail == '{"amount":2500,"state_before":"active"}'
    assert rows[0].request_id == "req_test"


async def test_an_empty_log_holds(services: Services) -> None:
    assert await chain_problem(services) is None
    report = await verify(services.db)
    assert report.counts["audit_entries"] == 0
    assert report.problems == []


async def test_appends_at_once_from_two_processes_make_one_chain(
    services: Services,
) -> None:
    other = Services.build(services.settings, clock=services.clock)
    try:
        await asyncio.gather(*(append(svc, 10) for svc in (services, other, services, other)))
    finally:
        await other.close()
    async with services.db.transaction(write=False) as connection:
        assert await audit.verify_chain(connection) == audit.ChainCheck(40, None)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (
            "UPDATE audit_log SET note = 'nothing happened' WHERE id = 3",
            "audit entry 3 was changed",
        ),
        ("UPDATE audit_log SET created_at = created_at WHERE id = 2", None),
        ("DELETE FROM audit_log WHERE id = 3", "audit entry 3 is missing"),
        ("DELETE FROM audit_log WHERE id = 5", "the audit log ends at entry 4"),
        ("UPDATE audit_log SET prev_hash = hash WHERE id = 4", "audit entry 4 does not chain"),
    ],
)
async def test_a_row_changed_behind_the_service_s_back_is_named(
    services: Services, tamper: str, named: str | None
) -> None:
    await append(services, 5)
    async with services.db.transaction() as connection:
        await connection.execute(text(tamper))
    problem = await chain_problem(services)
    if named is None:
        assert problem is None
        return
    assert problem is not None
    assert problem.startswith(named), problem
    result = await run_verify(services.settings.database_url)
    assert result.exit_code != 0
    assert "audit log chain: " + named in result.output, result.output


async def test_an_edit_rehashed_by_the_tamperer_still_breaks_the_next_link(
    services: Services,
) -> None:
    await append(services, 4)
    async with services.db.transaction() as connection:
        row = (await connection.execute(select(audit_log).where(audit_log.c.id == 2))).one()
        fields = {name: getattr(row, name) for name in row._fields if name != "hash"}
        forged = audit.entry_hash(**{**fields, "note": "forged"})
        await connection.execute(
            text("UPDATE audit_log SET note = 'forged', hash = :hash WHERE id = 2"),
            {"hash": forged},
        )
    assert await chain_problem(services) == (
        "audit entry 3 does not chain to entry 2: its prev_hash is not that entry's hash"
    )
