"""Reading the audit log (GET /v1/support/audit-log) and exporting it as CSV
(GET /v1/support/audit-log/export): support and admin only, newest first in pages,
filtered by actor, action, target, outcome and time; the export oldest first with every
field and both hashes, safe to open in a spreadsheet, and itself recorded."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, ids
from giftcard.clock import FrozenClock
from giftcard.services import Services
from tests.conftest import TEST_SECRET_KEY, api_key, assert_problem, sign_up, staff_member
from tests.integration.test_verify import CLI_TIMEOUT_S, GIFTCARD

AGENT = audit.Actor("staff:7", "support", "req_agent")
ADMIN_KEY = audit.Actor("api_key:2", "admin", "req_key")


async def record(
    services: Services, actor: audit.Actor, action: str, target: str | None = None, **more: Any
) -> int:
    async def work(connection: AsyncConnection) -> int:
        return await audit.record(
            connection,
            actor,
            audit.Action(action, target=target, **more),
            now=services.clock.now(),
        )

    return await services.db.run(work)


async def seed(services: Services, clock: FrozenClock) -> None:
    """Six entries over three days: two actors, card and customer actions, a refusal."""
    await record(services, AGENT, "card.lookup", "card_1", detail={"by": "serial"})
    await record(services, AGENT, "card.freeze", "card_1", reason="lost", note="called in")
    clock.advance(timedelta(days=1))
    await record(services, ADMIN_KEY, "customer.search", "ada@", outcome="ok")
    await record(services, AGENT, "card.lookup", None, outcome="code_not_found")
    clock.advance(timedelta(days=1))
    await record(services, ADMIN_KEY, "adjustment.create", "cus_3", detail={"amount": -500})
    await record(services, AGENT, "card.unfreeze", "card_1", reason="found")


async def read(client: httpx.AsyncClient, auth: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/support/audit-log", params=params, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def numbers(body: dict[str, Any]) -> list[str]:
    return [entry["id"] for entry in body["data"]]


async def test_entries_come_newest_first_with_every_field(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    await seed(services, clock)
    agent = await staff_member(client, services, "support")
    body = await read(client, agent.auth)
    assert numbers(body) == ["aud_6", "aud_5", "aud_4", "aud_3", "aud_2", "aud_1"]
    assert body["has_more"] is False
    oldest = body["data"][-1]
    assert oldest["actor"] == "staff:7"
    assert oldest["actor_role"] == "support"
    assert oldest["action"] == "card.lookup"
    assert oldest["target"] == "card_1"
    assert oldest["detail"] == {"by": "serial"}
    assert oldest["request_id"] == "req_agent"
    assert oldest["outcome"] == "ok"
    assert oldest["prev_hash"] == audit.GENESIS_HASH
    assert body["data"][-2]["prev_hash"] == oldest["hash"]
    assert body["data"][-2]["reason"] == "lost"
    assert body["data"][-2]["note"] == "called in"
    assert datetime.fromisoformat(oldest["created_at"]) == clock.now() - timedelta(days=2)


async def test_pages_follow_one_another_without_gaps_or_repeats(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    await seed(services, clock)
    auth = await api_key(services, "support")
    first = await read(client, auth, limit=4)
    assert numbers(first) == ["aud_6", "aud_5", "aud_4", "aud_3"]
    assert first["has_more"] is True
    second = await read(client, auth, limit=4, starting_after="aud_3")
    assert numbers(second) == ["aud_2", "aud_1"]
    assert second["has_more"] is False
    # A filtered page pages within the filter.
    looked = await read(client, auth, limit=1, action="card.lookup")
    assert numbers(looked) == ["aud_4"]
    assert looked["has_more"] is True
    rest = await read(client, auth, limit=1, action="card.lookup", starting_after="aud_4")
    assert numbers(rest) == ["aud_1"]
    assert rest["has_more"] is False


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"actor": ids.format_id(ids.STAFF, 7)}, ["aud_6", "aud_4", "aud_2", "aud_1"]),
        ({"actor": "staff:7"}, ["aud_6", "aud_4", "aud_2", "aud_1"]),
        ({"actor": "api_key:2"}, ["aud_5", "aud_3"]),
        ({"actor": ids.format_id(ids.STAFF, 8)}, []),
        ({"action": "card.lookup"}, ["aud_4", "aud_1"]),
        ({"action": "card."}, ["aud_6", "aud_4", "aud_2", "aud_1"]),
        ({"action": "card"}, []),
        ({"action": "adjustment."}, ["aud_5"]),
        ({"target": "card_1"}, ["aud_6", "aud_2", "aud_1"]),
        ({"target": "cus_3"}, ["aud_5"]),
        ({"target": "card_"}, []),
        ({"outcome": "code_not_found"}, ["aud_4"]),
        (
            {"outcome": "ok", "actor": ids.format_id(ids.STAFF, 7), "target": "card_1"},
            ["aud_6", "aud_2", "aud_1"],
        ),
    ],
)
async def test_each_filter_narrows_the_log(
    client: httpx.AsyncClient,
    services: Services,
    clock: FrozenClock,
    params: dict[str, str],
    expected: list[str],
) -> None:
    await seed(services, clock)
    agent = await staff_member(client, services, "admin")
    assert numbers(await read(client, agent.auth, **params)) == expected


async def test_since_and_until_take_any_zone_and_whole_days(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    clock.advance(-timedelta(days=2))
    start = clock.now()
    await seed(services, clock)
    auth = await api_key(services, "admin")
    middle = start + timedelta(days=1)
    # The second day's entries, by moments in UTC and in another zone.
    since = middle.isoformat()
    until = (middle + timedelta(hours=1)).astimezone(datetime.now().astimezone().tzinfo).isoformat()
    assert numbers(await read(client, auth, since=since, until=until)) == ["aud_4", "aud_3"]
    tokyo = (middle - timedelta(seconds=1)).astimezone(
        datetime.fromisoformat("2026-01-01T00:00:00+09:00").tzinfo
    )
    assert tokyo.isoformat().endswith("+09:00")
    assert numbers(await read(client, auth, since=tokyo.isoformat())) == [
        "aud_6",
        "aud_5",
        "aud_4",
        "aud_3",
    ]
    # A date alone: since its start, until its end (UTC).
    first_day = start.astimezone(UTC).date().isoformat()
    assert numbers(await read(client, auth, until=first_day))[-2:] == ["aud_2", "aud_1"]
    last_day = clock.now().astimezone(UTC).date().isoformat()
    assert numbers(await read(client, auth, since=last_day))[:2] == ["aud_6", "aud_5"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"actor": "ada@example.com"}, "actor"),
        ({"actor": "stf_x"}, "actor"),
        ({"actor": "customer:1"}, "actor"),
        ({"action": "card.*"}, "action"),
        ({"action": "Card.Freeze"}, "action"),
        ({"action": "card..freeze"}, "action"),
        ({"outcome": "not ok"}, "outcome"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-01"}, "since"),
        ({"until": "2026-12-01T25:00"}, "until"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "until"),
        ({"target": "x" * 201}, "target"),
        ({"target": "7kq4-m2zp-x9cd-r3tw"}, "target"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"until": "9999-12-31"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"starting_after": "card_3"}, "starting_after"),
        ({"starting_after": "aud_"}, "starting_after"),
    ],
)
async def test_a_bad_filter_is_refused_naming_it(
    client: httpx.AsyncClient, services: Services, params: dict[str, str], param: str
) -> None:
    auth = await api_key(services, "support")
    response = await client.get("/v1/support/audit-log", params=params, headers=auth)
    assert_problem(response, 422, "validation_error", param=param)
    if param in ("limit", "starting_after"):
        return
    export = await client.get("/v1/support/audit-log/export", params=params, headers=auth)
    assert_problem(export, 422, "validation_error", param=param)
    # Nothing was recorded for a refused export.
    assert (await read(client, auth))["data"] == []


async def test_only_support_and_admin_read_or_export_the_log(
    client: httpx.AsyncClient, services: Services
) -> None:
    shopper = await sign_up(client)
    merchant = await api_key(services, "merchant")
    for path in ("/v1/support/audit-log", "/v1/support/audit-log/export"):
        assert_problem(await client.get(path), 401, "unauthorized")
        assert_problem(await client.get(path, headers=shopper.auth), 403, "forbidden")
        refused = assert_problem(await client.get(path, headers=merchant), 403, "forbidden")
        assert "role support or admin" in refused["detail"]
        # A refused stranger is refused before their filters are read.
        assert_problem(await client.get(path, params={"actor": "nobody"}), 401, "unauthorized")
    for role in ("support", "admin"):
        assert (
            await client.get("/v1/support/audit-log", headers=await api_key(services, role))
        ).status_code == 200
    async with services.db.transaction(write=False) as connection:
        exports = (await connection.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    assert exports == 0


def read_csv(response: httpx.Response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


async def test_the_export_is_csv_oldest_first_and_recorded_with_its_filters(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    await seed(services, clock)
    agent = await staff_member(client, services, "support")
    response = await client.get(
        "/v1/support/audit-log/export", params={"action": "card."}, headers=agent.auth
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="giftcard-audit-log-')
    assert disposition.endswith('.csv"')
    rows = read_csv(response)
    assert [row["id"] for row in rows] == ["aud_1", "aud_2", "aud_4", "aud_6"]
    assert list(rows[0]) == list(audit.EXPORT_COLUMNS)
    assert rows[0]["prev_hash"] == audit.GENESIS_HASH
    assert rows[0]["detail"] == '{"by":"serial"}'
    # The export's own entry, after the entries it holds.
    [entry] = (await read(client, agent.auth, action="audit_log.export"))["data"]
    assert entry["id"] == "aud_7"
    assert entry["actor"] == f"staff:{ids.parse_id(ids.STAFF, agent.id)}"
    assert entry["detail"] == {"filters": {"action": "card."}, "rows": 4, "last_id": 6}
    assert entry["request_id"] == response.headers["request-id"]
    # The next export holds the first one's entry.
    again = read_csv(await client.get("/v1/support/audit-log/export", headers=agent.auth))
    assert [row["id"] for row in again][-1] == "aud_7"
    assert json.loads(again[-1]["detail"])["rows"] == 4


async def test_the_export_reads_back_exactly_and_its_chain_can_be_checked(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Commas, quotes, newlines and formula starts survive the CSV, escaped so that a
    spreadsheet shows them as text; undoing the escape gives the values their hashes
    were made over."""
    tricky = [
        ('=HYPERLINK("http://evil.example","x")', '+1, "quoted"\nsecond line'),
        ("-500 taken", "@SUM(A1:A2)"),
        ("\tindented", "'already quoted"),
        ("plain, with a comma", "line one\r\nline two"),
    ]
    for note, reason in tricky:
        await record(services, AGENT, "card.freeze", "card_9", note=note, reason=reason)
    await record(services, AGENT, "=cmd|' /C calc'!A0", "-card", detail={"amount": -1})
    auth = await api_key(services, "admin")
    rows = read_csv(await client.get("/v1/support/audit-log/export", headers=auth))
    assert len(rows) == 5
    for row in rows:
        for name, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (name, cell)
    assert rows[0]["note"] == '\'=HYPERLINK("http://evil.example","x")'
    assert rows[0]["reason"] == '\'+1, "quoted"\nsecond line'
    assert rows[2]["reason"] == "''already quoted"
    assert rows[3]["reason"] == "line one\r\nline two"
    assert rows[4]["action"] == "'=cmd|' /C calc'!A0"
    assert rows[4]["target"] == "'-card"
    previous = audit.GENESIS_HASH
    for row in rows:
        values = {name: audit.unescape_cell(cell) for name, cell in row.items()}
        assert values["prev_hash"] == previous
        recomputed = audit.entry_hash(
            id=int(values["id"].removeprefix("aud_")),
            created_at=datetime.fromisoformat(values["created_at"]),
            actor=values["actor"],
            actor_role=values["actor_role"],
            action=values["action"],
            target=values["target"] or None,
            reason=values["reason"] or None,
            note=values["note"] or None,
            outcome=values["outcome"],
            detail=values["detail"] or None,
            request_id=values["request_id"] or None,
            prev_hash=values["prev_hash"],
        )
        assert recomputed == values["hash"]
        previous = values["hash"]
    assert [audit.unescape_cell(row["note"]) for row in rows[:4]] == [n for n, _ in tricky]
    assert [audit.unescape_cell(row["reason"]) for row in rows[:4]] == [r for _, r in tricky]


async def test_a_long_export_streams_in_chunks_and_counts_what_it_wrote(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "EXPORT_CHUNK", 3)
    for index in range(8):
        await record(services, AGENT, "card.lookup", f"card_{index}")
    auth = await api_key(services, "support")
    rows = read_csv(await client.get("/v1/support/audit-log/export", headers=auth))
    assert [row["id"] for row in rows] == [f"aud_{n}" for n in range(1, 9)]
    [entry] = (await read(client, auth, action="audit_log.export"))["data"]
    assert entry["detail"]["rows"] == 8
    empty = await client.get(
        "/v1/support/audit-log/export", params={"target": "card_99"}, headers=auth
    )
    assert empty.text.splitlines() == [",".join(audit.EXPORT_COLUMNS)]


async def run_cli(database_url: str, *arguments: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "GIFTCARD_DATABASE_URL": database_url,
        "GIFTCARD_SECRET_KEY": TEST_SECRET_KEY.decode(),
    }
    process = await asyncio.create_subprocess_exec(
        str(GIFTCARD),
        *arguments,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_an_operator_exports_the_log_from_the_command_line(
    client: httpx.AsyncClient, services: Services, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed(services, clock)
    out = tmp_path / "audit.csv"
    url = services.settings.database_url
    since = (clock.now() - timedelta(days=1)).date().isoformat()
    code, output = await run_cli(url, "audit", "export", "--since", since, "--out", str(out))
    assert code == 0, output
    assert "Wrote 4 audit entries" in output
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == ["aud_3", "aud_4", "aud_5", "aud_6"]
    auth = await api_key(services, "admin")
    [entry] = (await read(client, auth, action="audit_log.export"))["data"]
    assert (entry["actor"], entry["actor_role"]) == ("cli", "operator")
    assert entry["detail"]["rows"] == 4
    # A file in the way, or a bad filter, stops it before anything is recorded.
    code, output = await run_cli(url, "audit", "export", "--out", str(out))
    assert code == 1
    assert "exists already" in output
    code, output = await run_cli(
        url, "audit", "export", "--until", "tomorrow", "--out", str(tmp_path / "other.csv")
    )
    assert code == 1
    assert "until must be a date" in output
    assert not (tmp_path / "other.csv").exists()
    assert len((await read(client, auth, action="audit_log.export"))["data"]) == 1
